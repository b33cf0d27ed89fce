/*
 * web/engine_http.js's engine.fetch, read by the official openai npm client (node_modules/openai, the
 * reference for OpenAI's HTTP shapes): JSON answers, server-sent events ending with [DONE], OpenAI's error
 * object as the client's typed errors, 404 / 405 for other paths and methods, an AbortSignal and a stream left
 * early reaching the engine. The engine here is a stand-in that records its requests; the real one is
 * tested in Chromium (tests/browser/test_e2e_engine.py).
 */
import assert from "node:assert/strict";
import {test} from "node:test";

import OpenAI from "../../../node_modules/openai/index.mjs";
import {engineFetch} from "../../../web/engine_http.js";
import {apiError} from "../../../web/engine_errors.js";

const COMPLETION = {id: "chatcmpl-1", object: "chat.completion", created: 1, model: "m.gguf",
                    choices: [{index: 0, message: {role: "assistant", content: "Paris."}, logprobs: null,
                               finish_reason: "stop"}],
                    usage: {prompt_tokens: 5, completion_tokens: 2, total_tokens: 7}};
const chunk = (delta, finish = null) => ({id: "chatcmpl-2", object: "chat.completion.chunk", created: 1,
                                          model: "m.gguf", choices: [{index: 0, delta, logprobs: null,
                                                                      finish_reason: finish}]});
const CHUNKS = [chunk({role: "assistant", content: ""}), chunk({content: "Par"}), chunk({content: "is."}),
                chunk({}, "stop")];

/* An engine answering with canned responses (or `fail`), recording each request and whether it was stopped. */
function fakeEngine({fail = null, chunks = CHUNKS, waitForAbort = false} = {}) {
  const engine = {requests: [], stopped: 0};
  engine.request = async (kind, body, {signal}) => {
    engine.requests.push({kind, body});
    if (fail) throw fail;
    if (kind === "models") return {object: "list", data: [{id: "m.gguf", object: "model", created: 0, owned_by: "x"}]};
    if (kind === "embeddings") {
      return {object: "list", model: "m.gguf", data: [{object: "embedding", index: 0, embedding: [0.5, -1]}],
              usage: {prompt_tokens: 1, total_tokens: 1}};
    }
    if (!body.stream) return COMPLETION;
    return (async function* () {
      try {
        for (const item of chunks) {
          yield item;
          if (waitForAbort) await new Promise((resolve) => signal.addEventListener("abort", resolve));
        }
      } finally {
        engine.stopped += 1;
      }
    })();
  };
  return engine;
}

const client = (engine, options = {}) => new OpenAI({apiKey: "none", baseURL: "http://pychat.local/v1",
                                                     fetch: engineFetch(engine), maxRetries: 0, ...options});
const MESSAGES = [{role: "user", content: "Capital of France?"}];

test("a chat completion is OpenAI's JSON, and the request body reaches the engine as sent", async () => {
  const engine = fakeEngine();
  const reply = await client(engine).chat.completions.create({model: "m", messages: MESSAGES, temperature: 0});
  assert.equal(reply.choices[0].message.content, "Paris.");
  assert.deepEqual(engine.requests, [{kind: "chat.completions", body: {model: "m", messages: MESSAGES, temperature: 0}}]);
});

test("a stream is server-sent events the client reads chunk by chunk", async () => {
  const stream = await client(fakeEngine()).chat.completions.create({model: "m", messages: MESSAGES, stream: true});
  const deltas = [];
  for await (const part of stream) deltas.push(part.choices[0].delta.content ?? "");
  assert.equal(deltas.join(""), "Paris.");

  const response = await engineFetch(fakeEngine())("http://x/v1/chat/completions",
                                                   {method: "POST", body: JSON.stringify({messages: MESSAGES, stream: true})});
  assert.equal(response.headers.get("Content-Type"), "text/event-stream");
  const text = await response.text();
  assert.equal(text, CHUNKS.map((c) => `data: ${JSON.stringify(c)}\n\n`).join("") + "data: [DONE]\n\n");
});

