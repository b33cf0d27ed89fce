/*
 * engine_http.js (ES module): engine.fetch, a fetch-compatible function that answers OpenAI's HTTP API from
 * the model in the tab, so the official openai client (or any code that speaks that API) runs against it:
 *
 *     const client = new OpenAI({apiKey: "none", baseURL: "http://pychat.local/v1", fetch: engine.fetch,
 *                                dangerouslyAllowBrowser: true});
 *
 *     POST <any base>/v1/chat/completions   JSON, or with "stream": true server-sent events
 *     POST <any base>/v1/completions        (text/event-stream: `data: {...}\n\n` per chunk, `data: [DONE]\n\n`)
 *     POST <any base>/v1/embeddings
 *     GET  <any base>/v1/models
 *
 * Only the path counts: the host and base are whatever the client was given. A refusal is OpenAI's error
 * object with its status (400 for a request the engine refuses, 404 for another path, 405 for another
 * method); an error after a stream began is one last event {"error": {...}}, which the openai client raises.
 * The request's AbortSignal stops the generation within a token and rejects as fetch does (AbortError), and
 * a reader that cancels the body stops it too.
 */
import {apiError, fromWorker} from "./engine_errors.js";

const ROUTES = {  // the path's end -> [method, the engine's request kind]
  "v1/chat/completions": ["POST", "chat.completions"],
  "v1/completions": ["POST", "completions"],
  "v1/embeddings": ["POST", "embeddings"],
  "v1/models": ["GET", "models"],
};

const encoder = new TextEncoder();
const sse = (data) => encoder.encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);

/* engine: something with request(kind, body, {signal}) (web/pychat.js's Engine): a promise of the response,
 * or for a body with stream: true of an async iterator of chunks. */
export function engineFetch(engine) {
  return async function fetch(input, init = undefined) {
    const request = new Request(input, init);
    if (request.signal.aborted) throw request.signal.reason;  // as fetch rejects
    try {
      const kind = route(request);
      const body = kind === "models" ? {} : await jsonBody(request);
      const answer = await engine.request(kind, body, {signal: request.signal});
      return answer && answer[Symbol.asyncIterator] ? eventStream(answer, request.signal) : json(200, answer);
    } catch (error) {
      if (request.signal.aborted) throw request.signal.reason;  // as fetch rejects
      const refusal = fromWorker(error);
      return json(refusal.status, refusal.toJSON());
    }
  };
}

/* The engine's request kind for the request's path and method; APIError 404 / 405 otherwise. */
function route(request) {
  const path = new URL(request.url).pathname.replace(/\/+$/, "");
  const end = Object.keys(ROUTES).find((suffix) => path === "/" + suffix || path.endsWith("/" + suffix));
  if (!end) {
    throw apiError(404, {message: `Unknown request URL: ${request.method} ${path}`, code: "unknown_url"});
  }
  const [method, kind] = ROUTES[end];
  if (request.method !== method) {
    throw apiError(405, {message: `${path} takes ${method}, not ${request.method}`, code: "method_not_allowed"});
  }
  return kind;
}

async function jsonBody(request) {
  let body;
  try {
    body = JSON.parse(await request.text());
  } catch (error) {
    throw apiError(400, {message: `the request body is not valid JSON: ${error.message}`, code: "invalid_json"});
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw apiError(400, {message: "the request body must be a JSON object", code: "invalid_json"});
  }
  return body;
}

function json(status, value) {
  return new Response(JSON.stringify(value), {status, headers: {"Content-Type": "application/json"}});
}

/* Server-sent events of `chunks`, then [DONE]; an error on the way is the last event. The request's signal
 * aborting while the body streams (the openai client's loop left early) stops the generation and errors the
 * body with the abort, as fetch's own bodies do. */
function eventStream(chunks, signal) {
  const iterator = chunks[Symbol.asyncIterator]();
  const stop = () => iterator.return && iterator.return();
  const body = new ReadableStream({
    start(controller) {
      signal.addEventListener("abort", () => { controller.error(signal.reason); stop(); }, {once: true});
    },
    async pull(controller) {
      let next;
      try {
        next = await iterator.next();
      } catch (error) {
        next = {error};
      }
      if (signal.aborted) return;  // the body has failed with the abort already
      if (next.error && next.error.name === "AbortError") {
        controller.error(next.error);
      } else if (next.error || next.done) {
        controller.enqueue(sse(next.error ? fromWorker(next.error).toJSON() : "[DONE]"));
        controller.close();
      } else {
        controller.enqueue(sse(next.value));
      }
    },
    cancel: stop,  // the reader went away: stop generating
  });
  return new Response(body, {status: 200, headers: {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}});
}
