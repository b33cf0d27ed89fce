/*
 * pychat.js (ES module): the engine as a library for any page, with OpenAI's request and response shapes, the
 * same as the Python API's (pychat_wasm.LLM) and the HTTP server's.
 *
 *     import {createEngine} from "./pychat.js";
 *     const engine = await createEngine({onProgress: (p) => console.log(p.phase, p.text)});
 *     const reply = await engine.chat.completions.create({messages: [{role: "user", content: "Hi!"}]});
 *     for await (const chunk of await engine.chat.completions.create({messages, stream: true})) ...
 *     await engine.completions.create({prompt: "Once upon", max_tokens: 16});
 *     await engine.embeddings.create({input: ["a", "b"]});  await engine.models.list();
 *     const openai = new OpenAI({apiKey: "none", baseURL: "http://pychat.local/v1", fetch: engine.fetch,
 *                                dangerouslyAllowBrowser: true});               // engine_http.js
 *
 * createEngine(options): model: a URL (same origin, as the site's policy wants), a File or Blob, or omitted for
 * the site's default model (manifest.json); a downloaded model is kept in IndexedDB as the page keeps it
 * (model_store.js, model_download.js), so later loads, and offline ones, read it from there. workers: how many
 * Web Workers split each token (tensor parallel, worker_pool.js; "auto": one per core when the page is
 * cross-origin isolated, else 1). contextLength: the context to load the model with. onProgress({phase, text,
 * received, total}): phase "starting", "verifying", "downloading", "loading", "ready".
 *
 * Every request takes `signal` (an AbortSignal) in its params or in a second argument, as the openai client
 * does; it stops the generation within a token and rejects with the signal's reason. Requests run one at a
 * time, in order. A streamed request's promise resolves once the request is accepted (a refusal rejects it)
 * to an async iterable of chunks; leaving the loop early stops the generation. Errors: engine_errors.js.
 *
 * This module must be served with the site (dist/site/), on the page's origin: its workers (worker.js) are
 * same-origin only. It runs the site's classic scripts (worker_pool.js and friends) by importing them beside
 * it, which puts their namespace on self.Pychat; its requests go through api_requests.js, as the page's chat's do.
 */
import {engineFetch} from "./engine_http.js";
import {EngineLoadError, apiError, fromWorker} from "./engine_errors.js";

export * from "./engine_errors.js";

const SITE = new URL(".", import.meta.url);
const ENGINE_SCRIPTS = ["util.js", "worker_error.js", "model_store.js", "host_checksum.js", "model_download.js",
                        "fit_check.js", "worker_client.js", "tensor_parallel.js", "worker_pool.js",
                        "api_requests.js"];  // in index.html's order
let classicScripts = null;

/* The site's classic scripts, run once, in order: their namespace. */
function engineScripts() {
  classicScripts = classicScripts || (async () => {
    for (const name of ENGINE_SCRIPTS) await import(new URL(name, SITE).href);
    return self.Pychat;
  })();
  return classicScripts;
}

export async function createEngine({model = null, workers = "auto", contextLength = null, onProgress = () => {}} = {}) {
  const Pychat = await engineScripts();
  const response = await fetch(new URL("manifest.json", SITE));
  if (!response.ok) throw new EngineLoadError(`manifest.json: HTTP ${response.status}`, "network");
  const manifest = await response.json();
  let engine = null;
  const pool = new Pychat.WorkerPool({
    size: Pychat.WorkerPool.defaultSize(workers), script: new URL("worker.js", SITE).href,
    onStatus: (text) => onProgress({phase: "starting", text: `Python: ${text}`}),
    onCrash: (reason) => engine && engine.crashed(reason),
  });
  const booted = pool.request("boot", manifest.boot);  // Python starts while the model comes
  booted.catch(() => {});
  try {
    const {name, bytes} = await modelBytes(Pychat, manifest, model, {pool, booted, onProgress});
    await booted;
    onProgress({phase: "loading", text: `Loading ${name} into Python…`});
    const options = contextLength ? {context_length: contextLength} : {};
    const reply = await pool.request("load", {name, bytes, options}, {transfer: [bytes]});
    engine = new Engine(pool, name, reply.info, Pychat.ApiRequests);
    onProgress({phase: "ready", text: `Ready: ${name} · ${pool.workers} worker${pool.workers > 1 ? "s" : ""}`});
    return engine;
  } catch (error) {
    pool.terminate();
    throw error instanceof EngineLoadError ? error : new EngineLoadError(error.message, error.type || error.kind);
  }
}

