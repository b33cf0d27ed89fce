"""Tokenizers read from GGUF metadata: the shared base, special tokens, byte handling and streaming.

A GGUF file carries its tokenizer as metadata under llama.cpp's key names (`tokenizer.ggml.*`). Three
kinds of model cover the files we run, and each lives in its own module:

    tokenizer.ggml.model = "llama"  ->  tokenizer_spm.SPMTokenizer   (SentencePiece: scores, "▁", <0xNN>)
    tokenizer.ggml.model = "gpt2"   ->  tokenizer_bpe.BPETokenizer   (byte-level BPE: merge ranks, regexes)
    tokenizer.ggml.model = "gemma4" ->  tokenizer_bpe.BPETokenizer   (BPE on text with "▁" for spaces)
    tokenizer.ggml.model = "bert"   ->  tokenizer_wpm.WPMTokenizer   (WordPiece: BERT's normalizer, longest match)

They follow llama.cpp's `llama-vocab.cpp`, which the files are made for:
1. Special tokens written in the text (control, user-defined and unknown tokens) are cut out first and
   become single ids; the pieces of plain text between them go to the model-specific `_encode_text`.
   User-defined tokens (Gemma's "\\n\\n", "  ", "<table>") are always cut out, control tokens
   ("<|im_start|>", "<start_of_turn>") only when `parse_special` is on. Where two could match, the
   leftmost, then longest wins (as in HF tokenizers' added-token matching).
2. BOS/EOS are added when `add_special` is on and the metadata's `add_bos_token`/`add_eos_token` say so.
3. Every token contributes bytes (`token_bytes`); decoding joins them and decodes UTF-8 once, so a
   character split across byte tokens comes out whole. `StreamDecoder` does the same one id at a time.

    >>> tok = load_tokenizer("models/SmolLM2-135M-Instruct.Q4_1.gguf")      # doctest: +SKIP
    >>> tok.encode("<|im_start|>user\\nHi")                                  # doctest: +SKIP
    [1, 4093, 198, 17912]
    >>> tok.decode([1, 4093, 198, 17912])                                  # doctest: +SKIP
    '<|im_start|>user\\nHi'
"""
from __future__ import annotations

import codecs
import re
from typing import Any, Dict, Iterable, List, Optional, Set, Union

import numpy as np

from ..errors import TokenizerError

SPACE = "\u2581"  # "▁", how SentencePiece (and Gemma 4's BPE) writes a space

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Token texts llama.cpp treats as end of generation (its `special_eog_ids`), plus the fill-in-the-middle
# pad/repo/separator tokens it also stops on.
END_OF_TURN_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    "<|file_sep|>",
)
END_OF_TURN_ID_KEYS = ("eos_token_id", "eot_token_id", "eom_token_id")
SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    r"""`text` as a browser's TextEncoder reads it: a surrogate pair becomes its character, a lone surrogate
    U+FFFD. Strings from JS or from JSON escapes can hold lone surrogates; UTF-8, and so every tokenizer,
    cannot.

    >>> well_formed("a\ud800b") == "a\ufffdb", well_formed("\ud83d\ude00") == "\U0001f600"
    (True, True)
    """
    if not SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class SpecialTokenMatcher:
    """Finds special tokens in text: candidate starts by first character, then the longest text there.

    Cheap to build for thousands of tokens (Gemma has 6,400): one dict and one character class.
    """

    def __init__(self, specials: Dict[str, int]):
        self.ids = specials
        lengths: Dict[str, Set[int]] = {}
        for text in specials:
            lengths.setdefault(text[0], set()).add(len(text))
        self.lengths_by_first = {c: sorted(ls, reverse=True) for c, ls in lengths.items()}
        chars = "".join(re.escape(c) for c in sorted(lengths))
        self.starts = re.compile("[%s]" % chars) if chars else None

    def split(self, text: str) -> List[Union[str, int]]:
        """Cut `text` into plain strings and the ids of the special tokens written in it.

        >>> SpecialTokenMatcher({"<b>": 7, "<": 1}).split("a<b>c<d")
        ['a', 7, 'c', 1, 'd']
        """
        pieces: List[Union[str, int]] = []
        if self.starts is None:
            return [text] if text else []
        done = pos = 0  # `done`: end of the last emitted piece; `pos`: where to look next
        while True:
            m = self.starts.search(text, pos)
            if m is None:
                break
            start = m.start()
            for n in self.lengths_by_first[text[start]]:
                token_id = self.ids.get(text[start:start + n])
                if token_id is not None:
                    if start > done:
                        pieces.append(text[done:start])
                    pieces.append(token_id)
                    done = pos = start + n
                    break
            else:
                pos = start + 1
        if done < len(text):
            pieces.append(text[done:])
        return pieces


