/*
 * app_update.js: new builds. A new build's service worker installs into a cache of its own and waits (sw.js);
 * meanwhile the open page runs its own build unchanged and shows "A new version is available" in
 * #update-notice. The switch happens on the user's reload: the Reload button in the notice (which waits for
 * the answer being written, if any, to end), or a reload of the page, which hands over before the app starts.
 * The models live in IndexedDB, which no service worker touches: they stay cached across updates.
 *
 *     const updates = new AppUpdates({state, setPhase});  // state.generating / state.turn: the chat's answer
 *     await updates.startOrHandOver();                    // a new version waited: the page reloads into it
 *     updates.watch(registration);
 */
"use strict";

const ASK_AGAIN_MS = 2000;
const HANDOVER_MS = 8000;

class AppUpdates {
  constructor({state, setPhase}) {
    this.state = state;
    this.setPhase = setPhase;
    this.registration = null;
  }

  /* At start-up, before the app does anything: a new version waiting is activated and the page reloads into
   * it, normally at once. A browser may hold the new version back (Chromium waits until the old worker has
   * no request in flight, which took minutes under test automation): after HANDOVER_MS this build starts
   * after all, the notice stays, and the page reloads into the new version once it takes over and no
   * answer is being written. Resolves when the app should start. */
  async startOrHandOver() {
    if (!("serviceWorker" in navigator) || !navigator.serviceWorker.controller) return;
    const registration = await navigator.serviceWorker.getRegistration();
    if (!registration || !registration.waiting) return;
    this.activate(registration.waiting);
    await new Promise((resolve) => setTimeout(resolve, HANDOVER_MS));
  }

  /* Offer each new version that finishes installing while the page is open. */
  watch(registration) {
    this.registration = registration;
    if (registration.waiting) this.offer();
    registration.addEventListener("updatefound", () => {
      const worker = registration.installing;
      worker.addEventListener("statechange", () => {
        // with no controller this is the first visit's worker, which takes over by itself
        if (worker.state === "installed" && navigator.serviceWorker.controller) this.offer();
      });
    });
  }

  offer() {
    const notice = document.getElementById("update-notice");
    document.getElementById("update-text").textContent = "A new version is available — reload to use it.";
    document.getElementById("update-reload").onclick = () => this.reloadWhenIdle();
    notice.hidden = false;
  }

  /* Never in the middle of an answer: wait for it to end, then take no new question and switch. */
  async reloadWhenIdle() {
    document.getElementById("update-reload").disabled = true;
    const text = document.getElementById("update-text");
    while (this.state.generating) {
      text.textContent = "A new version is available: reloading when this answer is done.";
      await this.state.turn;
    }
    this.state.ready = false;
    this.setPhase("starting", "Switching to the new version…");
    const waiting = this.registration.waiting;
    if (waiting) this.activate(waiting);
    else location.reload();  // another tab switched already
  }

  /* The waiting worker takes over (sw.js removes the old caches), then the page reloads with its files. */
  activate(worker) {
    const ask = () => worker.postMessage({type: "skipWaiting"});
    const asking = setInterval(ask, ASK_AGAIN_MS);  // again until it takes over: a message can be lost
    const reload = async () => {
      clearInterval(asking);
      while (this.state.generating) await this.state.turn;
      location.reload();
    };
    navigator.serviceWorker.addEventListener("controllerchange", reload, {once: true});
    // A worker that another tab already activated (or that was replaced meanwhile) sends no controllerchange.
    worker.addEventListener("statechange", () => { if (worker.state === "redundant") reload(); });
    ask();
  }
}

self.AppUpdates = AppUpdates;
