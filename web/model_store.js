/*
 * model_store.js: models cached in IndexedDB, chunk by chunk, and verified before use.
 *
 *     const store = await Pychat.ModelStore.open();
 *     const bytes = await store.readVerified(id);  // verified ArrayBuffer, or it throws (and deletes the entry);
 *                                                // readVerified(id, timeline): its read and check timed
 *     await store.importFile(file, {id, info, source});  // a local .gguf into the cache
 *     await store.list(); await store.remove(id);
 *     // downloads, with resume: model_download.js
 *     const store = await Pychat.ModelStore.openOrKeepInMemory();  // IndexedDB, or (private browsing, storage
 *                                                                   // disabled) a store that lasts this visit only
 *
 * Layout: store "models" holds one record per model {id, name, url, size, sha256, received, chunks,
 * complete, info, source, added}, and one per LoRA adapter, which has besides `adapter: {base, applied, scale}`
 * (adapters.js); store "chunks" holds the bytes as Blobs of up to CHUNK_BYTES keyed
 * [id, index]. A chunk and the record's `received` and `chunks` counts are written in one transaction, so
 * after any interruption the record says exactly how many bytes are stored, and a download
 * (model_download.js) resumes there. A model is used only when it is complete and its size and sha256
 * match; a damaged one is deleted, a partial one is kept for the download to resume.
 *
 * Classic script (no modules): the page loads it with <script>, so it also works in a classic worker.
 */
