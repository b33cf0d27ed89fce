"""Pick the next token from the logits: greedy, or temperature + top-k + top-p + min-p, with penalties.

The pipeline follows the order of Hugging Face `generate()`: repetition penalty, temperature, top-k, top-p,
min-p, then one draw from the remaining distribution. A temperature of 0 means greedy decoding (argmax after
the penalties). OpenAI's frequency and presence penalties come right after the repetition penalty, as in
llama.cpp's penalties sampler; they count the tokens of the answer so far (`Sampler.begin_answer` starts one).

The settings a user chooses (CLI options, the page's form) become SamplingSettings through
settings_from_mapping, which checks each one against its SETTING_RULES entry.

Reproducibility: given the same logits, the same seed gives the same tokens on every platform (CPython +
numpy, Pyodide's Python + numpy in wasm). The random numbers come from our own SplitMix64 in Python integers, ties are
broken by token id with a stable sort, and the probabilities are computed in float64.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from ..errors import InvalidSettingsError

_MASK64 = (1 << 64) - 1
MAX_TEMPERATURE = 10  # far past where the answers are noise; a bound keeps typos like 70 from slipping through


@dataclass(frozen=True)
class SamplingSettings:
    """Generation settings shared by the CLI and the web UI (the defaults live here and nowhere else).

    temperature     0.7   0 = greedy (the same answer every time; the repeat penalty still applies); higher =
                          more varied answers
    top_k           40    keep the 40 most likely tokens (0 = off)
    top_p           0.95  keep the smallest set of tokens whose probability adds up to 0.95 (1 = off)
    min_p           0.05  drop tokens less than 5% as likely as the best one (0 = off)
    repeat_penalty  1.1   make tokens seen in the last `repeat_last_n` tokens less likely (1 = off)
    repeat_last_n   64    how many recent tokens (prompt included) the penalty looks at
    max_tokens      512   longest answer, in tokens
    seed            None  None = a fresh random seed per session; an int gives reproducible answers
    frequency_penalty 0   OpenAI's: lower a token's logit by this times how often the answer holds it (0 = off)
    presence_penalty 0    OpenAI's: lower a token's logit by this once the answer holds it (0 = off)

    The values a user may choose are in SETTING_RULES; settings_from_mapping checks them.

    >>> SamplingSettings(temperature=0).is_greedy
    True
    """

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    max_tokens: int = 512
    seed: Optional[int] = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def is_greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class SettingRule:
    """The values one sampling setting accepts, and its name as a user sees it."""

    label: str  # as the CLI's --help and the page's form name it
    whole: bool  # an integer setting: a whole float such as 5.0 (JSON has no integers of its own) is accepted
    low: Union[int, float]
    high: Union[int, float] = math.inf
    low_excluded: bool = False  # the range starts just above `low`
    hint: str = ""  # what a special value means

    def describe(self) -> str:
        """'a whole number of at least 1', 'a number above 0 and at most 1 (1 = off)', ..."""
        bounded = self.high != math.inf
        if self.low_excluded:
            bounds = "above %s" % self.low + (" and at most %s" % self.high if bounded else "")
        else:
            bounds = "from %s to %s" % (self.low, self.high) if bounded else "of at least %s" % self.low
        hint = " (%s)" % self.hint if self.hint else ""
        return "%s %s%s" % ("a whole number" if self.whole else "a number", bounds, hint)

    def checked(self, value: Any) -> Union[int, float]:
        """`value` as an int (whole settings) or a float; InvalidSettingsError if the rule refuses it."""
        number = self._as_number(value)
        if number is None or not self._in_range(number):
            raise InvalidSettingsError("%s must be %s, not %r" % (self.label, self.describe(), value))
        return number

    def _in_range(self, number: Union[int, float]) -> bool:
        above_low = number > self.low if self.low_excluded else number >= self.low
        return above_low and number <= self.high

    def _as_number(self, value: Any) -> Optional[Union[int, float]]:
        """The number `value` stands for, or None for a bool, a text, NaN, infinity or a fraction of a whole."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        if self.whole:
            if isinstance(value, numbers.Integral):
                return int(value)
            return int(value) if math.isfinite(value) and float(value).is_integer() else None
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range
            return None
        return number if math.isfinite(number) else None


