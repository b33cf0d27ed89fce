/*
 * model_download.js: download a model into the ModelStore, resuming with HTTP Range requests.
 *
 *     const bytes = await Pychat.downloadModel(store, {id, name, url, size, sha256}, {onProgress, onNotice, checkStart});
 *
 * The bytes go into the store chunk by chunk as they arrive. Every request asks for the bytes after the
 * stored ones (Range: bytes=N-, from N = 0 on), so the answer's Content-Range says how big the whole file
 * is whatever its Content-Length claims. A broken or stalled connection, a body shorter than announced and
 * a 5xx answer are resumed automatically from the stored bytes (again on the next visit); a resumed request
 * carries If-Range with the file's ETag (or Last-Modified), so a file that changed on the server comes back
 * whole and the download restarts cleanly instead of splicing two versions. checkStart(firstBytes, size), if
 * given, sees the first bytes of a download from byte 0 (size: the whole file's, 0 when unknown) and may
 * throw: the download then stops there and is deleted (models.js asks Python whether they are a GGUF model).
 * When the whole file is there its size and sha256 are checked and the verified bytes are returned. Without a
 * sha256 in the spec, the one its host states is checked (host_checksum.js: a Hugging Face file's LFS pointer,
 * read first, else X-Linked-Etag on an answer); the record says which check was made (`sha256From`).
 */