(function (Pychat) {
  "use strict";

  const {formatBytes, idbResult, idbDone, sha256Hex} = Pychat;  // util.js
  const DB_NAME = "pychat-models";
  const DB_VERSION = 1;
  const CHUNK_BYTES = 8 * 1024 * 1024;

  class ModelStoreError extends Error {
    constructor(kind, message) {
      super(message);
      this.name = "ModelStoreError";
      this.kind = kind;  // "quota" | "corrupt" | "mismatch" | "network" | "missing"
    }
  }

  function isQuotaError(error) {
    return error && (error.name === "QuotaExceededError" || /quota/i.test(String(error.message)));
  }

  /* A message that says how much space is missing, from navigator.storage.estimate(). */
  async function quotaError(bytesNeeded) {
    let free = "unknown";
    try {
      const {quota, usage} = await navigator.storage.estimate();
      free = formatBytes(Math.max(0, quota - usage));
    } catch (e) { /* estimate() unavailable: say what we know */ }
    return new ModelStoreError("quota",
      `Not enough storage for the model: it needs ${formatBytes(bytesNeeded)} more, ` +
      `the browser allows ${free} for this site. Remove cached models or free disk space, then try again.`);
  }

  class ModelStore {
    constructor(db) {
      this.db = db;
      this.persistent = true;  // the models outlive the visit
    }

    /* The IndexedDB store, or when IndexedDB cannot be opened a MemoryModelStore whose `unavailable` says why. */
    static async openOrKeepInMemory() {
      try {
        return await ModelStore.open();
      } catch (error) {
        return Object.assign(new MemoryModelStore(), {unavailable: String(error && error.message || error)});
      }
    }

    static open() {
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        db.createObjectStore("models", {keyPath: "id"});
        db.createObjectStore("chunks");
      };
      return idbResult(request).then((db) => new ModelStore(db));
    }

    async list() {
      const tx = this.db.transaction("models", "readonly");
      return idbResult(tx.objectStore("models").getAll());
    }

    async get(id) {
      const tx = this.db.transaction("models", "readonly");
      return idbResult(tx.objectStore("models").get(id));
    }

    async put(record) {
      const tx = this.db.transaction("models", "readwrite");
      tx.objectStore("models").put(record);
      await idbDone(tx);
    }

    async remove(id) {
      const tx = this.db.transaction(["models", "chunks"], "readwrite");
      tx.objectStore("models").delete(id);
      tx.objectStore("chunks").delete(IDBKeyRange.bound([id, 0], [id, Infinity]));
      await idbDone(tx);
    }

    /* Store bytes [record.received, +bytes.length) as chunk `index` and advance the record, atomically. */
    async appendChunk(record, index, bytes) {
      const tx = this.db.transaction(["models", "chunks"], "readwrite");
      tx.objectStore("chunks").put(new Blob([bytes]), [record.id, index]);
      const next = {...record, received: record.received + bytes.byteLength, chunks: index + 1};
      tx.objectStore("models").put(next);
      try {
        await idbDone(tx);
      } catch (error) {
        if (isQuotaError(error)) throw await quotaError(record.size ? record.size - record.received : bytes.byteLength);
        throw error;
      }
      return next;
    }

    async checkSpace(bytesNeeded) {
      if (!navigator.storage || !navigator.storage.estimate) return;
      const {quota, usage} = await navigator.storage.estimate();
      if (quota - usage < bytesNeeded) throw await quotaError(bytesNeeded);
    }

    /* Mark a fully received model complete after checking its size and sha256; returns its bytes. */
    async finish(record) {
      const bytes = await this.readAll(record);
      await this.verify(record, bytes, `The received ${record.name} is not the expected file`);
      await this.put({...record, complete: true, size: bytes.byteLength, sha256: record.sha256 || await sha256Hex(bytes)});
      return bytes;
    }

    async readAll(record) {
      const tx = this.db.transaction("chunks", "readonly");
      const blobs = await idbResult(tx.objectStore("chunks").getAll(
        IDBKeyRange.bound([record.id, 0], [record.id, Infinity])));
      return new Blob(blobs).arrayBuffer();
    }

    /* Throw (after deleting the entry) unless `bytes` has the record's size and sha256; `what` opens the message. */
    async verify(record, bytes, what = `The cached copy of ${record.name} was damaged`) {
      let problem = "";
      if (record.size && bytes.byteLength !== record.size) {
        problem = `it has ${formatBytes(bytes.byteLength)} instead of ${formatBytes(record.size)}`;
      } else if (record.sha256 && await sha256Hex(bytes) !== record.sha256) {
        problem = "its sha256 checksum does not match";
      }
      if (problem) {
        await this.remove(record.id);
        throw new ModelStoreError("corrupt", `${what} (${problem}); it was deleted.`);
      }
    }

    /* The bytes of a complete, verified model (ArrayBuffer). A partial or damaged entry is never returned. */
    async readVerified(id, timeline = null) {
      const record = await this.get(id);
      if (!record || !record.complete) {
        throw new ModelStoreError("missing", `${id} is not in the model cache.`);
      }
      const started = performance.timeOrigin + performance.now();
      const bytes = await this.readAll(record);
      const read = performance.timeOrigin + performance.now();
      await this.verify(record, bytes);
      if (timeline) {  // startup_timeline.js: Python boots meanwhile
        timeline.alongside("IndexedDB read", started, read);
        timeline.alongside("sha256 check", read);
      }
      return bytes;
    }

    /* Copy a local File (or a File made of bytes, e.g. a model trained here) into the cache, chunk by chunk;
     * `adapter` (a LoRA adapter's record, see adapters.js) marks a file that is no model. */
    async importFile(file, {id, info = null, source = "file", adapter = undefined}) {
      await this.remove(id);
      await this.checkSpace(file.size);
      let record = {id, name: file.name, url: "", size: file.size, sha256: "", info, source,
                    received: 0, chunks: 0, complete: false, added: Date.now(), ...(adapter ? {adapter} : {})};
      await this.put(record);
      for (let start = 0; start < file.size; start += CHUNK_BYTES) {
        const part = new Uint8Array(await file.slice(start, start + CHUNK_BYTES).arrayBuffer());
        record = await this.appendChunk(record, record.chunks, part);
      }
      return this.finish(record);
    }
  }

  /* The same store in memory: the models last as long as the page (chunks are Blobs, as in IndexedDB). */
  class MemoryModelStore extends ModelStore {
    constructor() {
      super(null);
      this.persistent = false;
      this.records = new Map();  // id -> record
      this.chunks = new Map();   // id -> [Blob, ...]
    }

    async list() {
      return Array.from(this.records.values());
    }

    async get(id) {
      return this.records.get(id);
    }

    async put(record) {
      this.records.set(record.id, {...record});
    }

    async remove(id) {
      this.records.delete(id);
      this.chunks.delete(id);
    }

    async appendChunk(record, index, bytes) {
      const chunks = this.chunks.get(record.id) || [];
      chunks[index] = new Blob([bytes]);
      this.chunks.set(record.id, chunks);
      const next = {...record, received: record.received + bytes.byteLength, chunks: index + 1};
      await this.put(next);
      return next;
    }

    async readAll(record) {
      return new Blob((this.chunks.get(record.id) || []).slice(0, record.chunks)).arrayBuffer();
    }

    async checkSpace() {}  // memory runs out as an allocation failure, not a quota
  }

  ModelStore.CHUNK_BYTES = CHUNK_BYTES;
  Object.assign(Pychat, {ModelStore, ModelStoreError});
})(self.Pychat = self.Pychat || {});