/* The model's name and bytes: a File / Blob as it is, a URL (or the default model) from the cache or
 * downloaded into it; Python checks a download's first bytes (a web page instead of a model stops it). */
async function modelBytes(Pychat, manifest, model, {pool, booted, onProgress}) {
  if (model instanceof Blob) return {name: model.name || "model.gguf", bytes: await model.arrayBuffer()};
  const spec = model == null ? defaultSpec(manifest) : urlSpec(String(model));
  const store = await Pychat.ModelStore.openOrKeepInMemory();
  const record = await store.get(spec.id);
  if (record && record.complete && (!spec.sha256 || record.sha256 === spec.sha256)) {
    onProgress({phase: "verifying", text: `Checking ${spec.name}…`});
    return {name: spec.name, bytes: await store.readVerified(spec.id)};
  }
  const pythonCheck = Pychat.FitCheck.downloadStart(pool, spec.name);
  const checkStart = async (head, size) => {
    await booted;  // the download may start before Python has
    return pythonCheck(head, size);
  };
  onProgress({phase: "downloading", text: `Downloading ${spec.name}…`, received: 0, total: spec.size || 0});
  const bytes = await Pychat.downloadModel(store, spec, {
    options: manifest.download, checkStart,
    onProgress: ({received, total}) => onProgress({phase: "downloading", text: `Downloading ${spec.name}…`,
                                                   received, total})});
  return {name: spec.name, bytes};
}

/* The site's default model, under the page's own cache id (web/models.js defaultSpec): one copy for both. */
function defaultSpec(manifest) {
  const m = manifest.model;
  return {id: "default/" + m.name, name: m.name, url: new URL(m.url, SITE).href, size: m.size, sha256: m.sha256,
          source: "default", info: m.info};
}

function urlSpec(url) {
  const address = new URL(url, location.href);
  const last = address.pathname.split("/").pop() || "model.gguf";
  return {id: "url/" + address.href, name: decodeURIComponent(last), url: address.href, source: "url"};
}

/* A loaded model behind OpenAI's methods (see the top of this file). */
class Engine {
  constructor(pool, model, info, ApiRequests) {
    this.pool = pool;
    this.model = model;          // the model's file name: the responses' "model"
    this.info = info;            // what Python reports of it (architecture, context_length, ...)
    this.broken = null;          // why the workers stopped, once they did
    this.requests = new ApiRequests(() => pool, {failure: fromWorker, check: () => this.checkRunning()});
    this.chat = {completions: {create: (params, options) => this.create("chat.completions", params, options)}};
    this.completions = {create: (params, options) => this.create("completions", params, options)};
    this.embeddings = {create: (params, options) => this.create("embeddings", params, options)};
    this.models = {list: (options = {}) => this.request("models", {}, options)};
    this.fetch = engineFetch(this);
  }

  create(kind, params, options = {}) {
    if (params === null || typeof params !== "object" || Array.isArray(params)) {
      return Promise.reject(apiError(400, {message: "the request must be an object of OpenAI's parameters"}));
    }
    const {signal = options.signal, ...body} = params;
    return this.request(kind, body, {signal});
  }

  /* One request (kind: pychat_wasm/api/endpoints.py's), after those before it: the response, or for a streamed
   * one an async iterable of chunks once the request is accepted (api_requests.js). */
  request(kind, body, {signal = null} = {}) {
    return this.requests.request(kind, body, {signal});
  }

  checkRunning() {
    if (this.broken) throw apiError(500, {message: `the engine stopped (${this.broken}): create a new one`,
                                          type: "server_error"});
  }

  crashed(reason) {
    this.broken = reason;
  }

  /* End the workers (their memory goes with them). */
  terminate() {
    this.crashed("terminated");
    this.pool.terminate();
  }
}