class StreamDecoder:
    """Turns ids into text one at a time, holding back bytes until they form whole UTF-8 characters.

    >>> class Bytes:  # a stand-in tokenizer whose token i is the single byte i
    ...     add_space_prefix = False
    ...     def token_bytes(self, i): return bytes([i])
    ...     def is_special(self, i): return False
    >>> d = StreamDecoder(Bytes())
    >>> [d.feed(b) for b in "é!".encode()], d.flush()
    (['', 'é', '!'], '')
    """

    def __init__(self, tokenizer: Any, skip_special: bool = False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.first = True

    def feed(self, token_id: int) -> str:
        if self.skip_special and self.tokenizer.is_special(token_id):
            return ""
        raw = self.tokenizer.token_bytes(token_id)
        if self.first and self.tokenizer.add_space_prefix and raw.startswith(b" "):
            raw = raw[1:]  # the space the encoder put in front of the text
        self.first = False
        return self.utf8.decode(raw)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character becomes U+FFFD)."""
        return self.utf8.decode(b"", final=True)


class Tokenizer:
    """What every tokenizer shares. Subclasses implement `_encode_text` and `_normal_token_bytes`."""

    kind = ""

    def __init__(self, metadata: Dict[str, Any], pre: str = "default", add_bos_default: bool = False):
        self.tokens: List[str] = read_string_list(metadata, "tokenizer.ggml.tokens")
        self.vocab_size = len(self.tokens)
        self.token_types: List[int] = read_number_list(metadata, "tokenizer.ggml.token_type", self.vocab_size,
                                                       default=NORMAL)
        self.token_ids: Dict[str, int] = dict(zip(self.tokens, range(self.vocab_size)))
        if len(self.token_ids) != self.vocab_size:
            raise TokenizerError("tokenizer.ggml.tokens holds %d duplicate tokens"
                                 % (self.vocab_size - len(self.token_ids)))
        self.pre = pre
        self.bos_id = self._token_id(metadata, "bos_token_id")
        self.eos_id = self._token_id(metadata, "eos_token_id")
        self.unk_id = self._token_id(metadata, "unknown_token_id")
        self.add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", add_bos_default))
        self.add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
        self.add_space_prefix = False
        for flag, token_id, name in ((self.add_bos, self.bos_id, "bos"), (self.add_eos, self.eos_id, "eos")):
            if flag and token_id is None:
                raise TokenizerError("tokenizer.ggml.add_%s_token is true, but tokenizer.ggml.%s_token_id is "
                                     "not set" % (name, name))
        self.end_of_turn_ids = self._end_of_turn_ids(metadata)
        # id -> type of the tokens matched in text; like llama.cpp, end-of-turn tokens count as control
        self.special_types = {i: t for i, t in enumerate(self.token_types) if t in (CONTROL, USER_DEFINED, UNKNOWN)}
        for i in self.end_of_turn_ids:
            self.special_types.setdefault(i, CONTROL)
        self._matchers: Dict[bool, SpecialTokenMatcher] = {}  # built on first use, by parse_special

    # -- loading helpers ---------------------------------------------------------------------------

    def _token_id(self, metadata: Dict[str, Any], key: str) -> Optional[int]:
        value = metadata.get("tokenizer.ggml." + key)
        if value is None:
            return None
        if not isinstance(value, int) or not 0 <= value < self.vocab_size:
            raise TokenizerError("tokenizer.ggml.%s = %r is not a token id (vocabulary has %d tokens)"
                                 % (key, value, self.vocab_size))
        return value

    def _end_of_turn_ids(self, metadata: Dict[str, Any]) -> Set[int]:
        """Ids from the metadata plus the tokens llama.cpp recognises by text, except user-defined ones:
        those are plain text the model writes (Gemma's "</s>" is an HTML tag, not an end of turn)."""
        ids = {self._token_id(metadata, key) for key in END_OF_TURN_ID_KEYS}
        by_text = (self.token_ids.get(text) for text in END_OF_TURN_TEXTS)
        ids.update(i for i in by_text if i is not None and self.token_types[i] != USER_DEFINED)
        ids.discard(None)
        return ids  # type: ignore[return-value]

    # -- encoding ----------------------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> List[int]:
        """Token ids of `text` (lone surrogates read as U+FFFD); BOS/EOS as the metadata says when `add_special`."""
        text = well_formed(text)
        ids: List[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)  # type: ignore[arg-type]
        after_special = True
        for piece in self._special_matcher(parse_special).split(text):
            if isinstance(piece, int):
                ids.append(piece)
                after_special = True
            else:
                ids.extend(self._encode_text(piece, after_special))
                after_special = False
        if add_special and self.add_eos:
            ids.append(self.eos_id)  # type: ignore[arg-type]
        return ids

    def _special_matcher(self, parse_special: bool) -> SpecialTokenMatcher:
        matcher = self._matchers.get(parse_special)
        if matcher is None:
            wanted = (CONTROL, USER_DEFINED, UNKNOWN) if parse_special else (USER_DEFINED,)
            matcher = SpecialTokenMatcher({self.tokens[i]: i for i, t in self.special_types.items() if t in wanted})
            self._matchers[parse_special] = matcher
        return matcher

    def _encode_text(self, text: str, after_special: bool) -> List[int]:
        """Ids of plain text that holds no special token; `after_special`: it starts the text or follows one."""
        raise NotImplementedError

    # -- decoding ----------------------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token contributes to the decoded text."""
        kind = self.token_types[token_id]
        text = self.tokens[token_id]
        if kind == NORMAL:
            return self._normal_token_bytes(text)
        if kind == BYTE:
            value = byte_token_value(text)
            return bytes([value]) if value is not None else b""
        if token_id in self.special_types:
            return text.encode("utf-8")  # control, user-defined, unknown: their text as written
        return b""  # unused or undefined tokens stand for nothing

    def _normal_token_bytes(self, text: str) -> bytes:
        """The bytes of a normal token, spelled in the model's alphabet ("▁" or byte-level characters)."""
        raise NotImplementedError

    def token_text(self, token_id: int) -> str:
        """The token as the vocabulary spells it, e.g. 'Ġworld' or '▁world' or '<0x0A>'."""
        return self.tokens[token_id]

    def is_special(self, token_id: int) -> bool:
        """Control, user-defined or unknown token: dropped by `decode(..., skip_special=True)`."""
        return token_id in self.special_types

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        decoder = self.stream_decoder(skip_special)
        return "".join(decoder.feed(i) for i in ids) + decoder.flush()

    def stream_decoder(self, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special)

    def __repr__(self) -> str:
        return "<%s %s pre=%s vocab=%d bos=%s eos=%s>" % (type(self).__name__, self.kind, self.pre,
                                                         self.vocab_size, self.bos_id, self.eos_id)


def byte_token_value(text: str) -> Optional[int]:
    """The byte a "<0xNN>" token stands for, or None for any other text.

    >>> byte_token_value("<0x0A>"), byte_token_value("<0xF0>"), byte_token_value("hello")
    (10, 240, None)
    """
    if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
        try:
            return int(text[3:5], 16)
        except ValueError:
            return None
    return None


def read_string_list(metadata: Dict[str, Any], key: str) -> List[str]:
    value = metadata.get(key)
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise TokenizerError("%s is missing or not a list of strings: this GGUF has no usable vocabulary" % key)
    return value


def read_number_list(metadata: Dict[str, Any], key: str, n: int, default: Any) -> List[Any]:
    """A per-token array that must have one value per token; `default` for every token if absent."""
    value = metadata.get(key)
    if value is None:
        return [default] * n
    if isinstance(value, np.ndarray) and value.ndim == 1 and len(value) == n:  # the reader keeps arrays over
        value = value.tolist()                                                  # 1M numbers in numpy
    if not isinstance(value, list) or len(value) != n:
        raise TokenizerError("%s must have one value for each of the %d tokens, found %s"
                             % (key, n, len(value) if isinstance(value, (list, np.ndarray)) else type(value).__name__))
    return value
