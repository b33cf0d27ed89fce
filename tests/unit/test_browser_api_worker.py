"""The worker's OpenAI requests (begin_request / next_chunk, what web/pychat.js's engine sends), natively on the
real SmolLM2: the greedy answer is transformers' (GOLDEN_ANSWER), whole or chunk by chunk; refusals carry
OpenAI's error object; stop ends the generation within a token."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from pychat_wasm.browser import chat_worker as worker_api
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION  # transformers' and llama.cpp's greedy answer

MESSAGES = [{"role": "user", "content": GOLDEN_QUESTION}]


def call(function, *args):
    return json.loads(function(*args))


@pytest.fixture(scope="module")
def loaded(smollm2_path):
    reply = call(worker_api.load_model, np.fromfile(str(smollm2_path), np.uint8), smollm2_path.name)
    assert reply["ok"], reply


def run_request(kind, body, stop_after=None):
    """Drive one request as worker.js does: (begin reply, the items next_chunk gave, steps taken)."""
    begun = call(worker_api.begin_request, kind, json.dumps(body))
    items, steps = [], 0
    while begun["ok"]:
        reply = call(worker_api.next_chunk, stop_after is not None and steps == stop_after)
        assert reply["ok"], reply
        if reply.get("done"):
            break
        steps += 1
        if reply["item"] is not None:
            items.append(reply["item"])
    return begun, items, steps


def test_a_whole_chat_completion_comes_in_steps_then_the_response(loaded):
    begun, items, steps = run_request("chat.completions", {"messages": MESSAGES, "temperature": 0,
                                                           "max_tokens": 16})
    assert begun["ok"] and len(items) == 1 and steps > 2  # one step per piece, then the response
    choice = items[0]["choices"][0]
    assert items[0]["object"] == "chat.completion"
    assert choice["message"] == {"role": "assistant", "content": GOLDEN_ANSWER}
    assert choice["finish_reason"] == "stop"


def test_a_streamed_chat_completion_is_its_chunks(loaded):
    _, chunks, _ = run_request("chat.completions", {"messages": MESSAGES, "temperature": 0, "max_tokens": 16,
                                                    "stream": True, "model": "anything"})
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == GOLDEN_ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_ends_the_generation_after_the_current_token(loaded):
    _, chunks, _ = run_request("chat.completions", {"messages": MESSAGES, "temperature": 0, "stream": True},
                               stop_after=3)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert GOLDEN_ANSWER.startswith(text) and text != GOLDEN_ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "cancelled"


LONG_QUESTION = "Summarise this list in one word: " + ", ".join("item %d" % i for i in range(60))
LIVE_USAGE = {"include_usage": True, "continuous_usage_stats": True}  # what the page's chat asks for


def test_a_long_prompt_reports_its_reading_and_stop_ends_it_between_its_chunks(loaded, smollm2_path,
                                                                              hf_smollm2_tokenizer):
    """With continuous usage stats, each 32-token chunk of a long prompt but the last is followed by a chunk
    without choices carrying llama.cpp's prompt_progress; its total is transformers' token count of the
    rendered prompt (nothing of it cached), and Stop there ends the answer before any token is sampled."""
    messages = [{"role": "user", "content": LONG_QUESTION}]
    rendered = hf_smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    total = len(hf_smollm2_tokenizer(rendered, add_special_tokens=False)["input_ids"])
    body = {"messages": messages, "temperature": 0, "max_tokens": 4, "stream": True, "stream_options": LIVE_USAGE}

    def empty_cache():
        call(worker_api.load_model, np.fromfile(str(smollm2_path), np.uint8), smollm2_path.name)

    empty_cache()
    _, chunks, _ = run_request("chat.completions", body)
    progress = [c["prompt_progress"] for c in chunks if "prompt_progress" in c]
    assert all(not c["choices"] for c in chunks if "prompt_progress" in c)
    assert total > 64 and [p["processed"] for p in progress] == list(range(32, total, 32))
    assert {p["total"] for p in progress} == {total}

    empty_cache()
    _, chunks, _ = run_request("chat.completions", body, stop_after=2)  # the role chunk, then one prompt chunk
    assert [c["prompt_progress"]["processed"] for c in chunks if "prompt_progress" in c] == [32]
    answered = [c for c in chunks if c["choices"]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in answered) == ""
    assert answered[-1]["choices"][0]["finish_reason"] == "cancelled"


def test_models_and_embeddings(loaded, smollm2_path):
    _, (models,), _ = run_request("models", {})
    assert models["data"][0]["id"] == smollm2_path.name
    _, (floats,), _ = run_request("embeddings", {"input": "Paris"})
    _, (encoded,), _ = run_request("embeddings", {"input": "Paris", "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(decoded, floats["data"][0]["embedding"], rtol=1e-6)


@pytest.mark.parametrize("kind, body, status, param", [
    ("chat.completions", {"messages": MESSAGES, "top_p": 2}, 400, "top_p"),
    ("chat.completions", {"messages": MESSAGES, "temprature": 0}, 400, "temprature"),
    ("chat.completions", {"messages": []}, 400, "messages"),
    ("embeddings", {"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ("images", {}, 400, None),
])
def test_refusals_carry_openais_error_object(loaded, kind, body, status, param):
    begun, _, _ = run_request(kind, body)
    error = begun["error"]
    assert not begun["ok"] and error["type"] == "InvalidRequestError" and error["has_model"]
    assert error["status"] == status
    assert error["openai"]["type"] == "invalid_request_error" and error["openai"]["param"] == param
    assert error["openai"]["message"] == error["message"]
