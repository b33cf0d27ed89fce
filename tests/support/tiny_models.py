"""Writers of tiny GGUF models (all through gguf_files.write_gguf): random ones, one per supported architecture,
for oracle tests, and payload models that answer one given text, for the page and the replay tests.

Each file is a complete little model that transformers' GGUF loader accepts (metadata, a small
tokenizer vocabulary, every tensor its architecture needs), with the weights in a mix of ggml
types so that the engine's dequantization and storage policies are exercised too:

    >>> path = write_tiny_model(tmp_path / "llama.gguf", "llama")     # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="llama.gguf")  # doctest: +SKIP

Shapes follow llama.cpp's layout: a matrix [out_features, in_features] is stored with rows of
`in_features`, which must be a multiple of 32 for the block-quantized types.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quantize

from pychat_wasm.chat.template import CHATML_TEMPLATE
from pychat_wasm.tokenizers.bpe import bytes_to_unicode

from gguf_files import write_gguf


class TinySpec(NamedTuple):
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    n_layers: int
    vocab_size: int
    context_length: int
    tied_output: bool
    sliding_window: int  # 0: none
    chat: bool = False  # a vocabulary that writes any text (chat_vocabulary) instead of a placeholder one


TINY_SPECS: Dict[str, TinySpec] = {
    # llama: GQA (4 query heads share 2 kv heads), tied output like SmolLM2
    "llama": TinySpec(dim=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, n_layers=2,
                      vocab_size=96, context_length=64, tied_output=True, sliding_window=0),
    # qwen2: q/k/v biases and a separate output head
    "qwen2": TinySpec(dim=64, n_heads=4, n_kv_heads=1, head_dim=16, ffn_dim=128, n_layers=2,
                      vocab_size=80, context_length=64, tied_output=False, sliding_window=0),
    # gemma3: head_dim 256 (transformers' default query_pre_attn_scalar), 6 layers so that layer 5
    # is global, and a sliding window of 4 so that a 12-token test sequence crosses it.
    "gemma3": TinySpec(dim=64, n_heads=2, n_kv_heads=1, head_dim=256, ffn_dim=96, n_layers=6,
                       vocab_size=64, context_length=64, tied_output=True, sliding_window=4),
    # qwen3: q/k norms, no biases, and attention.key_length 128 (transformers' Qwen3 default head_dim), not
    # dim / n_heads = 16, so that reading the head dimension from the file matters
    "qwen3": TinySpec(dim=64, n_heads=4, n_kv_heads=2, head_dim=128, ffn_dim=96, n_layers=2,
                      vocab_size=72, context_length=64, tied_output=True, sliding_window=0),
    # phi3: q, k, v in one attn_qkv matrix (GQA, so the three blocks differ), gate and up in one ffn_up
    "phi3": TinySpec(dim=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, n_layers=2,
                     vocab_size=88, context_length=64, tied_output=False, sliding_window=0),
}

# Token ids the oracle tests feed every tiny model (all below the smallest vocabulary, 64): 12 positions
# cross the tiny gemma3's sliding window of 4.
TINY_TOKENS = [1, 7, 3, 30, 12, 9, 41, 5, 17, 60, 2, 33]

# The ggml type each matrix is stored in: a spread of the types the real models use.
_MATRIX_TYPES = {
    "token_embd": Q.Q8_0, "output": Q.F16,
    "attn_q": Q.Q4_1, "attn_k": Q.Q5_0, "attn_v": Q.Q8_0, "attn_qkv": Q.Q4_1, "attn_output": Q.Q4_0,
    "ffn_gate": Q.Q5_1, "ffn_up": Q.F32, "ffn_down": Q.Q4_1,
}


def _tensor_shapes(arch: str, s: TinySpec) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, numpy shape) of every tensor of the architecture, in llama.cpp's naming."""
    q_dim, kv_dim = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    shapes = [("token_embd.weight", (s.vocab_size, s.dim)), ("output_norm.weight", (s.dim,))]
    if not s.tied_output:
        shapes.append(("output.weight", (s.vocab_size, s.dim)))
    for i in range(s.n_layers):
        blk = "blk.%d." % i
        shapes += [(blk + "attn_norm.weight", (s.dim,))]
        if arch == "phi3":  # llama.cpp's fused layout: q, k, v rows in one matrix; the gate's rows, then up's
            shapes += [(blk + "attn_qkv.weight", (q_dim + 2 * kv_dim, s.dim)),
                       (blk + "attn_output.weight", (s.dim, q_dim)),
                       (blk + "ffn_norm.weight", (s.dim,)),
                       (blk + "ffn_up.weight", (2 * s.ffn_dim, s.dim)),
                       (blk + "ffn_down.weight", (s.dim, s.ffn_dim))]
            continue
        shapes += [
            (blk + "attn_q.weight", (q_dim, s.dim)),
            (blk + "attn_k.weight", (kv_dim, s.dim)),
            (blk + "attn_v.weight", (kv_dim, s.dim)),
            (blk + "attn_output.weight", (s.dim, q_dim)),
            (blk + "ffn_norm.weight", (s.dim,)),
            (blk + "ffn_gate.weight", (s.ffn_dim, s.dim)),
            (blk + "ffn_up.weight", (s.ffn_dim, s.dim)),
            (blk + "ffn_down.weight", (s.dim, s.ffn_dim)),
        ]
        if arch == "qwen2":
            shapes += [(blk + "attn_q.bias", (q_dim,)), (blk + "attn_k.bias", (kv_dim,)),
                       (blk + "attn_v.bias", (kv_dim,))]
        if arch in ("gemma3", "qwen3"):
            shapes += [(blk + "attn_q_norm.weight", (s.head_dim,)), (blk + "attn_k_norm.weight", (s.head_dim,))]
        if arch == "gemma3":
            shapes += [(blk + "post_attention_norm.weight", (s.dim,)), (blk + "post_ffw_norm.weight", (s.dim,))]
    return shapes