SETTING_RULES = {
    "temperature": SettingRule("temperature", False, 0, MAX_TEMPERATURE, hint="0 = greedy"),
    "top_k": SettingRule("top-k", True, 0, hint="0 = off"),
    "top_p": SettingRule("top-p", False, 0, 1, low_excluded=True, hint="1 = off"),
    "min_p": SettingRule("min-p", False, 0, 1, hint="0 = off"),
    "repeat_penalty": SettingRule("repeat penalty", False, 0, low_excluded=True, hint="1 = off"),
    "repeat_last_n": SettingRule("repeat last n", True, 0, hint="0 = off"),
    "max_tokens": SettingRule("max tokens", True, 1),
    "seed": SettingRule("seed", True, 0, 2 ** 63 - 1),
    "frequency_penalty": SettingRule("frequency penalty", False, -2, 2, hint="0 = off"),
    "presence_penalty": SettingRule("presence penalty", False, -2, 2, hint="0 = off"),
}


def settings_from_mapping(values: Mapping[str, Any], base: SamplingSettings = SamplingSettings()) -> SamplingSettings:
    """`base` changed by `values`, each value checked by its SETTING_RULES entry: the one path by which the CLI's
    options and the API's arguments (the page's form among them) become settings, with the same messages.

    Keys are SamplingSettings' field names; unknown keys are ignored and a None value keeps base's value.

    >>> settings_from_mapping({"temperature": 0, "top_k": 5.0, "seed": None, "colour": "blue"}).top_k
    5
    >>> settings_from_mapping({"max_tokens": 0})
    Traceback (most recent call last):
    pychat_wasm.errors.InvalidSettingsError: max tokens must be a whole number of at least 1, not 0
    """
    if not isinstance(values, Mapping):
        raise InvalidSettingsError("the settings must map names to values, not be a %s" % type(values).__name__)
    changes = {name: rule.checked(values[name]) for name, rule in SETTING_RULES.items()
               if values.get(name) is not None}
    return replace(base, **changes)


class SplitMix64:
    """Sebastiano Vigna's SplitMix64 generator in plain Python integers: identical on every platform.

    >>> hex(SplitMix64(0).next_u64())
    '0xe220a8397b1dcdaf'
    """

    def __init__(self, seed: int):
        self.state = seed & _MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A float in [0, 1) built from the top 53 bits (exactly representable, so no rounding differences)."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


