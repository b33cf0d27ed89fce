"""Tokenizer speed: the engine's regex-free pre-tokenizer (`re` + generated Unicode ranges) next to `regex`,
and the BPE merge on one very long word.

Encodes a mixed text (our test corpus, the package's source code, Chinese, emoji) with SmolLM2's tokenizer
twice per splitter: cold (empty word cache) and warm (every word cached, so the split dominates), and times
each pre-tokenizer pattern alone. Prints seconds and the ratio re / regex (below 1: ours is faster).
Then encodes 64,000 letters without a space against the same letters as words (cache cleared): the merge
is O(n log n) in a word's length, so the ratio stays small (target <= 3); a quadratic merge made it ~300.

    $ python bench/bench_tokenizer.py [--repeat 5]

Needs the models (scripts/setup.sh) and `regex` (the `[dev]` extras). Not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "support"))
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

from texts import TOKENIZER_CORPUS as CORPUS  # noqa: E402  (tests/support/texts.py)
from unicode_texts import RegexSpans  # noqa: E402  (tests/support/unicode_texts.py)

from pychat_wasm.tokenizers.pretokenizers import PRE_TOKENIZERS  # noqa: E402
from pychat_wasm.tokenizers import load_tokenizer  # noqa: E402
from pychat_wasm.tokenizers.unicode_regex import compile_unicode_regex  # noqa: E402


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    source = "".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "pychat_wasm").rglob("*.py")))
    text = "\n".join(CORPUS) * 20 + source[:100_000]
    print("text: %d characters" % len(text))

    tokenizer = load_tokenizer(SMOLLM2)
    splits = tokenizer.pre_tokenizer.splits
    print("%-34s %10s %10s %8s" % ("SmolLM2 encode", "re s", "regex s", "ratio"))
    for label, clear_cache in (("cold (word cache cleared)", True), ("warm (words cached)", False)):
        seconds = {}
        for name, compile_pattern in (("re", compile_unicode_regex), ("regex", RegexSpans)):
            tokenizer.patterns = [compile_pattern(p) for p in splits]
            tokenizer.encode(text)

            def encode():
                if clear_cache:
                    tokenizer.cache.clear()
                tokenizer.encode(text)
            seconds[name] = best_of(args.repeat, encode)
        print("%-34s %10.4f %10.4f %8.2f" % (label, seconds["re"], seconds["regex"], seconds["re"] / seconds["regex"]))

    print("%-34s %10s %10s %8s" % ("pattern alone (all matches)", "re s", "regex s", "ratio"))
    for pattern in sorted({p for pre in PRE_TOKENIZERS.values() for p in pre.splits}):
        ours, reference = compile_unicode_regex(pattern), RegexSpans(pattern)
        t_re = best_of(args.repeat, lambda: sum(1 for _ in ours.spans(text)))
        t_regex = best_of(args.repeat, lambda: sum(1 for _ in reference.spans(text)))
        print("%-34s %10.4f %10.4f %8.2f" % (pattern[:34], t_re, t_regex, t_re / t_regex))

    long_word_section(tokenizer, args.repeat)


def long_word_section(tokenizer, repeat: int) -> None:
    """One 64,000-letter word against the same letters split into words of 3 to 9 letters."""
    rng = random.Random(0)
    words = []
    while sum(map(len, words)) < 64_000:
        words.append("".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(rng.randint(3, 9))))
    joined, spaced = "".join(words)[:64_000], " ".join(words)
    tokenizer.patterns = [compile_unicode_regex(p) for p in tokenizer.pre_tokenizer.splits]

    def cold(text):
        return lambda: (tokenizer.cache.clear(), tokenizer.encode(text))

    t_word = best_of(min(repeat, 2), cold(joined))
    t_words = best_of(min(repeat, 2), cold(spaced))
    print("%-34s %10s %10s %8s" % ("64,000 letters (cache cleared)", "one word s", "words s", "ratio"))
    print("%-34s %10.4f %10.4f %8.2f" % ("SmolLM2 BPE", t_word, t_words, t_word / t_words))


if __name__ == "__main__":
    main()