test("models, completions and embeddings on their paths, under any base", async () => {
  const engine = fakeEngine();
  const openai = client(engine, {baseURL: "https://example.test/some/base/v1"});
  assert.deepEqual((await openai.models.list()).data.map((m) => m.id), ["m.gguf"]);
  const embedding = await openai.embeddings.create({model: "m", input: "x", encoding_format: "float"});
  assert.deepEqual(embedding.data[0].embedding, [0.5, -1]);
  await openai.completions.create({model: "m", prompt: "Once", max_tokens: 3});
  assert.deepEqual(engine.requests.map((r) => r.kind), ["models", "embeddings", "completions"]);
});

test("a refusal is OpenAI's error object with its status: the client's BadRequestError", async () => {
  const refusal = apiError(400, {message: "top_p: top-p must be ...", param: "top_p"});
  const error = await client(fakeEngine({fail: refusal})).chat.completions.create({model: "m", messages: MESSAGES, top_p: 2})
    .then(() => null, (e) => e);
  assert.ok(error instanceof OpenAI.BadRequestError);
  assert.equal(error.status, 400);
  assert.equal(error.param, "top_p");
  assert.equal(error.type, "invalid_request_error");
});

test("a worker's failure (WorkerError with Python's status and error object) keeps them", async () => {
  const workerError = Object.assign(new Error("messages: ..."), {type: "InvalidRequestError", status: 400,
    openai: {message: "messages: ...", type: "invalid_request_error", param: "messages", code: null}});
  const response = await engineFetch(fakeEngine({fail: workerError}))("http://x/v1/chat/completions",
                                                                      {method: "POST", body: "{}"});
  assert.equal(response.status, 400);
  assert.deepEqual(await response.json(), {error: workerError.openai});
});

test("other paths are 404, other methods 405, a body that is no JSON object 400; the engine never sees them", async () => {
  const engine = fakeEngine();
  const fetch = engineFetch(engine);
  const cases = [
    ["http://x/v1/images/generations", {method: "POST", body: "{}"}, 404],
    ["http://x/v1/models", {method: "POST", body: "{}"}, 405],
    ["http://x/v1/chat/completions", {method: "GET"}, 405],
    ["http://x/v1/chat/completions", {method: "POST", body: "{not json"}, 400],
    ["http://x/v1/chat/completions", {method: "POST", body: "[1, 2]"}, 400],
  ];
  for (const [url, init, status] of cases) {
    const response = await fetch(url, init);
    assert.equal(response.status, status, `${init.method} ${url}`);
    const {error} = await response.json();
    assert.equal(typeof error.message, "string");
    assert.ok("type" in error && "param" in error && "code" in error);
  }
  assert.deepEqual(engine.requests, []);
  const error = await client(engine).post("/nothing", {body: {}}).then(() => null, (e) => e);
  assert.ok(error instanceof OpenAI.NotFoundError);
});

test("an AbortSignal stops the engine's generation; the client ends the stream there", async () => {
  const engine = fakeEngine({waitForAbort: true});
  const controller = new AbortController();
  const stream = await client(engine).chat.completions.create({model: "m", messages: MESSAGES, stream: true},
                                                              {signal: controller.signal});
  const seen = [];
  const error = await (async () => {
    for await (const part of stream) {
      seen.push(part);
      controller.abort();
    }
  })().then(() => null, (e) => e);
  assert.equal(error, null);  // openai-node ends an aborted stream's loop quietly
  assert.equal(seen.length, 1);
  while (!engine.stopped) await new Promise((resolve) => setImmediate(resolve));

  const before = new AbortController();  // aborted before the answer: fetch rejects with the abort
  before.abort();
  const refused = await engineFetch(fakeEngine())("http://x/v1/models", {signal: before.signal}).then(() => null, (e) => e);
  assert.equal(refused.name, "AbortError");
});

test("a stream left early stops the engine's generation", async () => {
  const engine = fakeEngine();
  const stream = await client(engine).chat.completions.create({model: "m", messages: MESSAGES, stream: true});
  for await (const part of stream) {
    assert.ok(part);
    break;
  }
  while (!engine.stopped) await new Promise((resolve) => setImmediate(resolve));  // the client aborts after its loop
  assert.equal(engine.stopped, 1);
});
