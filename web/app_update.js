/*
 * app_update.js: new builds. A new build's service worker installs into a cache of its own and waits (sw.js);
 * meanwhile the open page runs its own build unchanged and shows "A new version is available" in
 * #update-notice. The switch happens when the user clicks the notice's Reload button, which waits for the
 * answer being written, if any, to end. A plain reload of the page keeps this build and offers the new one
 * again: a waiting worker asked to take over while the page starts made Chromium hold back the new page's
 * Python workers for minutes. The models live in IndexedDB, which no service worker touches: they stay
 * cached across updates.
 *
 *     const updates = new Pychat.AppUpdates({chat, models, setPhase});  // chat.js's and models.js's controllers
 *     updates.watch(registration);
 */
(function (Pychat) {
  "use strict";

  const ASK_AGAIN_MS = 2000;

  class AppUpdates {
    constructor({chat, models, setPhase}) {
      this.chat = chat;
      this.models = models;
      this.setPhase = setPhase;
      this.registration = null;
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
      while (this.chat.generating) {
        text.textContent = "A new version is available: reloading when this answer is done.";
        await this.chat.turn;
      }
      this.models.takeNoQuestions();
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
        while (this.chat.generating) await this.chat.turn;
        location.reload();
      };
      navigator.serviceWorker.addEventListener("controllerchange", reload, {once: true});
      // A worker that another tab already activated (or that was replaced meanwhile) sends no controllerchange.
      worker.addEventListener("statechange", () => { if (worker.state === "redundant") reload(); });
      ask();
    }
  }

  Object.assign(Pychat, {AppUpdates});
})(self.Pychat = self.Pychat || {});
