"""pychat_wasm.LLM against transformers: logprobs are the log-softmax of transformers' logits, embeddings are
the mean of its last hidden states (after the final norm), token counts are its tokenizer's. A tiny random
model gives the tight bound (logits agree to 1e-3), SmolLM2 the real one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pychat_wasm import LLM

GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
TEXTS = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog"]


def hf_log_softmax(model, ids) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]  # [n, vocab]
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def hf_mean_embedding(model, ids, normalize: bool) -> np.ndarray:
    with torch.no_grad():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]  # [n, dim], normed
    vector = hidden.double().mean(dim=0).numpy()
    return vector / np.linalg.norm(vector) if normalize else vector


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(LLM, transformers' model) of a tiny random llama with a vocabulary that writes any text."""
    import transformers
    from tiny_models import write_tiny_model

    path = write_tiny_model(tmp_path_factory.mktemp("tiny_api") / "llama.gguf", "llama", chat=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    return LLM(path), hf


def hf_greedy(model, prompt, n, end_ids=()):
    """transformers' greedy answer (ids, up to an end id) and the log-softmax [len(ids), vocab] of each step."""
    ids, rows = [], []
    for _ in range(n):
        row = hf_log_softmax(model, prompt + ids)[-1]  # [vocab]
        token = int(np.argmax(row))
        if token in end_ids:
            break
        ids.append(token)
        rows.append(row)
    return ids, np.array(rows)


def test_completion_logprobs_are_transformers_log_softmax(tiny):
    llm, hf = tiny
    prompt = [1, 40, 77, 12, 90, 5]
    reply = llm.create_completion(prompt, max_tokens=6, temperature=0, logprobs=5)
    logprobs = reply["choices"][0]["logprobs"]
    answer, expected = hf_greedy(hf, prompt, 6)
    assert logprobs["tokens"] == [llm.tokenizer.token_bytes(i).decode("utf-8", "replace") for i in answer]
    np.testing.assert_allclose(logprobs["token_logprobs"], expected[np.arange(6), answer], rtol=0, atol=1e-3)
    for step, top in enumerate(logprobs["top_logprobs"]):  # keyed by text: tokens that print alike share a key
        best = np.sort(expected[step])[::-1][:5]
        assert max(top.values()) == pytest.approx(best[0], abs=1e-3)
        assert all(np.min(np.abs(best - value)) < 1e-3 for value in top.values())


def test_chat_logprobs_are_transformers_log_softmax(tiny):
    llm, hf = tiny
    messages = [{"role": "user", "content": "the cat"}]
    reply = llm.create_chat_completion(messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = reply["choices"][0]["logprobs"]["content"]
    prompt = llm.tokenize("<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n", special=True)
    assert reply["usage"]["prompt_tokens"] == len(prompt)
    answer, expected = hf_greedy(hf, prompt, 5, llm.session.end_ids)
    assert [entry["bytes"] for entry in content] == [list(llm.tokenizer.token_bytes(i)) for i in answer]
    np.testing.assert_allclose([e["logprob"] for e in content], expected[np.arange(len(answer)), answer], atol=1e-3)
    for step, entry in enumerate(content):
        best = np.argsort(-expected[step])[:3]
        assert [list(llm.tokenizer.token_bytes(int(i))) for i in best] == [t["bytes"] for t in entry["top_logprobs"]]
        np.testing.assert_allclose([t["logprob"] for t in entry["top_logprobs"]], expected[step][best], atol=1e-3)


@pytest.mark.parametrize("normalize", [True, False])
def test_tiny_embeddings_are_transformers_mean_pooled_hidden_states(tiny, normalize):
    llm, hf = tiny
    vectors = llm.embed(["the cat", "hello there"], normalize=normalize)
    for text, vector in zip(["the cat", "hello there"], vectors):
        expected = hf_mean_embedding(hf, llm.tokenize(text, special=True), normalize)
        np.testing.assert_allclose(vector, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_smollm2_embeddings_and_their_token_counts_are_transformers(smollm2_path, hf_smollm2_model,
                                                                   hf_smollm2_tokenizer):
    llm = LLM(smollm2_path, context_length=256)
    response = llm.create_embedding(TEXTS)
    hf_ids = [hf_smollm2_tokenizer(text)["input_ids"] for text in TEXTS]
    assert response["usage"]["prompt_tokens"] == sum(len(ids) for ids in hf_ids)
    for item, ids in zip(response["data"], hf_ids):
        np.testing.assert_allclose(item["embedding"], hf_mean_embedding(hf_smollm2_model, ids, True), atol=1e-4)
