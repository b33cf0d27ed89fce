"""Pre-tokenizers of byte-level BPE, by `tokenizer.ggml.pre` name: the regexes that cut text into words.

A pre-tokenizer is a list of regexes applied in turn: each one re-cuts the pieces the previous one left,
and text between its matches stays a piece of its own (HF tokenizers' `Split(..., "isolated")`, llama.cpp's
`unicode_regex_split`). The regexes are llama.cpp's (`llm_tokenizer_bpe` in llama-vocab.cpp), written in
`regex` syntax and compiled for `re` by `unicode_regex`:

    gpt-2 (and phi-2, mpt, olmo, jais, ...) : GPT-2's regex
    llama3 / llama-bpe / llama-v3 / ...     : Llama 3's regex (numbers in groups of 1-3), whole-word tokens
                                              bypass the merges, BOS added by default
    qwen2 / stablelm2 / deepseek-r1-qwen    : Llama 3's regex with single digits
    qwen35                                  : Qwen 2's, with combining marks kept in words
    smollm / starcoder / refact / ...       : single digits, then GPT-2's regex
    falcon                                  : punctuation runs, then GPT-2's regex, then groups of 3 digits
    deepseek-llm / deepseek-coder           : line breaks, then letter runs, punctuation runs, CJK runs, digits
    gemma4                                  : newline runs apart from the rest, spaces as "▁", no byte alphabet
    default                                 : llama.cpp's default: punctuation runs, then GPT-2's regex,
                                              then digit runs, then groups of 3 digits
A missing or unknown name falls back to FALLBACK_PRE ("gpt-2", the regex byte-level BPE started with and
what transformers applies to names it does not know) with a warning.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, NamedTuple, Tuple

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_SPLITS = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]")
FALCON_SPLITS = (r"[\p{P}\$\+<=>\^~\|`]+", GPT2_SPLIT, r"[0-9][0-9][0-9]")
CJK_RUNS = "[一-龥ࠀ-一가-\ud7ff]+"  # CJK ideographs and Hangul syllables (and the blocks between)
DEEPSEEK_LLM_SPLITS = (
    r"[\r\n]",
    # letters of the cased scripts (Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee, Glagolitic, Coptic, ...)
    r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-"
    r"ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ"
    r"-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟\u3000-。]+",  # ASCII, full-width and CJK punctuation
    r"\s+$",
    CJK_RUNS,
    r"\p{N}+",
)
DEEPSEEK_CODER_SPLITS = (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_RUNS, r"\p{N}")
NEWLINE_RUNS = r"[^\n]+|[\n]+"


class PreTokenizer(NamedTuple):
    splits: Tuple[str, ...]  # regexes applied in turn
    ignore_merges: bool = False  # a word that is itself a token skips the merges (llama.cpp, Llama 3)
    add_bos: bool = False  # llama.cpp's default for `add_bos_token` when the metadata has none
    byte_level: bool = True  # words are spelled in GPT-2's byte alphabet; else raw text, spaces as "▁"


_GPT2 = PreTokenizer((GPT2_SPLIT,))
_LLAMA3 = PreTokenizer((LLAMA3_SPLIT,), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer((QWEN2_SPLIT,))
_DIGITS_THEN_GPT2 = PreTokenizer((r"\p{N}", GPT2_SPLIT))

PRE_TOKENIZERS: Dict[str, PreTokenizer] = {
    "default": PreTokenizer(DEFAULT_SPLITS),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                     "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4", "roberta-bpe",
                     "jina-v1-en", "jina-v2-code", "trillion", "granite-docling"), _GPT2),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano"), _LLAMA3),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((LLAMA3_SPLIT,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
                     "solar-open"), _QWEN2),
    "qwen35": PreTokenizer((QWEN35_SPLIT,)),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b",
                     "mellum2"), _DIGITS_THEN_GPT2),
    "falcon": PreTokenizer(FALCON_SPLITS),
    "deepseek-llm": PreTokenizer(DEEPSEEK_LLM_SPLITS),
    "deepseek-coder": PreTokenizer(DEEPSEEK_CODER_SPLITS),
    **dict.fromkeys(("gemma4", "granite-embed-multi-311m"), PreTokenizer((NEWLINE_RUNS,), add_bos=True,
                                                                         byte_level=False)),
}
FALLBACK_PRE = "gpt-2"


def resolve_pre_tokenizer(name: Any) -> Tuple[str, PreTokenizer]:
    """The pre-tokenizer for a `tokenizer.ggml.pre` name; unknown or missing names warn and fall back.

    >>> resolve_pre_tokenizer("llama-bpe")[1].ignore_merges
    True
    """
    if name in PRE_TOKENIZERS:
        return name, PRE_TOKENIZERS[name]
    warnings.warn("unknown pre-tokenizer tokenizer.ggml.pre = %r; using %r (known: %s)"
                  % (name, FALLBACK_PRE, ", ".join(sorted(PRE_TOKENIZERS))), stacklevel=3)
    return FALLBACK_PRE, PRE_TOKENIZERS[FALLBACK_PRE]


def split_pre_tokens(text: str, patterns: List[Any]) -> List[str]:
    """Cut `text` with each pattern in turn (anything with `spans(text)`, as `UnicodeRegex`); text between
    matches stays a piece of its own.

    >>> from pychat_wasm.tokenizers.unicode_regex import compile_unicode_regex
    >>> split_pre_tokens("Hello world123!", [compile_unicode_regex(GPT2_SPLIT)])
    ['Hello', ' world', '123', '!']
    >>> split_pre_tokens(" 42", [compile_unicode_regex(r"\\p{N}"), compile_unicode_regex(GPT2_SPLIT)])
    [' ', '4', '2']
    """
    pieces = [text] if text else []
    for pattern in patterns:
        cut: List[str] = []
        for piece in pieces:
            done = 0
            for start, end in pattern.spans(piece):
                if start == end:
                    continue
                if start > done:
                    cut.append(piece[done:start])
                cut.append(piece[start:end])
                done = end
            if done < len(piece):
                cut.append(piece[done:])
        pieces = cut
    return pieces
