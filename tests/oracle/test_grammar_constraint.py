"""GrammarConstraint over SmolLM2's real vocabulary, against the `regex` package's partial matching.

For grammars with an equivalent regular expression, a token may come next exactly when the text so far
plus the token's text is a prefix of some match (`regex.fullmatch(..., partial=True)`), and the end
token exactly when the text so far is a whole match. The trie walk behind `allowed_mask` and the
token-by-token `allowed` must both agree with that, over all 49,152 tokens.
"""
from __future__ import annotations

import numpy as np
import pytest
import regex

from pychat_wasm.errors import GrammarError
from pychat_wasm.grammar.constraint import GrammarConstraint
from pychat_wasm.grammar.gbnf import Grammar
from pychat_wasm.tokenizers import load_tokenizer

# (GBNF, the same language as a regular expression, a text to walk through it)
LANGUAGES = [
    ('root ::= [a-c]+ "!"', r"[a-c]+!", "abca!"),
    ('root ::= "yes" | "no" | "maybe"', r"yes|no|maybe", "maybe"),
    ('root ::= "{\\"n\\": " [0-9]{1,3} "}"', r'\{"n": [0-9]{1,3}\}', '{"n": 42}'),
    ('root ::= "café " [^\\n]* "\\n"', r"café [^\n]*\n", "café ☕ au lait\n"),
    ('root ::= ([A-Z] [a-z]* " "?)+', r"(?:[A-Z][a-z]* ?)+", "Hello World"),
    ('root ::= "🙂"{2} "ok"', r"🙂{2}ok", "🙂🙂ok"),
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    return load_tokenizer(str(smollm2_path))


def texts_of(tokenizer):
    return [tokenizer.token_bytes(t) for t in range(tokenizer.vocab_size)]


def completions(head: bytes, pattern: str):
    """Characters an unfinished UTF-8 sequence `head` could become: its range's ends and the pattern's own."""
    n = 4 if head[0] >= 0xF0 else 3 if head[0] >= 0xE0 else 2 if head[0] >= 0xC0 else 0
    if len(head) >= n or any(b >> 6 != 2 for b in head[1:]):
        return None  # not the start of a character
    low = int.from_bytes(head + b"\x80" * (n - len(head)), "big")
    high = int.from_bytes(head + b"\xbf" * (n - len(head)), "big")
    inside = [c.encode() for c in pattern if n == len(c.encode()) and low <= int.from_bytes(c.encode(), "big") <= high]
    return [b.decode("utf-8", "ignore") for b in [low.to_bytes(n, "big"), high.to_bytes(n, "big")] + inside]


def expected_mask(tokenizer, pattern: str, done: bytes) -> np.ndarray:
    """Ids whose bytes extend `done` to a prefix of a match; an unfinished character must be completable."""
    compiled = regex.compile(pattern)
    mask = np.zeros(tokenizer.vocab_size, dtype=bool)
    for t in range(tokenizer.vocab_size):
        raw = tokenizer.token_bytes(t)
        if tokenizer.is_special(t) or not raw:
            continue
        joined = done + raw
        for cut in range(4):  # the unfinished character at the end, if any, is `cut` bytes long
            head, tail = joined[:len(joined) - cut], joined[len(joined) - cut:]
            try:
                text = head.decode("utf-8")
            except UnicodeDecodeError:
                continue
            endings = completions(tail, pattern) if tail else [""]
            if endings is None:
                continue
            mask[t] = any(compiled.fullmatch(text + c, partial=True) is not None for c in endings if c or not tail)
            break
    return mask


@pytest.mark.parametrize("gbnf,pattern,walk", LANGUAGES, ids=[p for _, p, _ in LANGUAGES])
def test_masks_agree_with_regex_partial_matching(tokenizer, gbnf, pattern, walk):
    constraint = GrammarConstraint(Grammar.parse(gbnf), tokenizer)
    done = b""
    ends = sorted(tokenizer.end_of_turn_ids)
    for token in tokenizer.encode(walk, add_special=False):
        mask = constraint.allowed_mask()
        expected = expected_mask(tokenizer, pattern, done)
        wrong = np.flatnonzero(mask[:tokenizer.vocab_size] != expected)
        wrong = [t for t in wrong if t not in ends]
        assert not wrong, [(t, tokenizer.token_bytes(t), bool(mask[t])) for t in wrong[:10]]
        assert mask[ends].all() == (regex.fullmatch(pattern, done.decode("utf-8", "ignore")) is not None)
        sample = np.random.default_rng(0).choice(tokenizer.vocab_size, 300, replace=False)
        assert [constraint.allowed(int(t)) for t in sample] == mask[sample].tolist()
        assert mask[token], (done, tokenizer.token_bytes(token))
        constraint.accept(token)
        done += tokenizer.token_bytes(token)
    assert constraint.can_end
    assert constraint.is_done == (not np.delete(constraint.allowed_mask(), ends).any())  # nothing may follow
    constraint.accept(tokenizer.eos_id)
    assert constraint.is_done and not constraint.allowed_mask().any()


def test_a_character_split_across_byte_tokens(tokenizer):
    """"é" as two byte tokens: the first is allowed only where a character in é's range may come."""
    constraint = GrammarConstraint(Grammar.parse('root ::= [à-ÿ] "!"'), tokenizer)
    first, second = [tokenizer.token_ids[tokenizer.tokens[t]] for t in range(tokenizer.vocab_size)
                      if tokenizer.token_bytes(t) in (b"\xc3",)][0], None
    second = [t for t in range(tokenizer.vocab_size) if tokenizer.token_bytes(t) == b"\xa9"][0]
    assert constraint.allowed(first)
    constraint.accept(first)
    assert constraint.allowed(second) and not constraint.allowed(tokenizer.encode("!", add_special=False)[0])
    assert not constraint.can_end  # a character is unfinished
    constraint.accept(second)
    assert constraint.allowed(tokenizer.encode("!", add_special=False)[0])


def test_special_tokens_and_the_end(tokenizer):
    constraint = GrammarConstraint(Grammar.parse('root ::= "hi" | "hi there"'), tokenizer)
    im_start = tokenizer.token_ids["<|im_start|>"]
    assert not constraint.allowed(im_start) and not constraint.allowed(tokenizer.eos_id)
    constraint.accept(tokenizer.encode("hi", add_special=False)[0])
    assert constraint.allowed(tokenizer.eos_id) and not constraint.allowed(im_start)
    with pytest.raises(GrammarError, match="not allowed"):
        constraint.accept(tokenizer.encode("!", add_special=False)[0])
    by_id = GrammarConstraint(Grammar.parse("root ::= <[%d]> \"x\"" % im_start), tokenizer)
    assert by_id.allowed_mask().sum() == 1 and by_id.allowed(im_start)
