/*
 * util.js: small helpers every part of the page uses: byte counts for people, and values kept in localStorage.
 *
 *     Pychat.formatBytes(98362432)                 // "98.4 MB"
 *     Pychat.save("pychat.workers", "auto");       // not saved where localStorage is unavailable or full
 *     Pychat.loadSaved("pychat.workers", "auto");  // the saved value, or the fallback
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

  Object.assign(Pychat, {formatBytes, loadSaved, save});
})(self.Pychat = self.Pychat || {});
