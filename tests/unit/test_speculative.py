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


def searched_draft(source, answer, min_match, max_match, room):
    """The draft by brute force: for the longest suffix of source + answer first, scan the source back for
    its latest occurrence that has a token after it there, and copy what follows it in the source."""
    history = source + answer
    for n in range(min(max_match, len(history)), min_match - 1, -1):
        suffix = history[-n:]
        for i in range(len(source) - n - 1, -1, -1):
            if source[i:i + n] == suffix:
                return source[i + n:i + n + room]
    return []


@pytest.mark.parametrize("source, answer, room, expected", [
    ([5, 6, 7, 8, 9, 5, 6, 7], [], 3, [8, 9, 5]),  # the prompt's own end repeats: the answer's first draft
    ([5, 6, 7, 8, 9, 5, 6, 7], [], 8, [8, 9, 5, 6, 7]),  # a draft may run into the n-gram that started it
    ([1, 2, 3, 4, 9, 2, 3, 4, 5], [1, 2, 3, 4], 2, [9, 2]),  # the longest match (1 2 3 4) beats the latest one
    ([2, 3, 4, 6, 2, 3, 4, 5, 8], [2, 3, 4], 2, [5, 8]),  # of equally long matches, the latest
    ([1, 2, 3, 4], [], 4, []),  # nothing repeats
    ([7, 1, 8, 1, 7, 1], [], 4, []),  # two repeated tokens are too short a match
    ([1, 2, 3], [4, 1, 2, 3], 4, []),  # the match ends the prompt: nothing follows it there
    ([9, 9], [5, 6, 7, 8, 5, 6, 7], 4, []),  # the answer repeating itself is not drafted from
])
def test_drafts_copy_what_followed_the_longest_latest_match_in_the_prompt(source, answer, room, expected):
    lookup = PromptLookup()
    lookup.reset(source)
    lookup.extend(answer)
    assert lookup.draft(room=room) == expected == searched_draft(source, answer, 3, 4, room)


def test_drafts_of_a_growing_answer_match_a_brute_force_search():
    rng = random.Random(0)
    for _ in range(300):
        lookup, source, answer = PromptLookup(), [rng.randint(0, 4) for _ in range(rng.randint(0, 40))], []
        lookup.reset(source)
        for _ in range(rng.randint(1, 30)):
            step = [rng.randint(0, 4) for _ in range(rng.randint(1, 3))]
            answer += step
            lookup.extend(step)
            room = rng.randint(0, 10)
            assert lookup.draft(room=room) == searched_draft(source, answer, 3, 4, min(room, 7))


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
    feed.next_logits(3, room=10)  # drafts 4 5 (the first draft's length) after 1 2 3, runs them with 3
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
    """Two LLMs on the tiny model: with speculation (the default) and without."""
    return LLM(tiny_path), LLM(tiny_path, speculative=False)


def greedy_ids(session, prompt, max_tokens):
    """The ids of a greedy continuation of `prompt`."""
    sampled = []
    session.on_sample = lambda logits, token: sampled.append(token)
    for _ in session.complete(prompt, SamplingSettings(temperature=0, repeat_penalty=1.0, max_tokens=max_tokens)):
        pass
    session.on_sample = None
    return sampled


@pytest.fixture(scope="module")
def looping_prompt(llms):
    """COPY_PROMPT's ids and the tiny model's greedy continuation of them, in which it loops: its answers go
    on copying runs of this prompt, so drafts are kept (a random model does not copy text it was asked to)."""
    without = llms[1]
    ids = without.tokenize(COPY_PROMPT, add_bos=True)
    return ids + greedy_ids(without.session, ids, 40)


@pytest.mark.parametrize("options", [
    dict(temperature=0, max_tokens=40),
    dict(temperature=0, max_tokens=7, repeat_penalty=1.3),
    dict(temperature=0.8, top_k=20, max_tokens=40, seed=11),
    dict(temperature=1.2, max_tokens=40, seed=3, frequency_penalty=0.5),
    dict(temperature=0, max_tokens=40, stop=["o", "e l"]),
    dict(temperature=0.5, max_tokens=30, seed=5, grammar='root ::= ("the " | "quick " | "lazy " | "dog. ")+'),
])
def test_answers_are_the_same_with_and_without_speculation(llms, looping_prompt, options):
    with_it, without = llms
    kept = {}
    for prompt in (looping_prompt, "Hello"):
        ours = with_it.create_completion(prompt, logprobs=1, **options)
        plain = without.create_completion(prompt, logprobs=1, **options)
        assert plain["timings"]["draft_n"] == 0  # LLM(speculative=False): no drafts
        (ours, timings), plain = (ours["choices"][0], ours["timings"]), plain["choices"][0]
        assert (ours["text"], ours["finish_reason"]) == (plain["text"], plain["finish_reason"])
        assert ours["logprobs"]["tokens"] == plain["logprobs"]["tokens"]
        assert with_it.session.model.cache.ids == without.session.model.cache.ids  # no draft token left over
        assert 0 <= timings["draft_n_accepted"] <= timings["draft_n"]
        kept[prompt is looping_prompt] = timings["draft_n_accepted"]
    assert kept[True] > 0  # the looping prompt's drafts were kept


def cancelled_answer_cache(tiny_path, lookup, prompt, cut):
    """The cache's ids after an answer to `prompt` cancelled once `cut` tokens were sampled, and those tokens."""
    session = ChatSession.from_gguf(GGUFFile.open(str(tiny_path)))
    session.speculative = lookup
    sampled = []
    session.on_sample = lambda logits, token: sampled.append(token)
    for event in session.complete(prompt, SamplingSettings(temperature=0, max_tokens=40)):
        if event.kind == "piece" and len(sampled) >= cut:
            session.cancel()
    assert session.model.cache.ids[:len(prompt)] == prompt
    return session.model.cache.ids, sampled, event.stats


def test_a_cancelled_answer_leaves_only_its_tokens_in_the_cache(tiny_path, looping_prompt):
    pending_at_cancel = 0  # cuts after which drafted tokens were still unchecked by the sampler
    for cut in range(4, 16):
        ids, sampled, stats = cancelled_answer_cache(tiny_path, PromptLookup(), looping_prompt, cut)
        assert stats.draft_accepted > 0
        pending_at_cancel += stats.draft_tokens > stats.draft_accepted
        assert (ids, sampled) == cancelled_answer_cache(tiny_path, None, looping_prompt, cut)[:2]
    assert pending_at_cancel > 0
