"""Sampler: each filter against Hugging Face's logits processors, the RNG against published SplitMix64 values
and an independent implementation, seeded determinism, and the sampled frequencies against the probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
    TopKLogitsWarper, TopPLogitsWarper)

from pychat_wasm.chat.sampler import (Sampler, SamplingSettings, SplitMix64, apply_repetition_penalty,
                                 filtered_distribution, top_k_candidates)

VOCAB = 500
NO_FILTERS = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def random_logits(seed: int, vocab: int = VOCAB, scale: float = 3.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(vocab)).astype(np.float32)


def hf_survivors(processors, logits: np.ndarray, input_ids=(0,)):
    """Ids that HF's processors leave finite, and the softmax over them (float64 throughout)."""
    scores = torch.tensor(logits, dtype=torch.float64)[None, :]
    out = LogitsProcessorList(processors)(torch.tensor([list(input_ids)]), scores)[0]
    ids = torch.nonzero(torch.isfinite(out)).flatten().numpy()
    return ids, torch.softmax(out, dim=-1).numpy()[ids]


def ours(logits: np.ndarray, **settings):
    ids, probs = filtered_distribution(logits, SamplingSettings(**dict(NO_FILTERS, **settings)))
    order = np.argsort(ids)
    return ids[order], probs[order]


# ---- the random generator ------------------------------------------------------------------------------


def splitmix64_numpy(seed: int, n: int):
    """An independent SplitMix64 in wrapping uint64 numpy arithmetic (Vigna's reference C code, line by line)."""
    with np.errstate(over="ignore"):
        state = np.array([seed], dtype=np.uint64)
        out = []
        for _ in range(n):
            state += np.uint64(0x9E3779B97F4A7C15)
            z = state.copy()
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out.append(int((z ^ (z >> np.uint64(31)))[0]))
    return out


def test_rng_matches_published_splitmix64_values():
    # Rosetta Code "Pseudo-random numbers/Splitmix64", seed 1234567.
    rng = SplitMix64(1234567)
    assert [rng.next_u64() for _ in range(5)] == [
        6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
        16408922859458223821]


@pytest.mark.parametrize("seed", [0, 1, 42, 2**63 + 12345, 2**64 - 1])
def test_rng_matches_an_independent_implementation(seed):
    rng = SplitMix64(seed)
    assert [rng.next_u64() for _ in range(50)] == splitmix64_numpy(seed, 50)


def test_uniform_uses_the_top_53_bits():
    expected = [(x >> 11) / 2.0 ** 53 for x in splitmix64_numpy(7, 1000)]
    rng = SplitMix64(7)
    got = [rng.uniform() for _ in range(1000)]
    assert got == expected
    assert 0.0 <= min(got) and max(got) < 1.0


# ---- greedy and each filter against Hugging Face ----------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_greedy_is_argmax(seed):
    logits = random_logits(seed)
    sampler = Sampler(SamplingSettings(temperature=0.0, repeat_penalty=1.0))
    assert sampler.sample(logits, recent_tokens=[]) == int(np.argmax(logits))


def test_greedy_and_top_k_break_ties_by_lowest_id():
    logits = np.zeros(10, dtype=np.float32)
    logits[[7, 3, 5]] = 4.0
    assert Sampler(SamplingSettings(temperature=0.0, repeat_penalty=1.0)).sample(logits, []) == 3
    assert top_k_candidates(logits, 2).tolist() == [3, 5]
    assert top_k_candidates(logits, 4).tolist() == [3, 5, 7, 0]


@pytest.mark.parametrize("top_k", [1, 2, 40, 499, 500, 1000])
def test_top_k_matches_hf(top_k):
    logits = random_logits(top_k)
    ids, probs = ours(logits, top_k=top_k)
    ref_ids, ref_probs = hf_survivors([TopKLogitsWarper(top_k)], logits)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-12)


@pytest.mark.parametrize("setting, value, warper", [("top_p", v, TopPLogitsWarper) for v in (0.01, 0.3, 0.5, 0.9, 0.95, 0.999)]
                         + [("min_p", v, MinPLogitsWarper) for v in (0.01, 0.05, 0.2, 0.9, 1.0)])
@pytest.mark.parametrize("seed", range(3))
def test_top_p_and_min_p_match_hf(setting, value, warper, seed):
    logits = random_logits(seed)
    ids, probs = ours(logits, **{setting: value})
    ref_ids, ref_probs = hf_survivors([warper(value)], logits)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-12)


@pytest.mark.parametrize("penalty", [0.8, 1.1, 1.5])
def test_repetition_penalty_matches_hf(penalty):
    logits = random_logits(3)
    recent = [5, 17, 17, 250, 499, 0, 5]
    penalized = apply_repetition_penalty(logits, recent, penalty)
    ref = RepetitionPenaltyLogitsProcessor(penalty)(
        torch.tensor([recent]), torch.tensor(logits, dtype=torch.float64)[None, :])[0].numpy()
    np.testing.assert_allclose(penalized, ref, rtol=1e-12)
    assert penalized[1] == logits[1]  # unseen tokens keep their logits


