/*
 * api_requests.js: OpenAI's requests over a worker pool, one at a time, in order: the one path by which the
 * page's chat (chat.js) and the engine for other pages (pychat.js createEngine) talk to the Python workers.
 * Each request is worker.js's {type: "request", kind, body}, answered by pychat_wasm/api/endpoints.py.
 *
 *     const requests = new Pychat.ApiRequests(() => pool);      // the pool in use now (the page restarts it)
 *     const chunks = await requests.request("chat.completions", {messages, stream: true}, {signal});
 *     for await (const chunk of chunks) ...                      // OpenAI's chat.completion.chunk objects
 *     const whole = await requests.request("models", {});
 *
 * A streamed request's promise resolves once the request is accepted (a refusal rejects it) to an async
 * iterable of chunks; leaving the loop early stops the generation. The signal (an AbortSignal) stops it within
 * a token: the chunks streamed until then still come, the stream's last chunk says finish_reason "cancelled"
 * (and with include_usage the usage chunk follows), then the loop throws the signal's reason. Failures are
 * the pool's (web/worker_error.js's WorkerError) unless `failure` turns them into something else (pychat.js:
 * engine_errors.js's APIError); `check()` runs before each request and may throw (the engine stopped).
 */
(function (Pychat) {
  "use strict";

  const STREAMED = ["chat.completions", "completions"];

  /* What `signal`'s abort rejects with: its reason, as fetch does. */
  function abortReason(signal) {
    return signal.reason ?? new DOMException("The request was aborted", "AbortError");
  }

  class ApiRequests {
    constructor(pool, {failure = (error) => error, check = () => {}} = {}) {
      this.pool = pool;  // () => the WorkerPool to send to
      this.failure = failure;
      this.check = check;
      this.queue = Promise.resolve();
    }

    /* One request (kind: endpoints.py's), after those before it: the response, or for a streamed one a
     * ChunkStream once the request is accepted. */
    request(kind, body, {signal = null} = {}) {
      const chunks = STREAMED.includes(kind) && body.stream === true ? new ChunkStream(() => this.pool().stop()) : null;
      const run = this.queue.then(() => this.run(kind, body, signal, chunks));
      this.queue = run.catch(() => {});
      return chunks ? chunks.accepted(run) : run;
    }

    async run(kind, body, signal, chunks) {
      if (signal && signal.aborted) throw abortReason(signal);
      this.check();
      const pool = this.pool();
      let response = null;
      if (chunks) chunks.running = true;
      const stop = () => pool.stop();
      if (signal) signal.addEventListener("abort", stop);
      try {
        const onEvent = chunks ? (chunk) => chunks.push(chunk) : (whole) => { response = whole; };
        await pool.request("request", {kind, body}, {onEvent});
      } catch (error) {
        throw this.failure(error);
      } finally {
        if (signal) signal.removeEventListener("abort", stop);
      }
      if (signal && signal.aborted) throw abortReason(signal);
      return response;
    }
  }

  /* The chunks of a streamed request as they come: an async iterator; return() (a loop left early) stops it. */
  class ChunkStream {
    constructor(stop) {
      this.stop = stop;
      this.running = false;  // its request has started (one queued behind another has not)
      this.items = [];
      this.wake = null;
      this.outcome = null;  // {error} or {} once the request has ended
    }

    push(chunk) {
      this.items.push(chunk);
      if (this.onFirst) this.onFirst();
      this.notify();
    }

    notify() {
      if (this.wake) this.wake();
      this.wake = null;
    }

    /* Resolves to this stream at the first chunk (or the end), rejects when the request fails before it. */
    accepted(run) {
      return new Promise((resolve, reject) => {
        this.onFirst = () => resolve(this);
        run.then(() => { this.outcome = {}; resolve(this); this.notify(); },
                 (error) => { this.outcome = {error}; if (!this.items.length) reject(error); this.notify(); });
      });
    }

    async next() {
      while (!this.items.length && !this.outcome) await new Promise((resolve) => { this.wake = resolve; });
      if (this.items.length) return {value: this.items.shift(), done: false};
      if (this.outcome.error) throw this.outcome.error;
      return {value: undefined, done: true};
    }

    async return() {
      if (this.running && !this.outcome) this.stop();
      this.items = [];
      return {value: undefined, done: true};
    }

    [Symbol.asyncIterator]() {
      return this;
    }
  }

  Object.assign(Pychat, {ApiRequests});
})(self.Pychat = self.Pychat || {});
