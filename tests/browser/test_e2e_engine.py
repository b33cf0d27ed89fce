"""The browser engine (web/pychat.js) in Chromium, as a third-party page uses it: the official openai npm client
(node_modules/openai, served to the page) through engine.fetch, streamed and not, answers with the greedy
answer of transformers and llama.cpp (GOLDEN_ANSWER) and with the native engine's completion and embeddings;
an AbortSignal stops a stream within a few tokens; a JSON schema's output validates with `jsonschema`; a tool
call comes back as tool_calls; refusals are the client's BadRequestError; the example page of examples/embed
answers; and a page of the site creates an engine offline, from the service worker's files and the cached model.
"""
from __future__ import annotations

import io
import json

import jsonschema
import numpy as np
import pytest

from e2e_helpers import REPO, SiteServer, chat_workers, new_context, serve, wait_ready
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MOUNTS = {"/node_modules/openai/": REPO / "node_modules" / "openai", "/examples/": REPO / "examples"}
HOST_PAGE = "/host.html"  # an empty page of the site's origin, as a third party's page would be
GREEDY = {"temperature": 0, "max_tokens": 16}
QUESTION = [{"role": "user", "content": GOLDEN_QUESTION}]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}


class ThirdPartyHandler(serve.SiteHandler):
    """The built site, plus what a third party's page brings: the openai package, the examples, an empty page.
    Those pages carry no policy of the site's (the example's script is inline)."""

    def translate_path(self, path):
        for prefix, folder in MOUNTS.items():
            if path.startswith(prefix):
                return str(folder / path[len(prefix):].split("?")[0])
        return super().translate_path(path)

    def send_head(self):
        if self.path == HOST_PAGE:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            for name, value in self.isolation_headers():
                self.send_header(name, value)
            self.end_headers()
            self.span_length = 0
            return io.BytesIO(b"")
        return super().send_head()

    def content_security_policy(self, name):
        return None if self.path.startswith("/examples/") else super().content_security_policy(name)

    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture(scope="module")
def third_party(site):
    server = SiteServer(site, ThirdPartyHandler)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(browser, third_party):
    """An empty page of the origin with an engine of the default model and an openai client over it."""
    with new_context(browser) as context:
        page = context.new_page()
        page.goto(third_party.url.rstrip("/") + HOST_PAGE)
        page.evaluate("""async () => {
            const {createEngine} = await import("/pychat.js");
            const {default: OpenAI} = await import("/node_modules/openai/index.mjs");
            self.engine = await createEngine();
            self.client = new OpenAI({apiKey: "none", baseURL: "http://pychat.local/v1", fetch: engine.fetch,
                                      dangerouslyAllowBrowser: true});
        }""")
        yield page


@pytest.fixture(scope="module")
def native(smollm2_path):
    from pychat_wasm import LLM

    return LLM(smollm2_path)


def client_call(page, method, params):
    """client.<method>(params) in the page, e.g. "chat.completions.create"; a refusal as {error: {...}}."""
    return page.evaluate("""async ([method, params]) => {
        const path = method.split("."), name = path.pop();
        const target = path.reduce((object, key) => object[key], client);
        try {
            return await target[name](params);
        } catch (error) {
            return {error: {name: error.constructor.name, status: error.status, param: error.param,
                            message: error.message}};
        }
    }""", [method, params])


def test_the_openai_client_gets_the_greedy_answer(page):
    reply = client_call(page, "chat.completions.create", dict(GREEDY, model="any", messages=QUESTION))
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == GOLDEN_ANSWER
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_the_openai_client_streams_the_greedy_answer(page):
    deltas = page.evaluate("""async (params) => {
        const deltas = [];
        for await (const chunk of await client.chat.completions.create(params)) {
            deltas.push(chunk.choices[0].delta.content ?? "");
        }
        return deltas;
    }""", dict(GREEDY, model="any", messages=QUESTION, stream=True))
    assert "".join(deltas) == GOLDEN_ANSWER and len(deltas) > 3


def test_completions_and_embeddings_are_the_native_engines(page, native):
    params = {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    reply = client_call(page, "completions.create", dict(params, model="any"))
    expected = native.create_completion(**params)["choices"][0]["text"]
    assert reply["choices"][0]["text"] == expected
    texts = ["Paris is in France.", "A cat sat on the mat."]
    embedded = client_call(page, "embeddings.create", {"model": "any", "input": texts})  # base64, decoded by it
    vectors = np.array([item["embedding"] for item in embedded["data"]])
    expected = np.array([item["embedding"] for item in native.create_embedding(texts)["data"]])
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


REWRITE = ("Rewrite this paragraph with British spelling and nothing else changed:\n\nThe old lighthouse stood at "
           "the edge of the cliff for more than a century. Every night its keeper climbed the narrow spiral stairs "
           "to light the lamp, and every morning he wrote the weather in a leather book.")


def test_a_copy_heavy_answer_is_the_same_with_speculation_and_reports_its_drafts(page, smollm2_path):
    """Speculation is on in the page's engine, with the model split across its workers: the greedy answer to a
    request that copies its prompt is the native engine's answer without speculation, and its timings say how
    many drafted tokens were checked and kept (llama.cpp's draft_n, draft_n_accepted)."""
    params = {"messages": [{"role": "user", "content": REWRITE}], "temperature": 0, "max_tokens": 48}
    reply = client_call(page, "chat.completions.create", dict(params, model="any"))
    policy = chat_workers(page)[0].evaluate(
        "py.runPython('from pychat_wasm.browser import chat_worker; chat_worker._worker.session.model.policy')")
    from pychat_wasm import LLM

    without = LLM(smollm2_path, policy=policy, speculative=False)
    expected = without.create_chat_completion(**params)["choices"][0]["message"]["content"]
    assert len(chat_workers(page)) >= 2  # the pool's default: a worker per core, all of them on each token
    assert reply["choices"][0]["message"]["content"] == expected
    assert 0 < reply["timings"]["draft_n_accepted"] <= reply["timings"]["draft_n"]


def test_models_list(page):
    assert [m["id"] for m in client_call(page, "models.list", None)["data"]] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]