@pytest.mark.parametrize("temperature,top_k,top_p,min_p", [
    (0.7, 40, 0.95, 0.05), (1.3, 0, 0.8, 0.0), (0.5, 10, 1.0, 0.1), (2.0, 100, 0.9, 0.02)])
def test_full_chain_matches_hf_generate_order(temperature, top_k, top_p, min_p):
    logits = random_logits(11, scale=2.0)
    recent = list(range(0, 60, 3))
    penalized = apply_repetition_penalty(logits, recent, 1.1)
    ids, probs = ours(penalized, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    processors = [RepetitionPenaltyLogitsProcessor(1.1), TemperatureLogitsWarper(temperature)]
    processors += [TopKLogitsWarper(top_k)] if top_k else []
    processors += [TopPLogitsWarper(top_p), MinPLogitsWarper(min_p)] if min_p else [TopPLogitsWarper(top_p)]
    ref_ids, ref_probs = hf_survivors(processors, logits, input_ids=recent)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-9)


def test_the_penalty_window_is_the_last_n_tokens():
    logits = np.array([5.0, 4.9, 0.0], dtype=np.float32)
    settings = dict(temperature=0.0, repeat_penalty=2.0)
    assert Sampler(SamplingSettings(repeat_last_n=2, **settings)).sample(logits, [0, 2, 2]) == 0
    assert Sampler(SamplingSettings(repeat_last_n=3, **settings)).sample(logits, [0, 2, 2]) == 1
    assert Sampler(SamplingSettings(repeat_last_n=0, **settings)).sample(logits, [0, 2, 2]) == 0


# ---- determinism and distribution ---------------------------------------------------------------------------


def draw_many(settings: SamplingSettings, n: int, logits: np.ndarray):
    sampler = Sampler(settings)
    return [sampler.sample(logits, recent_tokens=[]) for _ in range(n)]


def test_same_seed_same_tokens_and_different_seed_different_tokens():
    logits = random_logits(5, scale=1.0)
    a = draw_many(SamplingSettings(seed=123), 200, logits)
    assert a == draw_many(SamplingSettings(seed=123), 200, logits)
    assert a != draw_many(SamplingSettings(seed=124), 200, logits)
    assert len(set(a)) > 5  # really sampling, not stuck on one token


def test_seeded_draws_follow_the_inverse_cdf_of_the_rng():
    """Each draw is the token whose cumulative probability first exceeds the generator's next uniform."""
    logits = random_logits(6, vocab=50, scale=1.0)
    settings = SamplingSettings(seed=99, **NO_FILTERS)
    got = draw_many(settings, 300, logits)
    probs = np.exp(logits.astype(np.float64) - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")  # the sampler's candidate order: best first
    cumulative = np.cumsum(probs[order])
    expected = [int(order[np.searchsorted(cumulative, (x >> 11) / 2.0 ** 53, side="right")])
                for x in splitmix64_numpy(99, 300)]
    assert got == expected


def test_unseeded_samplers_pick_different_seeds():
    assert Sampler(SamplingSettings()).seed != Sampler(SamplingSettings()).seed


def test_sampled_frequencies_match_probabilities():
    """Chi-square goodness of fit with a fixed seed: 20000 draws over 8 tokens."""
    probs = np.array([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.04, 0.01])
    logits = np.log(probs).astype(np.float32)
    n = 20000
    counts = np.bincount(draw_many(SamplingSettings(seed=2024, **NO_FILTERS), n, logits), minlength=8)
    chi_square = float(((counts - n * probs) ** 2 / (n * probs)).sum())
    assert chi_square < 24.3  # 99.9th percentile of chi-square with 7 degrees of freedom


def test_temperature_sharpens_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    cold = np.bincount(draw_many(SamplingSettings(seed=1, **dict(NO_FILTERS, temperature=0.25)), 2000, logits),
                       minlength=3)
    hot = np.bincount(draw_many(SamplingSettings(seed=1, **NO_FILTERS), 2000, logits), minlength=3)
    assert cold[0] > 0.8 * 2000 and 0.45 * 2000 < hot[0] < 0.55 * 2000


@pytest.mark.parametrize("temperature", [1e-320, 1e-30, 1e-3])
def test_a_tiny_temperature_samples_the_best_token_not_nan(temperature):
    """Dividing raw logits by 1e-320 overflows to inf and gave NaN probabilities (a wrong token); the limit of
    a vanishing temperature is the argmax."""
    logits = np.array([3.0, 9.5, -2.0, 9.0], dtype=np.float32)
    ids, probs = filtered_distribution(logits, SamplingSettings(**dict(NO_FILTERS, temperature=temperature)))
    assert np.isfinite(probs).all() and int(ids[0]) == 1 and probs[0] > 0.99
    assert set(draw_many(SamplingSettings(seed=5, **dict(NO_FILTERS, temperature=temperature)), 50, logits)) == {1}
