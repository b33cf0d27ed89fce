/*
 * model_download.js: download a model into the ModelStore, resuming with HTTP Range requests.
 *
 *     const bytes = await downloadModel(store, {id, name, url, size, sha256}, {onProgress, onNotice});
 *
 * The bytes go into the store chunk by chunk as they arrive; after a broken connection the download
 * continues from the stored bytes (Range: bytes=N-), automatically a few times, and on the next visit.
 * A download that turns out not to be a GGUF file (e.g. a web page) stops at its first bytes. When the
 * whole file is there its size and sha256 are checked and the verified bytes are returned.
 */
"use strict";

(function (global) {
  const WRITES_AHEAD = 4;         // chunks read from the network but not yet in IndexedDB, at most
  const RETRIES = 4;              // automatic resumes after a network failure, per download
  const RETRY_DELAY_MS = 800;     // doubled after each failed attempt
  const GGUF_MAGIC = "GGUF";

  function concat(parts, total) {
    const out = new Uint8Array(total);
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.byteLength;
    }
    return out;
  }

  function describeNonGGUF(head) {
    const text = new TextDecoder().decode(head).trimStart().toLowerCase();
    if (text.startsWith("<")) return "the address returned a web page (HTML), not a model file";
    return "the file does not start with the GGUF magic bytes";
  }

  /*
   * Make sure model `spec` ({id, name, url, size?, sha256?, info?, source}) is complete in the store,
   * downloading only the missing bytes; returns its verified bytes (ArrayBuffer).
   * onProgress({received, total, bytesPerSecond, resumedFrom}) reports the download. Network failures
   * are retried RETRIES times, each time resuming where the stored bytes end.
   */
  function downloadModel(store, spec, callbacks = {}) {
    // One download per model at a time, also across tabs: a second tab waits, then finds it complete.
    const run = () => downloadUnlocked(store, spec, callbacks);
    return navigator.locks ? navigator.locks.request("pychat-model:" + spec.id, run) : run();
  }

  async function downloadUnlocked(store, spec, {onProgress = () => {}, onNotice = () => {}}) {
    let record = await store.get(spec.id);
    if (record && (record.url !== spec.url || (spec.sha256 && record.sha256 !== spec.sha256))) {
      await store.remove(spec.id);  // another file under the same name: start over
      record = undefined;
    }
    if (record && record.complete) return store.readVerified(spec.id);
    if (!record) {
      record = {id: spec.id, name: spec.name, url: spec.url, size: spec.size || 0, sha256: spec.sha256 || "",
                info: spec.info || null, source: spec.source || "url", received: 0, chunks: 0,
                complete: false, added: Date.now()};
      await store.put(record);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        record = await fetchRest(store, record, onProgress, onNotice);
        break;
      } catch (error) {
        if (!(error instanceof TypeError) || attempt >= RETRIES) {
          if (error instanceof TypeError) {
            throw new ModelStoreError("network", `The download of ${spec.name} was interrupted at ` +
              `${formatBytes((await store.get(spec.id) || record).received)} (${error.message}). ` +
              "It will resume from there on the next try.");
          }
          throw error;
        }
        record = await store.get(spec.id);
        onNotice(`Download interrupted at ${formatBytes(record.received)}; resuming…`);
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS * 2 ** attempt));
      }
    }
    return store.finish(record);
  }

  /* One HTTP request for the bytes after record.received; returns the updated record. */
  async function fetchRest(store, record, onProgress, onNotice) {
    const resumeFrom = record.received;
    if (record.size) await store.checkSpace(record.size - resumeFrom);
    const headers = resumeFrom > 0 ? {Range: `bytes=${resumeFrom}-`} : {};
    const response = await fetch(record.url, {headers, cache: "no-store"});
    if (response.status === 416 && resumeFrom > 0) return record;  // the stored part is the whole file
    record = await checkResponse(store, record, response, onNotice);
    return storeBody(store, record, response.body.getReader(), onProgress);
  }

  /* The record to continue with, after checking the status, resume support and length of `response`. */
  async function checkResponse(store, record, response, onNotice) {
    if (!response.ok) {
      throw new ModelStoreError("network", `Downloading ${record.name} failed: HTTP ${response.status} ` +
                                           `${response.statusText} from ${record.url}`);
    }
    if (record.received > 0 && response.status !== 206) {
      onNotice("The server does not support resuming; downloading from the start.");
      await store.remove(record.id);
      record = {...record, received: 0, chunks: 0};
      await store.put(record);
    }
    const length = Number(response.headers.get("Content-Length")) || 0;
    const total = record.received + length;
    if (!record.size && length) {  // a URL model: its size is known from now on
      await store.checkSpace(length);
      record = {...record, size: total};
      await store.put(record);
    } else if (length && total !== record.size) {
      throw new ModelStoreError("mismatch", `The server's ${record.name} has ${formatBytes(total)}, ` +
                                            `expected ${formatBytes(record.size)}.`);
    }
    return record;
  }

  /*
   * Stream a response body into the store in chunks of ModelStore.CHUNK_BYTES. The IndexedDB writes run
   * behind the reads (at most WRITES_AHEAD chunks behind), so the network stream is drained promptly: when
   * a connection breaks, what had arrived is stored instead of being dropped with the errored stream.
   */
  async function storeBody(store, record, reader, onProgress) {
    const resumedFrom = record.received;
    const started = performance.now();
    let stored = record;
    let writes = Promise.resolve();
    let queued = 0;
    const write = (bytes) => {
      queued++;
      writes = writes.then(async () => {
        stored = await store.appendChunk(stored, stored.chunks, bytes);
        queued--;
      });
    };
    let pending = [];
    let pendingBytes = 0;
    let fetched = 0;
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {  // the connection broke: keep what arrived; downloadUnlocked() resumes after it
        if (pendingBytes > 0) write(concat(pending, pendingBytes));
        await writes;  // a storage error, if any, is the one to report
        throw error;
      }
      const {done: finished, value} = chunk;
      if (value) {
        if (resumedFrom === 0 && fetched === 0) await checkMagic(store, record, reader, value);
        pending.push(value);
        pendingBytes += value.byteLength;
        fetched += value.byteLength;
      }
      while (pendingBytes >= ModelStore.CHUNK_BYTES || (finished && pendingBytes > 0)) {
        const bytes = concat(pending, pendingBytes);
        const size = Math.min(ModelStore.CHUNK_BYTES, pendingBytes);
        write(bytes.subarray(0, size));
        pending = [bytes.subarray(size)];
        pendingBytes -= size;
      }
      if (queued >= WRITES_AHEAD) await writes;  // bounded memory when storage is slower than the network
      onProgress({received: resumedFrom + fetched, total: record.size, resumedFrom,
                  bytesPerSecond: fetched / Math.max(1e-3, (performance.now() - started) / 1000)});
      if (finished) {
        await writes;
        return stored;
      }
    }
  }

  /* Stop at once when a download turns out not to be a GGUF file (e.g. a web page). */
  async function checkMagic(store, record, reader, firstBytes) {
    if (firstBytes.byteLength < 4 || new TextDecoder().decode(firstBytes.subarray(0, 4)) === GGUF_MAGIC) return;
    await reader.cancel();
    await store.remove(record.id);
    throw new ModelStoreError("not-gguf", `${record.name} is not a GGUF model: ` +
                                          describeNonGGUF(firstBytes.subarray(0, 64)) + ".");
  }

  global.downloadModel = downloadModel;
})(self);
