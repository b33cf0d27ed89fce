"""Speculative decoding (pychat_wasm/chat/speculative.py) keeps the output exact, against transformers.

1. Greedy, on SmolLM2: answers to copy-heavy requests (rewrite a paragraph, fix a piece of code) and to a
   plain question are the same token ids with speculation (a session's default) and without, and they are
   transformers' greedy continuation of the same prompt ids (compared up to the first step where transformers' two best logits lie
   closer than our logits' distance from theirs, 1e-2, where either choice is right).
2. Sampling, on a tiny random model: the first three tokens of 3000 seeded answers (temperature and top-k),
   with and without speculation, follow the distribution of transformers' softmax (a chi-square test over
   the sequences), while about half the drafts are kept; with the same seed both give the same tokens.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from pychat_wasm.chat.sampler import SamplingSettings
from pychat_wasm.chat.session import ChatSession
from pychat_wasm.chat.speculative import PromptLookup
from pychat_wasm.gguf.reader import GGUFFile

PARAGRAPH = ("The old lighthouse stood at the edge of the cliff for more than a century. Every night its keeper "
             "climbed the narrow spiral stairs to light the lamp, and every morning he wrote the weather in a "
             "leather book. Ships passing the rocky coast relied on its beam to find the harbour safely.")
CODE = ("def average(values):\n    total = 0\n    for value in values:\n        total += value\n"
        "    return total / len(values) if values else 0\n\n\nprint(average([1, 2, 3, 4]))\n")
REQUESTS = {
    "rewrite": "Rewrite this paragraph with British spelling and nothing else changed:\n\n" + PARAGRAPH,
    "fix code": "Fix the bug in this Python code and show the whole corrected code:\n\n" + CODE.replace(
        "total += value", "total =+ value"),
    "plain": "What is the capital of France? Answer in two sentences.",
}
ANSWER_TOKENS = 64
TIE = 1e-2  # our SmolLM2 logits agree with transformers' within this (tests/oracle/test_model.py)


def our_greedy_ids(session: ChatSession, request: str) -> Tuple[List[int], List[int], int]:
    """(prompt ids, the answer's ids, its end token included, how many drafted tokens were kept) of a greedy
    answer without repeat penalty."""
    answer: List[int] = []
    session.on_sample = lambda logits, token: answer.append(token)
    events = list(session.reply([{"role": "user", "content": request}],
                                SamplingSettings(temperature=0, repeat_penalty=1.0, max_tokens=ANSWER_TOKENS)))
    stats = events[-1].stats
    return session.model.cache.ids[:stats.prompt_tokens + stats.reused_tokens], answer, stats.draft_accepted


def transformers_agreement(hf, prompt: List[int], answer: List[int]) -> int:
    """How many of `answer`'s ids transformers' greedy steps give, stopping at the first near tie; asserts
    that the first difference is a near tie."""
    with torch.no_grad():
        logits = hf(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:].double().numpy()  # [n+1, vocab]
    for step, token in enumerate(answer):
        best_two = np.sort(logits[step])[-2:]
        if best_two[1] - best_two[0] < TIE:
            return step
        assert token == int(np.argmax(logits[step])), "step %d: transformers' greedy token differs" % step
    return len(answer)


@pytest.fixture(scope="module")
def sessions(smollm2_path):
    """Two sessions on one SmolLM2 model: with speculation (a session's default) and without."""
    gguf = GGUFFile.open(str(smollm2_path))
    speculative = ChatSession.from_gguf(gguf, context_length=1024)
    assert isinstance(speculative.speculative, PromptLookup)
    plain = ChatSession(speculative.model, speculative.tokenizer, speculative.template)
    plain.speculative = None
    return speculative, plain


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_greedy_answers_are_the_same_and_transformers(sessions, hf_smollm2_model, name):
    speculative, plain = sessions
    prompt, ours, kept = our_greedy_ids(speculative, REQUESTS[name])
    assert (prompt, ours, 0) == our_greedy_ids(plain, REQUESTS[name])
    if name != "plain":
        assert kept >= 5  # drafts copied from the request were kept
    agreed = transformers_agreement(hf_smollm2_model, prompt, ours)
    assert agreed >= min(len(ours), 16)


# -- sampling: the distribution ---------------------------------------------------------------------

SAMPLES = 3000
# Seeds FIRST_SEED...: seeds 0..2999 give a chi-square p of 0.0008 with and without speculation, and so does
# drawing from transformers' own probabilities with those seeds' uniforms (blocks from 3000 on: 0.2-0.9), a
# 1-in-1000 draw of the uniforms, not of the engine.
FIRST_SEED = 10000
TEMPERATURE, TOP_K = 8.0, 8  # on the tiny model's copy prompt: about 70% of the drafts are kept
FIRST_TOKENS = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path, transformers' model) of a tiny random llama with a context long enough for a copy prompt."""
    import transformers
    from tiny_models import TINY_SPECS, write_tiny_model

    spec = TINY_SPECS["llama"]._replace(context_length=256)
    path = write_tiny_model(tmp_path_factory.mktemp("speculative") / "llama.gguf", "llama", chat=True, spec=spec)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    return path, hf


def copy_prompt(hf) -> List[int]:
    """A start and transformers' greedy continuation of it, which ends repeating one token: so drafts copied
    from the prompt are often, not always, what is sampled next."""
    start = [1, 40, 77, 12, 90, 5]
    with torch.no_grad():
        return hf.generate(torch.tensor([start]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                           pad_token_id=0)[0].tolist()


def exact_probabilities(hf, prompt: List[int], end_ids) -> Dict[Tuple[int, ...], float]:
    """P(first tokens) for every sequence of FIRST_TOKENS tokens (or fewer, ending at an end token) at
    TEMPERATURE and TOP_K, from transformers' logits: the softmax of the TOP_K best over TEMPERATURE (as its
    TopKLogitsWarper and TemperatureLogitsWarper do)."""
    finished: Dict[Tuple[int, ...], float] = {}
    frontier = {(): 1.0}
    for depth in range(FIRST_TOKENS):
        grown = {}
        for prefix, mass in frontier.items():
            with torch.no_grad():
                logits = hf(torch.tensor([prompt + list(prefix)])).logits[0, -1].double()  # [vocab]
            best = torch.topk(logits, TOP_K)
            for token, p in zip(best.indices.tolist(), torch.softmax(best.values / TEMPERATURE, dim=0).tolist()):
                ends = token in end_ids or depth == FIRST_TOKENS - 1
                (finished if ends else grown)[prefix + (token,)] = mass * p
        frontier = grown
    return finished


def sampled_sequences(session: ChatSession, prompt: List[int]) -> Tuple[List[Tuple[int, ...]], int, int]:
    """The first FIRST_TOKENS tokens of SAMPLES answers, seeds FIRST_SEED, FIRST_SEED + 1, ..., and how many
    tokens their drafts had and how many of those were kept."""
    settings = SamplingSettings(temperature=TEMPERATURE, top_k=TOP_K, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                max_tokens=FIRST_TOKENS)
    sequences, drafted, kept = [], 0, 0
    for seed in range(FIRST_SEED, FIRST_SEED + SAMPLES):
        tokens: List[int] = []
        session.on_sample = lambda logits, token: tokens.append(token)
        stats = list(session.complete(prompt, dataclasses.replace(settings, seed=seed)))[-1].stats
        sequences.append(tuple(tokens))
        drafted, kept = drafted + stats.draft_tokens, kept + stats.draft_accepted
    return sequences, drafted, kept


@pytest.mark.slow
def test_sampled_tokens_follow_transformers_softmax_with_and_without_speculation(tiny):
    path, hf = tiny
    prompt = copy_prompt(hf)
    speculative = ChatSession.from_gguf(GGUFFile.open(str(path)))  # speculation is a session's default
    plain = ChatSession.from_gguf(GGUFFile.open(str(path)))
    plain.speculative = None
    ours, drafted, kept = sampled_sequences(speculative, prompt)
    assert (ours, 0) == sampled_sequences(plain, prompt)[:2]  # the same seed, the same tokens; no drafts
    assert drafted > SAMPLES // 2 and 0.2 < kept / drafted < 0.8  # kept and refused

    exact = exact_probabilities(hf, prompt, speculative.end_ids)
    assert set(ours) <= set(exact)
    counts = Counter(ours)
    cells = [seq for seq, p in exact.items() if p * SAMPLES >= 5]  # each expected 5 times or more
    rare = [seq for seq in exact if seq not in cells]
    observed = [counts[seq] for seq in cells] + [sum(counts[seq] for seq in rare)] * bool(rare)  # rare: one cell
    expected = [exact[seq] * SAMPLES for seq in cells] + [sum(exact[seq] for seq in rare) * SAMPLES] * bool(rare)
    assert len(cells) >= 8 and sum(exact.values()) == pytest.approx(1.0)
    assert chisquare(observed, expected).pvalue > 1e-3
