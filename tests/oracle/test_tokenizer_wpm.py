"""WordPiece (`tokenizer.ggml.model = bert`) against HF tokenizers, beyond llama.cpp's suite.

The vocabulary is the suite's bge one (test_llama_cpp_tokenizer_suite.py checks its ids against llama.cpp).
Here HF tokenizers' BERT pieces are the reference: `BertNormalizer` + `BertPreTokenizer` for the words, and a
`WordPiece` model over the same vocabulary written back in BERT's spelling ("▁hello" -> "hello",
"fe" -> "##fe") for the ids. On ordinary text the two agree; on rare characters llama.cpp (and we) differ
from HF on purpose: accents are stripped by taking the first character of the NFD, and every mark goes.
"""
from __future__ import annotations

import pytest

from pychat_wasm.errors import TokenizerError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers import load_tokenizer
from pychat_wasm.tokenizers.base import CONTROL
from pychat_wasm.tokenizers.wpm import words_of

from llama_cpp_vocabs import MissingSuite, vocab_path
from texts import BPE_PROBES, TOKENIZER_CORPUS

TEXTS = TOKENIZER_CORPUS + BPE_PROBES + ["Äpfel und Birnen", "ÉCOLE Ñandú façade", "ﬁne ½ ² ①", "tab\tand\u00a0nbsp\u2003em"]


@pytest.fixture(scope="module")
def bert_metadata():
    try:
        return GGUFFile.open(str(vocab_path("bert-bge"))).metadata
    except MissingSuite as missing:
        pytest.fail(str(missing))


@pytest.fixture(scope="module")
def hf_bert(bert_metadata):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tokens, types = bert_metadata["tokenizer.ggml.tokens"], bert_metadata["tokenizer.ggml.token_type"]
    spelled = [t if kind == CONTROL else t[1:] if t.startswith("\u2581") else "##" + t for t, kind in zip(tokens, types)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(spelled)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def test_words_match_hf_bert_normalizer_and_pre_tokenizer():
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                            lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    for text in TEXTS:
        assert words_of(text, strip_accents=True, lowercase=True) == \
            [w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text))], text


def test_ids_match_hf_wordpiece(bert_metadata, hf_bert):
    bert = load_tokenizer(bert_metadata)
    for text in TEXTS:
        ids = bert.encode(text, add_special=False, parse_special=False)
        assert ids == hf_bert.encode(text, add_special_tokens=False).ids, text
    assert bert.unk_id in bert.encode("\U0001d5c3\U0001d79b", add_special=False)  # no token spells these


def test_cls_and_sep_frame_the_ids(bert_metadata):
    bert = load_tokenizer(bert_metadata)
    content = bert.encode("Hello world", add_special=False)
    assert bert.encode("Hello world") == [101] + content + [102]  # [CLS] ... [SEP], as llama.cpp adds them
    assert bert.encode("[CLS]x", add_special=False)[0] == 101  # a control token, cut out with parse_special
    assert bert.decode(content) == " hello world"


def test_normalizer_flags_from_metadata(bert_metadata):
    keep_case = load_tokenizer(dict(bert_metadata, **{"tokenizer.ggml.normalizer.lowercase": False}))
    assert (keep_case.lowercase, keep_case.strip_accents) == (False, False)  # strip_accents follows lowercase
    assert words_of("Äb", strip_accents=False, lowercase=False) == ["Äb"]


def test_missing_unknown_token_is_a_tokenizer_error(bert_metadata):
    with pytest.raises(TokenizerError, match="unknown_token_id"):
        load_tokenizer({k: v for k, v in bert_metadata.items() if k != "tokenizer.ggml.unknown_token_id"})