def _random_tensor(name: str, shape: Tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if len(shape) == 1 and name.endswith("norm.weight"):
        # Gemma's files store norms already shifted as (1 + w); llama's are near 1 anyway.
        return (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    if len(shape) == 1:  # biases
        return (0.5 * rng.standard_normal(shape)).astype(np.float32)
    scale = 1.0 if name.startswith("token_embd") else 1.5 / np.sqrt(shape[1])
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _metadata(arch: str, s: TinySpec) -> Dict[str, Any]:
    """The file's metadata (gguf_files.write_gguf's spec): hyperparameters, then the vocabulary."""
    m: Dict[str, Any] = {
        "general.name": "tiny-random-" + arch, "context_length": s.context_length, "embedding_length": s.dim,
        "block_count": s.n_layers, "feed_forward_length": s.ffn_dim, "head_count": s.n_heads,
        "head_count_kv": s.n_kv_heads, "layer_norm_rms_eps": 1e-6 if arch == "gemma3" else 1e-5,
        "vocab_size": s.vocab_size,
    }
    if arch in ("gemma3", "qwen3"):
        m.update(key_length=s.head_dim, value_length=s.head_dim)
    if arch == "gemma3":
        m.update(sliding_window=s.sliding_window, rope_freq_base=1e6)
    else:
        m.update(rope_dimension_count=s.head_dim, rope_freq_base=10000.0)
    if arch == "phi3":  # else transformers' Phi3Config pads with id 32000, beyond the tiny vocabulary
        m["pad_token_id"] = 2
    if s.chat:
        return {**m, **_chat_vocabulary_metadata(arch)}
    # A small byte-level vocabulary: transformers reads the vocabulary even when only the model loads.
    tokens = ["<unk>", "<s>", "</s>"] + ["tok%d" % i for i in range(3, s.vocab_size)]
    return {**m, "tokenizer_model": "gpt2", "token_list": tokens, "token_types": [3, 3, 3] + [1] * (s.vocab_size - 3),
            "token_merges": ["t o", "to k"], "bos_token_id": 1, "eos_token_id": 2}


def chat_vocabulary(arch: str) -> List[str]:
    """A vocabulary that can write any text: every byte has a token, plus the chat format's control tokens.

    llama, qwen2, qwen3 and phi3 get a byte-level BPE (GPT-2's byte-to-character map, ChatML's tokens), gemma3 a
    SentencePiece vocabulary with <0xNN> byte fallback and Gemma's turn tokens. phi3's also has Phi-3's <unk>,
    <s> and </s>: llama.cpp looks them up in every model named phi3 (and refuses to load without them).
    """
    if arch == "gemma3":
        return (["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
                + ["<0x%02X>" % b for b in range(256)] + ["\u2581", "\u2581t", "e", "\u2581the", "o"])
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    shifted = [b for b in range(256) if b not in printable]
    byte_chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]
    phi3 = ["<unk>", "<s>", "</s>"] if arch == "phi3" else []
    return ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + byte_chars + ["\u0120t", "he", "\u0120the"] + phi3


def _chat_vocabulary_metadata(arch: str) -> Dict[str, Any]:
    tokens = chat_vocabulary(arch)
    if arch == "gemma3":
        return {"tokenizer_model": "llama", "token_list": tokens,
                "token_types": [3] * 6 + [6] * 256 + [1] * (len(tokens) - 262),
                "token_scores": [0.0] * 262 + [-1.0 - i for i in range(len(tokens) - 262)],
                "tokenizer.ggml.add_space_prefix": False, "bos_token_id": 2, "eos_token_id": 1}
    return {"tokenizer_model": "gpt2", "tokenizer_pre": "smollm", "token_list": tokens,
            "token_types": [3 if t.startswith("<") and t.endswith(">") else 1 for t in tokens],  # control, normal
            "token_merges": ["\u0120 t", "h e", "\u0120t he"],
            "bos_token_id": 1, "eos_token_id": 2, "chat_template": CHATML_TEMPLATE}


def write_tiny_model(path: Path, arch: str, seed: int = 0, chat: bool = False, spec: Optional[TinySpec] = None,
                     chat_template: Optional[str] = None) -> Path:
    """Write a tiny random `arch` model (a key of TINY_SPECS) to `path` and return the path.

    chat: give it chat_vocabulary(arch), so that any conversation encodes and a chat turn runs.
    spec: other shapes than TINY_SPECS[arch]. chat_template: another template than ChatML (with chat).
    """
    spec = spec or TINY_SPECS[arch]
    if chat:
        spec = spec._replace(chat=True, vocab_size=len(chat_vocabulary(arch)))
    rng = np.random.default_rng(seed)
    tensors = []
    for name, shape in _tensor_shapes(arch, spec):
        data = _random_tensor(name, shape, rng)
        kind = name.split(".")[-2]  # "blk.0.attn_q.weight" -> "attn_q", "output.weight" -> "output"
        qtype = _MATRIX_TYPES.get(kind, Q.F32) if len(shape) == 2 else Q.F32
        if qtype in (Q.F32, Q.F16):
            tensors.append((name, quantize(data, qtype)))
        else:
            tensors.append((name, quantize(data, qtype), qtype))
    metadata = _metadata(arch, spec)
    if chat_template is not None:
        metadata["chat_template"] = chat_template
    return write_gguf(path, arch, metadata, tensors)


def transformers_logits(path: Path, tokens: List[int]) -> np.ndarray:
    """The reference: transformers' own model of the architecture, loaded from the same GGUF file, float32 CPU."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()  # [n_tokens, vocab]


# ---- payload models: one layer of zeros that says one thing ------------------------------------------------

# The payload models' chat template: plain ChatML, no default system prompt.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_level(text: str) -> str:
    """GPT-2's byte-to-printable-character spelling of `text` (a space becomes 'Ġ')."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def write_tiny_gguf(path: Path, payload: str, arch: str = "llama", weight_type: str = "F32",
                    head_dim: int = 4, context_length: int = 256, then_stop: bool = False,
                    padding: int = 0) -> Path:
    """A one-layer byte-level BPE model that answers `payload` (one token) over and over, greedily, or once
    and then <|im_end|> with `then_stop`.

    Every layer weight is zero, so the residual stream is just the token embedding; the output head is the
    embedding (tied), and the payload's embedding row points the same way as every other row but ten times
    longer, so its logit wins after any token. With `then_stop` the payload's row also points along the last
    axis, and <|im_end|>'s row only along it, three times longer: after the payload that logit wins (300 to
    200). `arch`/`weight_type` make files the engine must reject; a large `head_dim` and `context_length`
    make a small file whose KV cache does not fit in memory.
    `padding` adds a metadata string of that many random hex digits: a bigger file whose every stretch
    differs, so bytes stored at a wrong offset cannot pass for the right ones.
    """
    dim = 8 if weight_type == "F32" else 256  # quantized rows are whole 256-weight blocks
    ffn, n_heads, n_kv = 2 * dim, 2, 1
    head_dim = max(head_dim, dim // n_heads)
    byte_tokens = [bytes_to_unicode()[b] for b in range(256)]  # every text can be encoded
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + byte_tokens + [byte_level(payload)]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    payload_id = len(tokens) - 1

    rng = np.random.default_rng(0)
    embedding = np.zeros((len(tokens), dim), np.float32)
    embedding[:, 0] = 1.0
    embedding[:, 1:] = rng.normal(0, 0.05, (len(tokens), dim - 1))
    embedding[payload_id] = 0
    embedding[payload_id, 0] = 10.0
    if then_stop:
        embedding[payload_id, -1] = 10.0
        embedding[2] = 0
        embedding[2, -1] = 30.0

    metadata = {
        "name": "tiny payload model", "context_length": context_length, "embedding_length": dim, "block_count": 1,
        "feed_forward_length": ffn, "head_count": n_heads, "head_count_kv": n_kv, "key_length": head_dim,
        "value_length": head_dim, "layer_norm_rms_eps": 1e-5, "rope_freq_base": 10000.0,
        "tokenizer_model": "gpt2", "tokenizer_pre": "gpt-2", "token_list": tokens, "token_types": types,
        "token_merges": [byte_level(" ") + " " + byte_level("a")], "bos_token_id": 1, "eos_token_id": 2,
        "add_bos_token": False, "chat_template": CHATML,
    }
    if padding:
        metadata["pychat_test.padding"] = np.random.default_rng(padding).bytes((padding + 1) // 2).hex()[:padding]

    quant = gguf.GGMLQuantizationType[weight_type]

    def matrix(name: str, shape) -> tuple:
        if weight_type == "F32":
            return name, np.zeros(shape, np.float32)
        return name, np.zeros(gguf.quant_shape_to_byte_shape(shape, quant), np.uint8), quant

    ones = np.ones(dim, np.float32)
    return write_gguf(path, arch, metadata, [
        ("token_embd.weight", embedding), ("output_norm.weight", ones),
        ("blk.0.attn_norm.weight", ones), ("blk.0.ffn_norm.weight", ones),
        matrix("blk.0.attn_q.weight", (n_heads * head_dim, dim)),
        matrix("blk.0.attn_k.weight", (n_kv * head_dim, dim)),
        matrix("blk.0.attn_v.weight", (n_kv * head_dim, dim)),
        matrix("blk.0.attn_output.weight", (dim, n_heads * head_dim)),
        matrix("blk.0.ffn_gate.weight", (ffn, dim)),
        matrix("blk.0.ffn_up.weight", (ffn, dim)),
        matrix("blk.0.ffn_down.weight", (dim, ffn)),
    ])