(function (Pychat) {
  "use strict";

  const {HostChecksum, ModelStore, ModelStoreError, formatBytes} = Pychat;  // host_checksum, model_store, util
  const WRITES_AHEAD = 4;          // chunks read from the network but not yet in IndexedDB, at most
  const DEFAULTS = {
    retries: 4,                    // automatic resumes in a row that bring no new bytes
    retry_delay_ms: 800,           // doubled after each such attempt
    stall_seconds: 20,             // no byte for this long: the connection counts as broken
  };

  /* A failure worth resuming after: a dropped or stalled connection, a short body, a 5xx answer; `quiet`
   * when the page was told already (a restart). */
  class Interrupted extends Error {
    constructor(message, {quiet = false} = {}) {
      super(message);
      this.quiet = quiet;
    }
  }

  const isRetryStatus = (status) => status >= 500 || status === 408 || status === 429;
  const isInterruption = (error) => error instanceof Interrupted || error instanceof TypeError ||
                                    (error && error.name === "AbortError");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function concat(parts, total) {
    const out = new Uint8Array(total);
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.byteLength;
    }
    return out;
  }

  /* "bytes 100-199/1000" -> {start: 100, total: 1000}; null when absent (or hidden by CORS). */
  function parseContentRange(header) {
    const match = /^bytes (\d+)-\d+\/(\d+)$/.exec(header || "");
    return match ? {start: Number(match[1]), total: Number(match[2])} : null;
  }

  /* The validator If-Range may carry: a strong ETag (a weak one never matches), else Last-Modified. */
  function validatorOf(response) {
    const etag = response.headers.get("ETag") || "";
    return {etag: etag.startsWith("W/") ? "" : etag, lastModified: response.headers.get("Last-Modified") || ""};
  }

  /* An AbortSignal that fires when alive() has not been called for `seconds`. */
  function stallWatchdog(seconds) {
    const controller = new AbortController();
    let timer = 0;
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new Interrupted(`no data for ${seconds} s`)), seconds * 1000);
    };
    alive();
    return {signal: controller.signal, alive, pause: () => clearTimeout(timer)};
  }

  /*
   * Make sure model `spec` ({id, name, url, size?, sha256?, info?, source}) is complete in the store,
   * downloading only the missing bytes; returns its verified bytes (ArrayBuffer).
   * onProgress({received, total, bytesPerSecond, resumedFrom}) reports the download; onNotice(text) says
   * what happened when it had to resume or restart; checkStart: see above. `options` overrides DEFAULTS
   * (manifest.json "download").
   */
  function downloadModel(store, spec, {onProgress = () => {}, onNotice = () => {}, checkStart = null, options = {}} = {}) {
    // One download per model at a time, also across tabs: a second tab waits, then finds it complete.
    const run = () => downloadUnlocked(store, spec, {onProgress, onNotice, checkStart, ...DEFAULTS, ...options});
    return navigator.locks ? navigator.locks.request("pychat-model:" + spec.id, run) : run();
  }

  async function downloadUnlocked(store, spec, settings) {
    let record = await store.get(spec.id);
    if (record && (record.url !== spec.url || (spec.sha256 && record.sha256 !== spec.sha256))) {
      await store.remove(spec.id);  // another file under the same name: start over
      record = undefined;
    }
    if (record && record.complete) return store.readVerified(spec.id);
    if (!record) {
      const host = spec.sha256 ? null : await HostChecksum.fromPointer(spec.url);
      record = {id: spec.id, name: spec.name, url: spec.url, size: spec.size || (host ? host.size : 0),
                sha256: spec.sha256 || (host ? host.sha256 : ""),
                sha256From: spec.sha256 ? "stated" : host ? host.from : "", info: spec.info || null,
                source: spec.source || "url", received: 0, chunks: 0, etag: "", lastModified: "", complete: false,
                added: Date.now()};
      await store.put(record);
    }
    let fruitless = 0;  // attempts in a row that stored nothing new
    while (!record.size || record.received < record.size) {
      const before = record.received;
      try {
        record = await fetchRest(store, record, settings);
        if (!record.size) break;  // no length announced: the body's end is the file's end
      } catch (error) {
        if (!isInterruption(error)) throw error;
        record = await store.get(spec.id);
        fruitless = record.received > before ? 0 : fruitless + 1;
        if (fruitless > settings.retries) {
          throw new ModelStoreError("network", `The download of ${spec.name} stopped at ` +
            `${formatBytes(record.received)} (${error.message}). It will resume from there on the next try.`);
        }
        if (!error.quiet) {
          settings.onNotice(`Download interrupted at ${formatBytes(record.received)} (${error.message}); resuming…`);
        }
        await sleep(settings.retry_delay_ms * 2 ** Math.max(0, fruitless - 1));
      }
    }
    try {
      return await store.finish(record);
    } catch (error) {
      if (error.kind !== "corrupt" || !record.sha256From || record.sha256From === "stated") throw error;
      throw new ModelStoreError("corrupt", `The received ${spec.name} is not the file its host states: its sha256 ` +
                                           `is not ${record.sha256} (the host's ${record.sha256From}); it was deleted.`);
    }
  }

  /* One HTTP request for the bytes after record.received; returns the updated record. */
  async function fetchRest(store, record, settings) {
    const resumeFrom = record.received;
    if (record.size) await store.checkSpace(record.size - resumeFrom);
    const headers = {Range: `bytes=${resumeFrom}-`};
    if (resumeFrom > 0 && (record.etag || record.lastModified)) headers["If-Range"] = record.etag || record.lastModified;
    const watchdog = stallWatchdog(settings.stall_seconds);
    try {
      const response = await fetch(record.url, {headers, cache: "no-store", signal: watchdog.signal});
      if (response.status === 416) return await rangeNotSatisfiable(store, record, response, settings.onNotice);
      record = await checkResponse(store, record, response, settings.onNotice);
      return await storeBody(store, record, response.body.getReader(), settings, watchdog);
    } finally {
      watchdog.pause();
    }
  }

  /* The stored part thrown away: the download starts again at byte 0. */
  async function restart(store, record, notice, onNotice) {
    onNotice(notice);
    await store.remove(record.id);
    const fromHost = Boolean(record.sha256From) && record.sha256From !== "stated";  // said of the old file: forgotten
    const fresh = {...record, received: 0, chunks: 0, size: record.sha256 && !fromHost ? record.size : 0,
                   ...(fromHost ? {sha256: "", sha256From: ""} : {})};
    await store.put(fresh);
    return fresh;
  }

  /* 416 to `Range: bytes=N-`: complete if the file has exactly the N stored bytes, else it shrank on the server. */
  async function rangeNotSatisfiable(store, record, response, onNotice) {
    const total = /\/(\d+)$/.exec(response.headers.get("Content-Range") || "");
    if (record.received > 0 && total && Number(total[1]) === record.received) return {...record, size: record.received};
    await restart(store, record, `${record.name} changed on the server; downloading it again from the start.`, onNotice);
    throw new Interrupted("HTTP 416 Range Not Satisfiable", {quiet: true});
  }

  /* The record to continue with, after checking the status, range, validator and length of `response`. */
  async function checkResponse(store, record, response, onNotice) {
    const status = `HTTP ${response.status} ${response.statusText}`.trim();
    if (isRetryStatus(response.status)) throw new Interrupted(`${status} from the server`);
    if (!response.ok) throw new ModelStoreError("network", `Downloading ${record.name} failed: ${status} from ${record.url}`);
    const range = response.status === 206 ? parseContentRange(response.headers.get("Content-Range")) : null;
    const validator = validatorOf(response);
    const changed = (record.etag && validator.etag && validator.etag !== record.etag) ||
                    (!record.etag && record.lastModified && validator.lastModified !== record.lastModified);
    if (record.received > 0 && changed) {
      record = await restart(store, record, `${record.name} changed on the server since the download began; ` +
                                            "downloading it again from the start.", onNotice);
      if (response.status === 206) throw new Interrupted("the file changed", {quiet: true});  // ask from byte 0
    } else if (record.received > 0 && response.status !== 206) {
      record = await restart(store, record, "The server does not support resuming; downloading from the start.", onNotice);
    } else if (range && range.start !== record.received) {
      throw new Interrupted(`the server sent bytes from ${range.start} instead of ${record.received}`);
    }
    const stated = HostChecksum.fromHeaders(response);
    if (!record.sha256 && stated) {
      record = {...record, sha256: stated.sha256, sha256From: stated.from, size: record.size || stated.size};
    }
    const length = Number(response.headers.get("Content-Length")) || 0;
    const total = range ? range.total : length ? record.received + length : 0;
    if (record.size && total && total !== record.size) {
      throw new ModelStoreError("mismatch", `The server's ${record.name} has ${formatBytes(total)}, ` +
                                            `expected ${formatBytes(record.size)}.`);
    }
    if (!record.size && total) await store.checkSpace(total - record.received);  // a URL model: now its size is known
    record = {...record, size: record.size || total, ...validator};
    await store.put(record);
    return record;
  }

  /*
   * Stream a response body into the store in chunks of ModelStore.CHUNK_BYTES. The IndexedDB writes run
   * behind the reads (at most WRITES_AHEAD chunks behind), so the network stream is drained promptly: when
   * a connection breaks, what had arrived is stored instead of being dropped with the errored stream.
   */
  async function storeBody(store, record, reader, {onProgress, checkStart}, watchdog) {
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
      writes.catch(() => reader.cancel().catch(() => {}));  // storage failed (e.g. quota): stop reading too
    };
    let pending = [];
    let pendingBytes = 0;
    let fetched = 0;
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
        watchdog.alive();
      } catch (error) {  // the connection broke: keep what arrived; downloadUnlocked() resumes after it
        if (pendingBytes > 0) write(concat(pending, pendingBytes));
        await writes;  // a storage error, if any, is the one to report
        throw error;
      }
      const {done: finished, value} = chunk;
      if (value) {
        if (resumedFrom === 0 && fetched === 0 && checkStart) await checkFirstBytes(store, record, reader, value, checkStart);
        pending.push(value);
        pendingBytes += value.byteLength;
        fetched += value.byteLength;
        if (record.size && resumedFrom + fetched > record.size) {
          await reader.cancel();
          await store.remove(record.id);
          throw new ModelStoreError("mismatch", `The server sent more than the ${formatBytes(record.size)} ` +
                                                `of ${record.name}; the download was deleted.`);
        }
      }
      while (pendingBytes >= ModelStore.CHUNK_BYTES || (finished && pendingBytes > 0)) {
        const bytes = concat(pending, pendingBytes);
        const size = Math.min(ModelStore.CHUNK_BYTES, pendingBytes);
        write(bytes.subarray(0, size));
        pending = [bytes.subarray(size)];
        pendingBytes -= size;
      }
      if (queued >= WRITES_AHEAD) {  // bounded memory when storage is slower than the network
        watchdog.pause();
        await writes;
        watchdog.alive();
      }
      onProgress({received: resumedFrom + fetched, total: record.size, resumedFrom,
                  bytesPerSecond: fetched / Math.max(1e-3, (performance.now() - started) / 1000)});
      if (finished) {
        await writes;
        if (stored.size && stored.received < stored.size) {
          throw new Interrupted(`the server sent ${formatBytes(fetched)} where ` +
                                `${formatBytes(stored.size - resumedFrom)} were due`);
        }
        return stored;
      }
    }
  }

  /* Stop at once, deleting what is stored, when checkStart refuses the first bytes (e.g. a web page). */
  async function checkFirstBytes(store, record, reader, firstBytes, checkStart) {
    try {
      await checkStart(firstBytes, record.size);
    } catch (error) {
      await reader.cancel();
      await store.remove(record.id);
      throw error;
    }
  }

  Object.assign(Pychat, {downloadModel});
})(self.Pychat = self.Pychat || {});
