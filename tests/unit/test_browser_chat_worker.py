"""The worker's Python API as the page's chat uses it, natively: the same JSON the browser worker gets (a turn is a
streamed chat.completions request, as web/chat.js sends it), on the real SmolLM2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pychat_wasm.browser import chat_worker as worker_api
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.fit_check import fit_check

GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
GOLDEN_ANSWER = "The capital of France is Paris."  # transformers and llama.cpp, greedy
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "max_tokens": 16}


def call(function, *args):
    return json.loads(function(*args))


def request_body(messages, settings=GREEDY, system_prompt="", stop=()):
    """A turn of the page's chat as web/chat.js's requestBody sends it: a streamed chat.completions request."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return json.dumps(dict(settings, messages=system + messages, stop=list(stop) or None, stream=True,
                           stream_options={"include_usage": True, "continuous_usage_stats": True},
                           truncation="auto"))


def run_turn(messages, settings=GREEDY, cancel_after=None, **options):
    """Drive one answer of the conversation `messages` as worker.js does: (its chunks, the text)."""
    reply = call(worker_api.begin_request, "chat.completions", request_body(messages, settings, **options))
    assert reply["ok"], reply
    chunks = []
    while True:
        stop = cancel_after is not None and len(pieces(chunks)) == cancel_after
        reply = call(worker_api.next_chunk, stop)
        assert reply["ok"], reply
        if reply.get("done"):
            break
        chunks.append(reply["item"])
    return chunks, "".join(pieces(chunks))


def pieces(chunks):
    return [c["choices"][0]["delta"]["content"] for c in chunks
            if c["choices"] and c["choices"][0]["delta"].get("content")]


def timings(chunks):
    """llama.cpp's timings of the answer, from the usage chunk that ends the stream."""
    assert not chunks[-1]["choices"]
    return chunks[-1]["timings"]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def load_reply(smollm2_path):
    reply = call(worker_api.load_model, np.fromfile(str(smollm2_path), np.uint8), smollm2_path.name)
    assert reply["ok"], reply
    return reply


@pytest.fixture(scope="module")
def loaded(load_reply):
    return load_reply["info"]


def test_load_times_its_steps_for_the_start_up_timeline(load_reply):
    names = [name for name, _ in load_reply["phases"]]
    assert names == ["GGUF parse", "checks", "tokenizer and template", "weights", "session"]
    assert all(isinstance(seconds, float) and seconds >= 0 for _, seconds in load_reply["phases"])


