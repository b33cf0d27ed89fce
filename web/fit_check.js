/*
 * fit_check.js: before a model is downloaded (or a dropped file read whole), its GGUF header alone says
 * whether it fits: the weights under each storage policy and the KV cache at the chosen context, against the
 * worker's heap (Python computes these: pychat_wasm/model/fit_check.py through worker_api.check_fit), and the file
 * against the browser's storage estimate (store.checkSpace, which throws the "Not enough storage" error). Classic script, one namespace:
 *
 *     const verdict = await Pychat.FitCheck.run({python, store, name, url | file | bytes, stored, contextLength});
 *                            // stored: bytes of a resumed download already in the store
 *     verdict.fits           false: refuse (verdict.text says "does not fit: needs X, has Y")
 *     verdict.shorterContext the context to load with when only one shorter than asked fits, else null
 *     verdict.text           "fits", "fits with a shorter context (N tokens)" or "does not fit: ..."
 *     verdict.freshHeap      true: it needs more than half the heap, so load it into a Python holding nothing
 *     verdict.checked        false: the header could not be read (no answer, or too long): nothing was checked
 *     verdict.adapter        set when the file is a LoRA adapter, not a model: what its header says
 *                            (lora.adapter_header: architecture, alpha, base_name, base_sha256); models.js
 *                            applies it to the model in use (adapters.js)
 *     Pychat.FitCheck.downloadStart(python, name)   // a download's checkStart: Python reads its first bytes
 *
 * The header of a URL comes from Range requests for its first bytes (256 KiB, then 8x more while the header
 * goes on, or at once as much as the header read so far says it needs: a 50 MB metadata array is one more
 * read, not four); a server that sends the whole file instead is read only that far. After MAX_READS reads
 * the check gives up (not checked). Only Python tells a GGUF file from anything else: bytes that are none (a
 * web page, say) are refused here with its message. When the first bytes cannot be fetched at all the check
 * is skipped, and the download hands its first bytes to Python instead (models.js).
 */
(function (Pychat) {
  "use strict";

  const {WorkerError} = Pychat;  // worker_error.js

  const FIRST_BYTES = 256 * 1024;
  const GROWTH = 8;
  const MAX_READS = 6;

  /* {bytes: ArrayBuffer of at most `length` first bytes, size: the whole file's}, or null (no answer). */
  async function firstBytes({url, file, bytes}, length) {
    if (bytes) return {bytes: bytes.slice(0, length), size: bytes.byteLength};  // a cached model's
    if (file) return {bytes: await file.slice(0, length).arrayBuffer(), size: file.size};
    let response;
    try {
      response = await fetch(url, {headers: {Range: `bytes=0-${length - 1}`}, cache: "no-store"});
    } catch (error) {
      return null;
    }
    const total = response.status === 206 ? /\/(\d+)$/.exec(response.headers.get("Content-Range") || "")
      : response.status === 200 ? [null, response.headers.get("Content-Length")] : null;
    if (!total || !total[1]) {
      if (response.body) response.body.cancel();
      return null;
    }
    const reader = response.body.getReader();
    const first = new Uint8Array(Math.min(length, Number(total[1])));
    for (let filled = 0; filled < first.length;) {
      const {done, value} = await reader.read();
      if (done) break;
      const part = value.subarray(0, first.length - filled);
      first.set(part, filled);
      filled += part.length;
    }
    reader.cancel();  // a server that ignored the Range: the rest is not wanted
    return {bytes: first.buffer, size: Number(total[1])};
  }

  async function run({python, store, name, url = "", file = null, bytes = null, stored = 0, contextLength = null}) {
    for (let length = FIRST_BYTES, reads = 0; ; reads++) {
      if (reads === MAX_READS) {
        return {fits: true, shorterContext: null, text: "not checked (the header is too long)", checked: false};
      }
      const header = await firstBytes({url, file, bytes}, length);
      if (!header) {
        return {fits: true, shorterContext: null, text: "not checked (the server did not answer)", checked: false};
      }
      let reply;
      try {
        reply = await python.request("checkFit", {header: header.bytes, fileSize: header.size,
                                                  options: {name, context_length: contextLength, from_address: Boolean(url)}},
                                     {transfer: [header.bytes]});
      } catch (error) {
        if (WorkerError.is(error, "HeaderTruncatedError") && length < header.size) {
          length = Math.max(length * GROWTH, error.neededBytes + FIRST_BYTES);
          continue;
        }
        throw error;  // not a GGUF file (what it is instead), an unsupported one, a context out of range: said
                      // before any download
      }
      if (!bytes) await store.checkSpace(header.size - stored);  // ModelStoreError "quota": says what is missing
      if (reply.adapter) return {fits: true, adapter: reply.adapter, text: "a LoRA adapter", checked: true};
      return verdict(reply.fit);
    }
  }

  function verdict(report) {
    const best = report.best && report.policies[report.best];
    if (!best) {
      const smallest = Object.values(report.policies).pop();  // quantized: the least memory
      return {fits: false, shorterContext: null, text: smallest.message, checked: true};
    }
    const shorterContext = best.verdict === "fits" ? null : best.context_length;
    // Near the heap's size the model needs one that holds nothing else: a heap never shrinks, and what an
    // earlier model left behind splits it (two 1.9 GB KV arrays failed beside SmolLM2's freed 1 GB).
    const freshHeap = best.total_bytes > report.memory_limit / 2;
    return {fits: true, shorterContext, text: best.message, freshHeap, checked: true};
  }

  /* A download's checkStart (model_download.js): Python's verdict on its first bytes (`size`: the whole file's,
   * 0 when unknown). A GGUF header that goes on past them is fine; anything Python refuses (not a GGUF file,
   * ...) stops the download. Used when the header could not be read before the download. */
  function downloadStart(python, name) {
    return async (head, size) => {
      const header = head.slice().buffer;
      try {
        await python.request("checkFit", {header, fileSize: size || Number.MAX_SAFE_INTEGER,
                                          options: {name, from_address: true}}, {transfer: [header]});
      } catch (error) {
        if (!WorkerError.is(error, "HeaderTruncatedError")) throw error;
      }
    };
  }

  Object.assign(Pychat, {FitCheck: {run, downloadStart, FIRST_BYTES}});
})(self.Pychat = self.Pychat || {});