def random_seed() -> int:
    """A fresh 63-bit seed from the operating system (works in Pyodide too)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def apply_repetition_penalty(logits: np.ndarray, recent_tokens: Sequence[int], penalty: float) -> np.ndarray:
    """Divide positive logits (multiply negative ones) of every token seen in `recent_tokens` by `penalty`.

    >>> apply_repetition_penalty(np.array([2.0, -2.0, 1.0]), [0, 1, 1], 2.0).tolist()
    [1.0, -4.0, 1.0]
    """
    logits = np.array(logits, dtype=np.float64)  # [vocab], a copy
    if penalty == 1.0 or len(recent_tokens) == 0:
        return logits
    seen = np.unique(np.asarray(recent_tokens, dtype=np.int64))  # [n_unique]
    seen_logits = logits[seen]
    logits[seen] = np.where(seen_logits < 0, seen_logits * penalty, seen_logits / penalty)
    return logits


def apply_frequency_presence_penalties(logits: np.ndarray, answer_tokens: Sequence[int], frequency: float,
                                       presence: float) -> np.ndarray:
    """OpenAI's penalties: logit[j] -= count[j] * frequency + (count[j] > 0) * presence, count[j] being how often
    token j is in `answer_tokens` (the tokens sampled so far). Changes `logits` in place and returns it.

    >>> apply_frequency_presence_penalties(np.array([2.0, 2.0, 1.0]), [0, 0, 2], 0.5, 0.25).tolist()
    [0.75, 2.0, 0.25]
    """
    if (frequency == 0.0 and presence == 0.0) or len(answer_tokens) == 0:
        return logits
    ids, counts = np.unique(np.asarray(answer_tokens, dtype=np.int64), return_counts=True)  # [n_unique] each
    logits[ids] -= counts * frequency + presence
    return logits


def top_k_candidates(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Ids of the `top_k` largest logits, best first, ties broken by the lower id (all ids if top_k <= 0).

    The k-th largest value comes from np.partition (a value, hence deterministic); only the survivors are
    sorted, so this stays cheap for a 50k-262k vocabulary.

    >>> top_k_candidates(np.array([1.0, 3.0, 3.0, 2.0]), 2).tolist()
    [1, 2]
    """
    vocab = logits.shape[0]
    if 0 < top_k < vocab:
        kth_largest = np.partition(logits, vocab - top_k)[vocab - top_k]
        ids = np.nonzero(logits >= kth_largest)[0]  # [>= top_k] ascending ids
    else:
        ids = np.arange(vocab)
    order = np.argsort(-logits[ids], kind="stable")  # best first; equal logits keep ascending id order
    return ids[order][: top_k if top_k > 0 else vocab]


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Softmax in float64: last-bit differences between numpy builds are far too small to move a draw."""
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits)
    weights = np.exp(shifted)
    return weights / weights.sum()


def top_p_cutoff(sorted_probs: np.ndarray, top_p: float) -> int:
    """How many of the best-first probabilities to keep: a token stays while the mass before it is < top_p.

    >>> top_p_cutoff(np.array([0.5, 0.3, 0.2]), 0.8)
    2
    """
    if top_p >= 1.0:
        return sorted_probs.shape[0]
    mass_before = np.cumsum(sorted_probs) - sorted_probs  # [n]
    return max(1, int(np.count_nonzero(mass_before < top_p)))


def min_p_cutoff(sorted_probs: np.ndarray, min_p: float) -> int:
    """How many of the best-first probabilities are at least `min_p` times the best one (at least 1)."""
    if min_p <= 0.0:
        return sorted_probs.shape[0]
    return max(1, int(np.count_nonzero(sorted_probs >= min_p * sorted_probs[0])))


def filtered_distribution(logits: np.ndarray, settings: SamplingSettings):
    """Candidate ids (best first) and their renormalized probabilities after temperature, top-k, top-p, min-p.

    The penalty is applied by the caller. Returns (ids [n], probs [n] float64).
    """
    logits = np.asarray(logits, dtype=np.float64)  # [vocab]
    with np.errstate(over="ignore"):  # shifted to a maximum of 0 first: a tiny temperature gives -inf, never NaN
        scaled = (logits - logits.max()) / settings.temperature  # [vocab]
    ids = top_k_candidates(scaled, settings.top_k)  # [k]
    probs = softmax64(scaled[ids])  # [k], renormalized over the survivors as HF's chained warpers do
    keep = top_p_cutoff(probs, settings.top_p)
    ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
    keep = min_p_cutoff(probs, settings.min_p)
    ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
    return ids, probs


def draw_index(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw: the first index whose cumulative probability exceeds `u` in [0, 1).

    >>> draw_index(np.array([0.25, 0.5, 0.25]), 0.3)
    1
    """
    cumulative = np.cumsum(probs)  # [n]
    index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    return min(index, probs.shape[0] - 1)


class Sampler:
    """Turns logits into token ids with `SamplingSettings`; owns the random generator.

    >>> Sampler(SamplingSettings(temperature=0)).sample(np.array([0.1, 2.0, 0.3]), recent_tokens=[])
    1
    """

    def __init__(self, settings: SamplingSettings = SamplingSettings()):
        self.seed: Optional[int] = None
        self.use(settings)

    def use(self, settings: SamplingSettings) -> None:
        """Sample with `settings` from now on. The fixed seed in use continues its random stream, so turn after
        turn a seeded conversation is one reproducible stream; another seed, or none, starts a new stream."""
        if settings.seed is None or settings.seed != self.seed:
            self.seed = settings.seed if settings.seed is not None else random_seed()
            self.rng = SplitMix64(self.seed)
        self.settings = settings
        self.answer_tokens: List[int] = []  # sampled since begin_answer: what the frequency/presence penalties count

    def begin_answer(self) -> None:
        """A new answer starts: the frequency and presence penalties count from here."""
        self.answer_tokens = []

    @property
    def must_end(self) -> bool:
        """Whether the answer is complete after the token just sampled: never for free sampling (a constrained
        sampler, api/structured.py, says so once its grammar can only end)."""
        return False

    def sample(self, logits: np.ndarray, recent_tokens: Sequence[int]) -> int:
        """The next token id; `recent_tokens` is the token history (only its last repeat_last_n count)."""
        settings = self.settings
        window = recent_tokens[-settings.repeat_last_n:] if settings.repeat_last_n > 0 else []
        penalized = apply_repetition_penalty(logits, window, settings.repeat_penalty)  # [vocab] float64
        apply_frequency_presence_penalties(penalized, self.answer_tokens, settings.frequency_penalty,
                                           settings.presence_penalty)
        if settings.is_greedy:
            token = int(np.argmax(penalized))  # first maximum: the lowest id wins ties
        else:
            ids, probs = filtered_distribution(penalized, settings)
            token = int(ids[draw_index(probs, self.rng.uniform())])
        self.answer_tokens.append(token)
        return token

