"""Prompt-lookup speculative decoding (pychat_wasm/chat/speculative.py) on its own: the drafts against a
brute-force search, the KV cache's rollback against a recomputation, and the token loop's output with and
without speculation on a tiny model (greedy and seeded sampling, stop strings, max_tokens, a grammar)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from pychat_wasm import LLM
from pychat_wasm.chat.sampler import SamplingSettings
from pychat_wasm.chat.session import ChatSession
from pychat_wasm.chat.speculative import PromptLookup, SpeculativeFeed
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.forward import Model


def searched_draft(history, min_match, max_match, room):
    """The draft by brute force: for the longest suffix first, scan back for its latest earlier occurrence
    that has a token after it, and copy what follows."""
    for n in range(min(max_match, len(history)), min_match - 1, -1):
        suffix = history[-n:]
        for i in range(len(history) - n - 1, -1, -1):
            if history[i:i + n] == suffix:
                return history[i + n:i + n + room]
    return []


@pytest.mark.parametrize("history, room, expected", [
    ([5, 6, 7, 8, 9, 5, 6], 3, [7, 8, 9]),
    ([5, 6, 7, 8, 9, 5, 6], 8, [7, 8, 9, 5, 6]),  # a draft may run into the n-gram that started it
    ([1, 2, 3, 9, 2, 3, 4, 1, 2, 3], 2, [9, 2]),  # the longest match (1 2 3) beats the latest one (2 3)
    ([2, 3, 4, 2, 3, 5, 2, 3], 2, [5, 2]),  # of equally long matches, the latest
    ([1, 2, 3, 4], 4, []),  # nothing repeats
    ([7, 1, 8, 1], 4, []),  # one repeated token is too short a match
])
def test_drafts_copy_what_followed_the_longest_latest_match(history, room, expected):
    lookup = PromptLookup()
    assert lookup.draft(history, room=room) == expected == searched_draft(history, 2, 4, room)


def test_drafts_of_a_growing_history_match_a_brute_force_search():
    rng = random.Random(0)
    for _ in range(200):
        lookup, history = PromptLookup(), []
        for _ in range(rng.randint(1, 60)):
            step = [rng.randint(0, 5) for _ in range(rng.randint(1, 3))]
            history += step
            room = rng.randint(0, 10)
            assert lookup.draft(step, room=room) == searched_draft(history, 2, 4, min(room, 8))


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from tiny_models import TINY_SPECS, write_tiny_model

    spec = TINY_SPECS["llama"]._replace(context_length=256)  # room for a prompt to copy and its copy
    return write_tiny_model(tmp_path_factory.mktemp("speculative") / "llama.gguf", "llama", chat=True, spec=spec)


def test_rolled_back_draft_tokens_leave_the_logits_of_a_fresh_run(tiny_path):
    model = Model.from_gguf(str(tiny_path), policy="float32")
    prompt, draft, instead = [1, 40, 77, 12, 90, 5], [7, 8, 9], [33, 34]
    model.forward(prompt, start_pos=0)
    model.forward(draft, start_pos=len(prompt), all_logits=True)
    model.cache.truncate(len(prompt) + 1)  # keep the first draft token, forget the rest
    assert model.cache.ids == prompt + draft[:1]
    after = model.forward(instead, start_pos=len(prompt) + 1, all_logits=True)  # [2, vocab]
    fresh = Model.from_gguf(str(tiny_path), policy="float32").forward(prompt + draft[:1] + instead, 0,
                                                                        all_logits=True)[-2:]
    np.testing.assert_allclose(after, fresh, rtol=0, atol=1e-4)  # logits up to ~20: float32 sums in another order


def test_the_feed_rolls_back_what_the_sampler_did_not_choose(tiny_path):
    model = Model.from_gguf(str(tiny_path), policy="float32")
    prompt = [1, 2, 3, 4, 5, 6, 1, 2]
    model.forward(prompt, start_pos=0)
    feed = SpeculativeFeed(model, PromptLookup())
    feed.next_logits(3, room=10)  # drafts 4 5 6 (1 2) after 1 2 3, runs them with 3
    assert model.cache.ids[:len(prompt) + 2] == prompt + [3, 4] and feed.history == prompt + [3]
    feed.next_logits(4, room=10)  # the draft's first token: kept, no pass
    assert feed.history == prompt + [3, 4]
    feed.next_logits(9, room=10)  # not the draft: the rest is forgotten, 9 runs
    assert model.cache.ids[:len(prompt) + 3] == prompt + [3, 4, 9] == feed.history
    feed.finish()
    assert model.cache.ids == prompt + [3, 4, 9]


COPY_PROMPT = ("Copy this line: the quick brown fox jumps over the lazy dog. the quick brown fox jumps over the "
               "lazy dog. the quick brown")


@pytest.fixture(scope="module")
def llms(tiny_path):
    """Two LLMs on the tiny model: with and without speculation."""
    return LLM(tiny_path, speculative=True), LLM(tiny_path, speculative=False)


@pytest.mark.parametrize("options", [
    dict(temperature=0, max_tokens=40),
    dict(temperature=0, max_tokens=7, repeat_penalty=1.3),
    dict(temperature=0.8, top_k=20, max_tokens=40, seed=11),
    dict(temperature=1.2, max_tokens=40, seed=3, frequency_penalty=0.5),
    dict(temperature=0, max_tokens=40, stop=["o", "e l"]),
    dict(temperature=0.5, max_tokens=30, seed=5, grammar='root ::= ("the " | "quick " | "lazy " | "dog. ")+'),
])
def test_answers_are_the_same_with_and_without_speculation(llms, options):
    with_it, without = llms
    for prompt in (COPY_PROMPT, "Hello"):
        ours = with_it.create_completion(prompt, logprobs=1, **options)["choices"][0]
        plain = without.create_completion(prompt, logprobs=1, **options)["choices"][0]
        assert (ours["text"], ours["finish_reason"]) == (plain["text"], plain["finish_reason"])
        assert ours["logprobs"]["tokens"] == plain["logprobs"]["tokens"]
        assert with_it.session.model.cache.ids == without.session.model.cache.ids  # no draft token left over
    assert with_it.session.speculative.accepted > 0  # the copy prompt's drafts were kept


def cancelled_answer_cache(tiny_path, lookup):
    """The cache's ids after an answer cancelled once 12 tokens were sampled, and those tokens."""
    session = ChatSession.from_gguf(GGUFFile.open(str(tiny_path)))
    session.speculative = lookup
    prompt = session.tokenizer.encode(COPY_PROMPT, add_special=True)
    sampled = []
    session.on_sample = lambda logits, token: sampled.append(token)
    for event in session.complete(prompt, SamplingSettings(temperature=0, max_tokens=40)):
        if event.kind == "piece" and len(sampled) >= 12:
            session.cancel()
    assert session.model.cache.ids[:len(prompt)] == prompt
    return session.model.cache.ids, sampled


def test_a_cancelled_answer_leaves_only_its_tokens_in_the_cache(tiny_path):
    lookup = PromptLookup()
    ids, sampled = cancelled_answer_cache(tiny_path, lookup)
    assert lookup.drafted > lookup.accepted > 0  # drafts were kept, and some were pending when it stopped
    assert (ids, sampled) == cancelled_answer_cache(tiny_path, None)
