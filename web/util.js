/*
 * util.js: small helpers every part of the page (and the chat workers) uses: byte counts for people, values kept
 * in localStorage, IndexedDB requests and transactions as promises, a sha256 in hex.
 *
 *     Pychat.formatBytes(98362432)                 // "98.4 MB"
 *     Pychat.save("pychat.workers", "auto");       // not saved where localStorage is unavailable or full
 *     Pychat.loadSaved("pychat.workers", "auto");  // the saved value, or the fallback
 *     await Pychat.idbResult(store.get(key));      // an IDBRequest's result (rejects with its error)
 *     await Pychat.idbDone(tx);                    // an IDBTransaction committed (rejects when it fails or aborts)
 *     await Pychat.sha256Hex(bytes);               // "b179c952..." of an ArrayBuffer or typed array
 */
(function (Pychat) {
  "use strict";

  function formatBytes(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(2) + " GB";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + " MB";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + " kB";
    return n + " B";
  }

  function loadSaved(key, fallback) {
    try {
      return JSON.parse(localStorage.getItem(key)) || fallback;
    } catch (e) {
      return fallback;
    }
  }

  /* Keep `value` in localStorage; where it is unavailable or full the app goes on without saving. */
  function save(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch (e) { /* not saved: the page still holds it */ }
  }

  function idbResult(request) {
    return new Promise((resolve, reject) => {
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  function idbDone(tx) {
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new DOMException("transaction aborted", "AbortError"));
    });
  }

  async function sha256Hex(bytes) {
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  Object.assign(Pychat, {formatBytes, loadSaved, save, idbResult, idbDone, sha256Hex});
})(self.Pychat = self.Pychat || {});
