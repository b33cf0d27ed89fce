"""The worker's Python API, natively: the same JSON the browser worker gets, on the real SmolLM2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pychat_wasm import worker_api

GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
GOLDEN_ANSWER = "The capital of France is Paris."  # transformers and llama.cpp, greedy
GREEDY = json.dumps({"temperature": 0, "repeat_penalty": 1.0, "max_tokens": 16})


def call(function, *args):
    return json.loads(function(*args))


def run_turn(text, settings=GREEDY, cancel_after=None):
    """Drive one answer as worker.js does; returns (events, text)."""
    assert call(worker_api.begin_turn, text, settings)["ok"]
    events = []
    while True:
        reply = call(worker_api.next_event)
        assert reply["ok"], reply
        if reply["event"] is None:
            break
        events.append(reply["event"])
        if cancel_after is not None and sum(e["kind"] == "piece" for e in events) == cancel_after:
            worker_api.cancel()
    return events, "".join(e["text"] for e in events if e["kind"] == "piece")


@pytest.fixture(scope="module")
def loaded(smollm2_path):
    reply = call(worker_api.load_model, np.fromfile(str(smollm2_path), np.uint8), smollm2_path.name)
    assert reply["ok"], reply
    return reply["info"]


def test_load_reports_what_the_page_shows(loaded):
    assert loaded["architecture"] == "llama"
    assert loaded["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert loaded["file_bytes"] == 98362432
    assert loaded["policy"] in ("float32", "int8", "quantized")


def test_greedy_turn_streams_the_reference_answer(loaded):
    call(worker_api.set_conversation, json.dumps({"system_prompt": "", "messages": []}))
    events, text = run_turn(GOLDEN_QUESTION)
    assert text == GOLDEN_ANSWER
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "progress" and kinds[-1] == "done" and kinds.count("piece") == 7
    stats = events[-1]["stats"]
    assert stats["prompt_tokens"] == 42 and stats["generated_tokens"] == 8 and stats["stop_reason"] == "eos"
    budgets = [e["budget"] for e in events if e["kind"] != "notice"]
    assert [b["answer"] for b in budgets] == [0, 0] + list(range(1, 8)) + [8]  # 2 prompt chunks, then per token
    assert budgets[-1]["used"] == 42 + 8 and budgets[-1]["history"] + budgets[-1]["system"] == 42
    assert budgets[-1]["dropped"] == 0 and budgets[-1]["will_drop_next"] is False
    assert call(worker_api.context_budget)["budget"] == budgets[-1]


def test_restored_conversation_reuses_the_cache(loaded):
    conversation = {"system_prompt": "", "messages": [
        {"role": "user", "content": GOLDEN_QUESTION}, {"role": "assistant", "content": GOLDEN_ANSWER}]}
    budget = call(worker_api.set_conversation, json.dumps(conversation))["budget"]
    assert budget["used"] == 42 + 8 + 1 and budget["answer"] == 0  # golden prompt, answer + end token, newline
    events, text = run_turn("And of Germany? Answer in one sentence.")
    assert "Berlin" in text
    assert events[-1]["stats"]["reused_tokens"] >= 42 + 7


def test_cancel_ends_the_answer_after_the_current_token(loaded):
    call(worker_api.set_conversation, json.dumps({"system_prompt": "", "messages": []}))
    events, text = run_turn("Write a long story about a dragon.", json.dumps({"max_tokens": 100, "seed": 1}),
                            cancel_after=2)
    stats = events[-1]["stats"]
    assert stats["stop_reason"] == "cancelled" and stats["generated_tokens"] <= 3
    assert text and [e["kind"] for e in events].count("piece") <= 3


def test_rejected_file_keeps_the_loaded_model(loaded):
    page = np.frombuffer(b"<!DOCTYPE html><html><head><title>Not Found</title></head></html>", np.uint8)
    reply = call(worker_api.load_model, page, "model.gguf")
    assert reply["ok"] is False
    assert reply["error"]["type"] == "NotGGUFError"
    assert "HTML page" in reply["error"]["message"]
    assert reply["error"]["has_model"] is True
    _, text = run_turn("Hi", json.dumps({"temperature": 0, "max_tokens": 2}))
    assert text


def test_out_of_memory_is_reported_as_data(loaded, smollm2_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(worker_api.Model, "from_gguf", no_memory)
    reply = call(worker_api.load_model, np.fromfile(str(smollm2_path), np.uint8), "big.gguf")
    assert reply["error"]["type"] == "MemoryError"
    assert "2 GiB" in reply["error"]["message"]
    assert reply["error"]["has_model"] is False  # the old weights were dropped to make room: reload them


def test_settings_from_the_form():
    settings = worker_api.settings_from_json(
        '{"temperature": 0, "top_k": 5.0, "seed": null, "max_tokens": "7", "unknown": 1}')
    assert (settings.temperature, settings.top_k, settings.max_tokens, settings.seed) == (0.0, 5, 7, None)
    assert isinstance(settings.top_k, int)
    assert worker_api.settings_from_json("{}") == worker_api.SamplingSettings()
