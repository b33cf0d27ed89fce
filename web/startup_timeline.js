/*
 * startup_timeline.js: where the seconds of a start go, from the page's navigation (or a restart of Python)
 * to "Ready", shown under the status line (#startup-details) and read by bench/bench_browser.py.
 *
 *     const timeline = new Pychat.StartupTimeline();      // from the navigation; {origin: now} for a restart
 *     timeline.mark("page scripts");                      // a phase on the way to ready ends now
 *     timeline.marks([["Pyodide", t], ...]);              // phases a worker timed (t: StartupTimeline.now())
 *     timeline.alongside("model read", start, end);       // work that ran beside the path, not on it
 *     timeline.finish(); timeline.report();
 *     // {total: 3.1, phases: [{name: "page scripts", seconds: 0.21}, ...],   (they add up to total)
 *     //  alongside: [{name: "model read", seconds: 0.4}, ...]}
 *
 * A phase is named by the mark that ends it and runs from the mark before, so the phases on the path add up to
 * the total whoever timed them: every mark is on one clock (ms since 1970, performance.timeOrigin +
 * performance.now(), the same in the page and its workers). Marks are kept in time order, so work done
 * beside the path (the model read from IndexedDB while Python boots) must go to alongside(), never mark().
 * After finish() nothing more is recorded: a model switched later is no start. Classic script: worker.js
 * imports it too, for the clock (StartupTimeline.now()).
 */
(function (Pychat) {
  "use strict";

  const now = () => performance.timeOrigin + performance.now();
  const seconds = (ms) => Math.round(ms) / 1000;

  class StartupTimeline {
    constructor({origin = performance.timeOrigin} = {}) {
      this.origin = origin;
      this.path = [];        // [name, at]
      this.beside = [];      // [name, start, end]
      this.finished = false;
    }

    mark(name, at = now()) {
      if (!this.finished) this.path.push([name, at]);
    }

    marks(list = []) {
      for (const [name, at] of list) this.mark(name, at);
    }

    alongside(name, start, end = now()) {
      if (!this.finished) this.beside.push([name, start, end]);
    }

    /* The last phase (`name`) ends now, and with it the start. */
    finish(name = "ready") {
      this.mark(name);
      this.finished = true;
    }

    report() {
      const path = [...this.path].sort((a, b) => a[1] - b[1]);
      let last = this.origin;
      const phases = path.map(([name, at]) => {
        const phase = {name, seconds: seconds(at - last)};
        last = at;
        return phase;
      });
      return {total: seconds(last - this.origin), finished: this.finished, phases,
              alongside: this.beside.map(([name, start, end]) => ({name, seconds: seconds(end - start)}))};
    }

    /* The report under the status line: "Started in 3.1 s" and each phase. */
    render(details = document.getElementById("startup-details")) {
      if (!details) return;
      const {total, phases, alongside} = this.report();
      details.hidden = false;
      details.querySelector("summary").textContent = `Started in ${total.toFixed(1)} s`;
      const rows = phases.map(({name, seconds}) => `${name} ${seconds.toFixed(2)} s`);
      const beside = alongside.map(({name, seconds}) => `${name} ${seconds.toFixed(2)} s`);
      details.querySelector(".phases").textContent = rows.join(" · ") +
        (beside.length ? ` (alongside: ${beside.join(" · ")})` : "");
    }
  }

  StartupTimeline.now = now;
  Object.assign(Pychat, {StartupTimeline});
})(self.Pychat = self.Pychat || {});
