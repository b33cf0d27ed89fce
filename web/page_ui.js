/*
 * page_ui.js: the page's small DOM pieces that hold no application state: alerts, the download progress
 * bar, the storage and offline badges, and the panels folded on a phone.
 * Every text that comes from outside (file names, model metadata, error messages) goes in via textContent.
 */
(function (Pychat) {
  "use strict";

  const {formatBytes} = Pychat;  // util.js
  const $ = (id) => document.getElementById(id);

  /* A new element with its text (as textContent, never HTML) and class: element("div", text, "notice"). */
  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  /* An alert in #alerts (kind: "error" | "notice") with an optional action button {label, run}. */
  function alertBox(kind, text, action) {
    const box = element("div", undefined, "alert " + kind);
    box.dataset.kind = kind;
    box.appendChild(element("span", text));
    if (action) {
      const button = element("button", action.label);
      button.onclick = () => { box.remove(); action.run(); };
      box.appendChild(button);
    }
    const close = element("button", "×");
    close.title = "Dismiss";
    close.onclick = () => box.remove();
    box.appendChild(close);
    $("alerts").appendChild(box);
    return box;
  }

  /* "41.9 MB of 98.4 MB · 42% · 55.5 MB/s · resumed at 25.2 MB" */
  function showProgress({received, total, bytesPerSecond, resumedFrom}) {
    $("progress-box").hidden = false;
    const percent = total ? Math.floor(100 * received / total) : 0;
    $("progress").value = percent;
    $("progress-text").textContent = `${formatBytes(received)} of ${total ? formatBytes(total) : "?"} · ` +
      `${percent}% · ${formatBytes(bytesPerSecond)}/s` + (resumedFrom ? ` · resumed at ${formatBytes(resumedFrom)}` : "");
  }

  function hideProgress() {
    $("progress-box").hidden = true;
  }

  /* Ask for persistent storage (so the browser does not evict the model) and show the answer. */
  async function requestPersistentStorage() {
    const badge = $("storage-status");
    if (!navigator.storage || !navigator.storage.persist) {
      badge.textContent = "Storage: this browser cannot keep models persistently";
      return;
    }
    const granted = await navigator.storage.persisted() || await navigator.storage.persist();
    badge.dataset.persistent = String(granted);
    badge.textContent = granted ? "Storage: persistent (cached models stay)"
                                : "Storage: best-effort (the browser may evict cached models when space runs low)";
  }

  /* IndexedDB could not be opened (private browsing, storage disabled): models last for this visit only. */
  function showStorageUnavailable(reason) {
    const badge = $("storage-status");
    badge.dataset.persistent = "false";
    badge.textContent = "Storage: unavailable, so nothing is saved: the model is kept for this visit only " +
                        `and downloaded again next time (${reason})`;
  }

  /* Register sw.js and show when the app works offline; resolves to the registration (null without one). */
  function registerServiceWorker() {
    const badge = $("offline-status");
    if (!("serviceWorker" in navigator)) {
      badge.textContent = "Offline: not supported by this browser";
      return Promise.resolve(null);
    }
    const registered = navigator.serviceWorker.register("sw.js");
    registered
      .then(() => navigator.serviceWorker.ready)
      .then(() => { badge.dataset.ready = "true"; badge.textContent = "Offline: ready (app and Python are cached)"; })
      .catch((error) => { badge.textContent = `Offline: unavailable (${error.message})`; });
    return registered.catch(() => null);
  }

  /* On a narrow screen (a phone, as styles.css's "Narrow screens" section sees it) the chat fills the screen and
   * the panels below it start folded: every <details> of the side panel and of the conversation list is closed.
   * Call once at start-up; returns whether it folded them. Wide screens keep the page's own open/closed state. */
  const NARROW_SCREEN = "(max-width: 800px)";

  function foldPanelsOnNarrowScreens() {
    if (!self.matchMedia || !self.matchMedia(NARROW_SCREEN).matches) return false;
    for (const details of document.querySelectorAll("main > aside details, #conversations details")) details.open = false;
    return true;
  }

  Object.assign(Pychat, {PageUI: {element, alertBox, showProgress, hideProgress,
                                  requestPersistentStorage, showStorageUnavailable, registerServiceWorker,
                                  foldPanelsOnNarrowScreens}});
})(self.Pychat = self.Pychat || {});