def test_load_reports_what_the_page_shows(loaded, smollm2_path):
    assert loaded["architecture"] == "llama"
    assert loaded["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert loaded["file_bytes"] == 98362432
    # the policy the fit check chooses at the loaded context, against the same heap figure
    assert loaded["policy"] == fit_check(GGUFFile.open(str(smollm2_path)), loaded["context_length"])["best"]


def test_greedy_turn_streams_the_reference_answer(loaded):
    chunks, text = run_turn([user(GOLDEN_QUESTION)])
    assert text == GOLDEN_ANSWER and len(pieces(chunks)) == 7
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert timings(chunks)["prompt_n"] == 42 and timings(chunks)["predicted_n"] == 8  # the end token included
    assert chunks[-1]["usage"] == {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    reading = [c for c in chunks if "prompt_progress" in c]  # the prompt's 32-token chunks but its last
    assert [c["prompt_progress"] for c in reading] == [{"processed": 32, "total": 42}] and not reading[0]["choices"]
    budgets = [c["context_budget"] for c in chunks if c not in reading]  # every chunk's: the page's meter, live
    assert [b["answer"] for b in budgets] == [0] + list(range(1, 8)) + [8, 8]  # role, per piece, finish, usage
    assert budgets[-1]["used"] == 42 + 8 and budgets[-1]["history"] + budgets[-1]["system"] == 42
    assert budgets[-1]["dropped"] == 0 and budgets[-1]["will_drop_next"] is False


def test_a_conversation_sent_whole_reuses_the_cache(loaded):
    history = [user(GOLDEN_QUESTION), assistant(GOLDEN_ANSWER)]
    budget = call(worker_api.context_budget, json.dumps({"messages": history, "max_tokens": 512}))["budget"]
    assert budget["used"] == 42 + 8 + 1 and budget["answer"] == 0  # golden prompt, answer + end token, newline
    assert budget["reserve"] == 512  # room for an answer: the page's max_tokens, less than a quarter of 4096
    budget = call(worker_api.context_budget, json.dumps({"messages": history, "max_tokens": 16}))["budget"]
    assert budget["reserve"] == 16 and budget["used"] == 42 + 8 + 1  # the page's max_tokens sizes the room
    assert call(worker_api.context_budget, json.dumps({"messages": []}))["budget"]["used"] == 0  # a new chat
    run_turn([user(GOLDEN_QUESTION)])
    chunks, text = run_turn(history + [user("And of Germany? Answer in one sentence.")])
    assert "Berlin" in text
    assert timings(chunks)["cache_n"] >= 42 + 7


def test_regenerating_reuses_the_prompt_and_gives_the_same_greedy_answer(loaded):
    first, text = run_turn([user(GOLDEN_QUESTION)])
    again, text_again = run_turn([user(GOLDEN_QUESTION)])
    assert text_again == text == GOLDEN_ANSWER
    assert timings(again)["cache_n"] == 41 and timings(again)["prompt_n"] == 1


def cached_ids():
    """The token ids the loaded model's KV cache holds: all Python keeps between turns (None: no model)."""
    session = worker_api._worker.session
    return list(session.model.cache.ids) if session else None


def test_a_failed_turn_leaves_python_as_it_was(loaded):
    run_turn([user(GOLDEN_QUESTION)])
    before = cached_ids()
    reply = call(worker_api.begin_request, "chat.completions", request_body([user("word " * 5000)]))
    assert reply["ok"] is False and reply["error"]["type"] == "ContextFullError"  # refused before any chunk
    assert call(worker_api.next_chunk) == {"ok": True, "done": True} and cached_ids() == before
    for bad in ([], [assistant("Hi")], [{"role": "robot", "content": "x"}], [user(5)]):
        reply = call(worker_api.begin_request, "chat.completions", request_body(bad))
        assert reply["ok"] is False and reply["error"]["type"] == "InvalidRequestError", bad
        assert reply["error"]["openai"]["param"] == "messages"
    assert cached_ids() == before
    chunks, text = run_turn([user(GOLDEN_QUESTION)])  # the same prompt again: all of it from the cache
    assert text == GOLDEN_ANSWER and timings(chunks)["cache_n"] == 41


def test_stop_strings_come_with_the_turn(loaded):
    _, text = run_turn([user(GOLDEN_QUESTION)], stop=["France"])
    assert text == GOLDEN_ANSWER[:GOLDEN_ANSWER.index("France")]
    _, text = run_turn([user(GOLDEN_QUESTION)])
    assert text == GOLDEN_ANSWER  # the next turn has no stop strings


def test_cancel_ends_the_answer_after_the_current_token(loaded):
    chunks, text = run_turn([user("Write a long story about a dragon.")], {"max_tokens": 100, "seed": 1},
                            cancel_after=2)
    assert chunks[-2]["choices"][0]["finish_reason"] == "cancelled" and timings(chunks)["predicted_n"] <= 3
    assert text and len(pieces(chunks)) <= 3


def test_rejected_file_keeps_the_loaded_model(loaded):
    page = np.frombuffer(b"<!DOCTYPE html><html><head><title>Not Found</title></head></html>", np.uint8)
    reply = call(worker_api.load_model, page, "model.gguf")
    assert reply["ok"] is False
    assert reply["error"]["type"] == "NotGGUFError"
    assert "HTML page" in reply["error"]["message"]
    assert reply["error"]["has_model"] is True
    _, text = run_turn([user("Hi")], {"temperature": 0, "max_tokens": 2})
    assert text


@pytest.mark.parametrize("settings", [{"max_tokens": 0}, {"max_tokens": "7"}])
def test_settings_out_of_range_are_refused_with_the_clis_message(loaded, settings):
    """The page gets, as data, the message `pychat-wasm chat` prints for the same value (sampler.py's rules),
    naming the argument as the API does, and the turn does not start."""
    before = cached_ids()
    message = "max_tokens: max tokens must be a whole number of at least 1, not %r" % (settings["max_tokens"],)
    reply = call(worker_api.begin_request, "chat.completions", request_body([user("Hi")], settings))
    assert reply["ok"] is False
    assert (reply["error"]["type"], reply["error"]["message"]) == ("InvalidRequestError", message)
    assert call(worker_api.next_chunk) == {"ok": True, "done": True} and cached_ids() == before
    reply = call(worker_api.begin_request, "chat.completions", request_body([user("Hi")], stop=[""]))
    assert reply["ok"] is False and reply["error"]["openai"]["param"] == "stop"


def test_out_of_memory_is_reported_as_data(loaded, smollm2_path, monkeypatch):  # last: no model afterwards
    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(worker_api.ChatSession, "from_plan", no_memory)
    reply = call(worker_api.load_model, np.fromfile(str(smollm2_path), np.uint8), "big.gguf")
    assert reply["error"]["type"] == "MemoryError"
    assert "2 GiB" in reply["error"]["message"]
    assert reply["error"]["has_model"] is False  # the old weights were dropped to make room: reload them
