"""`pychat-wasm serve` as a subprocess on 127.0.0.1, driven by the official `openai` client and checked against
transformers: greedy answers, streamed or not, token counts, embeddings; OpenAI's errors; the API key; a
client that leaves mid-stream stops the generation; a full queue answers 503."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest
import torch

from pychat_wasm.server.requests import MAX_BODY_BYTES

from openai_server import get_json, running_server, wait_for  # tests/support/openai_server.py

pytestmark = pytest.mark.slow

API_KEY = "test-key-1234"
GOLDEN_MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
GOLDEN_ANSWER = "The capital of France is Paris."
COUNTING = "1, 2, 3, 4,"  # greedy SmolLM2 counts on and on: an answer that never ends by itself


@pytest.fixture(scope="module")
def server(smollm2_path):
    with running_server(smollm2_path, "--context", "512", "--api-key", API_KEY, "--queue", "1") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0, timeout=600)


def health(server) -> dict:
    return get_json(server + "/health")


@pytest.fixture(scope="module")
def transformers_golden(hf_smollm2_model, hf_smollm2_tokenizer):
    """(prompt ids, greedy answer text) from transformers, the prompt rendered by apply_chat_template."""
    ids = hf_smollm2_tokenizer.apply_chat_template(GOLDEN_MESSAGES, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    with torch.no_grad():
        out = hf_smollm2_model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    return ids, hf_smollm2_tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def test_the_model_list_names_the_served_model(client, smollm2_path):
    assert [model.id for model in client.models.list()] == [smollm2_path.name]


def test_a_greedy_chat_answer_is_transformers_greedy_answer(client, transformers_golden):
    prompt_ids, expected = transformers_golden
    assert expected == GOLDEN_ANSWER
    reply = client.chat.completions.create(model="any", messages=GOLDEN_MESSAGES, temperature=0)
    assert reply.choices[0].message.content == expected and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_a_streamed_chat_answer_is_transformers_greedy_answer(client, transformers_golden):
    chunks = list(client.chat.completions.create(model="any", messages=GOLDEN_MESSAGES, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == transformers_golden[1]
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"


def test_chat_logprobs_are_transformers_log_softmax(client, transformers_golden, hf_smollm2_model):
    prompt_ids, _ = transformers_golden
    reply = client.chat.completions.create(model="any", messages=GOLDEN_MESSAGES, temperature=0, max_tokens=4,
                                           logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == "The capital of France"
    answer = [504, 3575, 282, 4649]  # transformers' greedy ids of those four tokens (test_model.GOLDEN_ANSWER)
    with torch.no_grad():
        logits = hf_smollm2_model(torch.tensor([prompt_ids + answer])).logits[0, len(prompt_ids) - 1:-1]
    expected = torch.log_softmax(logits.double(), dim=-1).numpy()  # [4, vocab]
    # SmolLM2's 30 layers agree with transformers' logits to 1e-2 (test_model.py), so its logprobs do too;
    # the 1e-3 bound on a tiny model is in test_logprobs_and_embeddings.py.
    np.testing.assert_allclose([e.logprob for e in content], expected[np.arange(4), answer], atol=1e-2)
    for step, entry in enumerate(content):
        np.testing.assert_allclose([t.logprob for t in entry.top_logprobs], np.sort(expected[step])[::-1][:2],
                                   atol=1e-2)


def test_embeddings_are_transformers_mean_pooled_last_hidden_states(client, hf_smollm2_model, hf_smollm2_tokenizer):
    texts = ["Paris is the capital of France.", "A second, different text"]
    response = client.embeddings.create(model="any", input=texts)  # the client asks for base64 float32s
    for item, text in zip(response.data, texts):
        ids = hf_smollm2_tokenizer(text)["input_ids"]
        with torch.no_grad():
            hidden = hf_smollm2_model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        expected = hidden.double().mean(dim=0).numpy()
        np.testing.assert_allclose(item.embedding, expected / np.linalg.norm(expected), rtol=0, atol=1e-4)
    assert response.usage.prompt_tokens == sum(len(hf_smollm2_tokenizer(t)["input_ids"]) for t in texts)


@pytest.mark.parametrize("arguments,param", [
    ({"temperature": 11}, "temperature"), ({"top_p": "high"}, "top_p"), ({"max_tokens": -1}, "max_tokens"),
    ({"extra_body": {"temprature": 0.5}}, "temprature"), ({"stop": [""]}, "stop"),
    ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages"),
])
def test_bad_requests_are_openais_400_errors(client, server, arguments, param):
    arguments = dict({"model": "any", "messages": GOLDEN_MESSAGES}, **arguments)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**arguments)
    error = raised.value.body
    assert raised.value.status_code == 400 and error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]
    assert health(server)["status"] == "ok"


@pytest.mark.parametrize("body", [b'{"messages": [', b'[1, 2]', b'\xff\xfe',
                                  b'{"x": "' + b"a" * (MAX_BODY_BYTES + 1024) + b'"}'],
                         ids=["truncated", "not-an-object", "not-utf8", "too-large"])
def test_malformed_bodies_are_400_errors(server, body):
    request = urllib.request.Request(server + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Authorization": "Bearer " + API_KEY,
                                              "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 400
    assert set(json.loads(raised.value.read())["error"]) == {"message", "type", "param", "code"}
    assert health(server)["status"] == "ok"


def test_a_wrong_or_missing_key_is_refused(server, client):
    wrong = openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(urllib.error.HTTPError) as raised:
        get_json(server + "/v1/models")
    assert raised.value.code == 401 and json.loads(raised.value.read())["error"]["code"] == "invalid_api_key"
    assert health(server)["status"] == "ok"  # /health needs no key


def test_a_client_that_leaves_mid_stream_stops_the_generation(client, server):
    max_tokens = 24
    whole = client.completions.create(model="any", prompt=COUNTING, max_tokens=max_tokens, temperature=0)
    assert whole.choices[0].finish_reason == "length"  # left alone, this answer runs all 24 tokens
    before = health(server)["generated_tokens"]
    stream = client.completions.create(model="any", prompt=COUNTING, max_tokens=max_tokens, temperature=0,
                                       stream=True)
    pieces = []
    for chunk in stream:
        pieces.append(chunk.choices[0].text)
        if len(pieces) == 3:
            break
    stream.close()
    wait_for(lambda: not health(server)["busy"], "the server to stop generating")
    generated = health(server)["generated_tokens"] - before
    assert 3 <= generated < max_tokens  # a token or two past what was read, not the rest of the answer
    assert "".join(pieces) == whole.choices[0].text[:len("".join(pieces))]


def test_a_full_queue_answers_503_with_retry_after(client, server):
    running = client.completions.create(model="any", prompt=COUNTING, max_tokens=400, temperature=0, stream=True)
    next(iter(running))  # it has the model
    waiting = {}
    thread = threading.Thread(target=lambda: waiting.setdefault("reply", client.chat.completions.create(
        model="any", messages=GOLDEN_MESSAGES, temperature=0)))
    thread.start()
    wait_for(lambda: health(server)["waiting"] == 1, "the second request to wait")
    with pytest.raises(openai.InternalServerError) as raised:  # the queue holds one: a third is turned away
        client.chat.completions.create(model="any", messages=GOLDEN_MESSAGES, temperature=0)
    assert raised.value.status_code == 503 and raised.value.response.headers["Retry-After"].isdigit()
    assert raised.value.body["code"] == "queue_full"
    running.close()
    thread.join(timeout=600)
    assert waiting["reply"].choices[0].message.content == GOLDEN_ANSWER