def generated_tokens(page):
    return chat_workers(page)[0].evaluate(
        "py.runPython('from pychat_wasm.browser import chat_worker; chat_worker._worker.llm.generated_tokens')")


def test_an_abort_signal_stops_a_stream_within_a_few_tokens(page):
    before = generated_tokens(page)
    outcome = page.evaluate("""async () => {
        const controller = new AbortController();
        const stream = await engine.chat.completions.create(
            {messages: [{role: "user", content: "Tell me a long story about a dragon."}], temperature: 0,
             max_tokens: 300, stream: true}, {signal: controller.signal});
        let chunks = 0;
        try {
            for await (const chunk of stream) {
                if (++chunks === 4) controller.abort();
            }
        } catch (error) {
            return {chunks, error: error.name};
        }
        return {chunks, error: null};
    }""")
    assert outcome["error"] == "AbortError"
    # Every token generated came to the page as a chunk before the abort's error, and far fewer than 300 did.
    assert generated_tokens(page) - before <= outcome["chunks"] + 2 and outcome["chunks"] < 100
    again = client_call(page, "chat.completions.create", dict(GREEDY, model="any", messages=QUESTION))
    assert again["choices"][0]["message"]["content"] == GOLDEN_ANSWER  # the engine takes the next request


def test_a_json_schema_answer_validates(page):
    reply = client_call(page, "chat.completions.create", {
        "model": "any", "temperature": 0, "max_tokens": 64,
        "messages": [{"role": "user", "content": "Describe a person as JSON with a name and an age."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                                   "strict": True}}})
    jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), PERSON)


def test_a_tool_call_comes_back_as_tool_calls(page):
    reply = client_call(page, "chat.completions.create", {
        "model": "any", "temperature": 0, "max_tokens": 64, "tools": [WEATHER], "tool_choice": "required",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]})
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])


@pytest.mark.parametrize("params, param", [
    ({"messages": QUESTION, "top_p": 2}, "top_p"),
    ({"messages": QUESTION, "temprature": 0}, "temprature"),
    ({"messages": []}, "messages"),
])
def test_refusals_are_the_clients_bad_request_errors(page, params, param):
    error = client_call(page, "chat.completions.create", dict(params, model="any"))["error"]
    assert (error["name"], error["status"], error["param"]) == ("BadRequestError", 400, param)


def test_a_file_that_is_no_model_is_an_engine_load_error(page):
    error = page.evaluate("""async () => {
        const {createEngine, EngineLoadError} = await import("/pychat.js");
        const page = new File(["<!doctype html><title>Not a model</title>"], "model.gguf");
        try {
            await createEngine({model: page, workers: 1});
        } catch (error) {
            return {loadError: error instanceof EngineLoadError, kind: error.kind, message: error.message};
        }
        return null;
    }""")
    assert error["loadError"] and error["kind"] == "NotGGUFError", error
    assert "web page" in error["message"] or "HTML" in error["message"], error


def test_the_example_page_answers(browser, third_party, page):
    page.evaluate("engine.terminate()")  # one engine at a time on two cores
    with new_context(browser) as context:
        example = context.new_page()
        example.goto(third_party.url + "examples/embed/index.html")
        example.wait_for_selector("#ask button:not([disabled])")
        example.click("#ask button")
        example.wait_for_selector("#answer[data-done=true]")
        assert example.text_content("#answer") == GOLDEN_ANSWER


def test_a_page_of_the_site_creates_an_engine_offline(browser, third_party):
    """After the app's first visit (service worker installed, default model in IndexedDB), offline."""
    with new_context(browser) as context:
        app = context.new_page()
        app.goto(third_party.url)
        wait_ready(app)
        app.wait_for_selector("#offline-status[data-ready=true]")
        context.set_offline(True)
        try:
            app.reload()
            wait_ready(app)
            answer = app.evaluate("""async (params) => {
                const {createEngine} = await import("./pychat.js");
                const engine = await createEngine({workers: 1});
                const reply = await engine.chat.completions.create(params);
                engine.terminate();
                return reply.choices[0].message.content;
            }""", dict(GREEDY, messages=QUESTION))
        finally:
            context.set_offline(False)
    assert answer == GOLDEN_ANSWER
