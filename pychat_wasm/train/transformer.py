"""The trainable transformer: forward pass keeping what backward needs, then backward, top to bottom.

It is the inference model's sibling (model/forward.py), not its copy: the same `ModelConfig`, the same GGUF
tensors (model/config.py's schema) as parameters, the same RoPE (model/layers.apply_rope), so trained
parameters are written to GGUF as they are and a GGUF model's tensors are the starting point of fine-tuning.
Architectures: llama (and qwen2's q/k/v biases and rotate-half RoPE), with a tied or separate output head. Each op and its backward is in ops.py.

Parameters live in a dict {GGUF tensor name: array}. A projection "blk.0.attn_q" reads
"blk.0.attn_q.weight" [out, in], optionally "blk.0.attn_q.bias" [out], and optionally a LoRA adapter
"blk.0.attn_q.lora_a" [r, in] and ".lora_b" [out, r] that adds lora_scale * x A^T B^T (ops.lora_forward).

    >>> cfg = llama_config(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=48, vocab_size=40)
    >>> params = init_params(cfg, seed=0)
    >>> ids = np.array([[1, 5, 7, 2]]); mask = np.ones((1, 3))
    >>> loss, grads = loss_and_grads(cfg, params, ids[:, :-1], ids[:, 1:], mask)
    >>> round(loss, 1), grads["blk.0.attn_q.weight"].shape
    (3.8, (32, 32))
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from ..model.config import ModelConfig, expected_shapes
from ..model.layers import apply_rope, rope_angles, rope_frequencies
from . import ops
from .batches import Layout

Params = Dict[str, np.ndarray]
Grads = Dict[str, np.ndarray]


def llama_config(dim: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int, vocab_size: int,
                 context_length: int = 256, rope_base: float = 10000.0, rms_eps: float = 1e-5) -> ModelConfig:
    """The ModelConfig of a new llama-architecture model (what ModelConfig.from_gguf reads back)."""
    return ModelConfig(
        arch="llama", n_layers=n_layers, dim=dim, n_heads=n_heads, n_kv_heads=n_kv_heads,
        head_dim=dim // n_heads, ffn_dim=ffn_dim, vocab_size=vocab_size, context_length=context_length,
        trained_context_length=context_length, rms_eps=rms_eps, rope_base=rope_base)


def param_shapes(cfg: ModelConfig, tied_output: bool = True) -> Dict[str, Tuple[int, ...]]:
    """Every parameter the architecture requires and its shape, in GGUF order (config.TENSORS); a separate
    output head unless it is tied to the embedding. Optional tensors (qwen2's biases) are the caller's."""
    return {name: shape for name, shape, required in expected_shapes(cfg)
            if required or (name == "output.weight" and not tied_output)}


def init_params(cfg: ModelConfig, seed: int, dtype: type = np.float32, tied_output: bool = True) -> Params:
    """GPT-2's initialisation: N(0, 0.02) matrices, the residual outputs scaled by 1/sqrt(2 * layers), unit norms."""
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, shape in param_shapes(cfg, tied_output).items():
        if len(shape) == 1:
            params[name] = np.ones(shape, dtype)
            continue
        std = 0.02
        if name.endswith(("attn_output.weight", "ffn_down.weight")):
            std /= np.sqrt(2 * cfg.n_layers)
        params[name] = (std * rng.standard_normal(shape)).astype(dtype)
    return params


# ----------------------------------------------------------------------------------------------
# Projections: weight, optional bias, optional LoRA adapter


def project_forward(params: Params, name: str, x: np.ndarray, lora_scale: float) -> np.ndarray:
    y = ops.linear_forward(x, params[name + ".weight"], params.get(name + ".bias"))  # [B, T, out]
    if name + ".lora_a" in params:
        y = y + ops.lora_forward(x, params[name + ".lora_a"], params[name + ".lora_b"], lora_scale)
    return y


def project_backward(params: Params, name: str, d_y: np.ndarray, x: np.ndarray, lora_scale: float,
                     grads: Grads, trainable: Optional[Set[str]]) -> np.ndarray:
    """d_x of a projection; gradients of its trainable parameters are added to `grads`."""
    weight = name + ".weight"
    d_x, d_w = ops.linear_backward(d_y, x, params[weight], _wants(weight, trainable))
    _add(grads, weight, d_w)
    if name + ".bias" in params and _wants(name + ".bias", trainable):
        _add(grads, name + ".bias", ops.bias_backward(d_y))
    if name + ".lora_a" in params:
        d_x_lora, d_a, d_b = ops.lora_backward(d_y, x, params[name + ".lora_a"], params[name + ".lora_b"],
                                               lora_scale)
        d_x = d_x + d_x_lora
        _add(grads, name + ".lora_a", d_a)
        _add(grads, name + ".lora_b", d_b)
    return d_x


def _wants(name: str, trainable: Optional[Set[str]]) -> bool:
    return trainable is None or name in trainable


def _add(grads: Grads, name: str, grad: Optional[np.ndarray]) -> None:
    if grad is None:
        return
    if name in grads:
        grads[name] = grads[name] + grad
    else:
        grads[name] = grad


# ----------------------------------------------------------------------------------------------
# One block: attention and FFN, each behind an RMSNorm and inside a residual


def block_forward(cfg: ModelConfig, params: Params, blk: str, x: np.ndarray, rope: Tuple[np.ndarray, np.ndarray],
                  lora_scale: float, bias: Optional[np.ndarray] = None) -> Tuple[np.ndarray, tuple]:
    """`bias`: a packed batch's attention mask (batches.Layout); None: causal."""
    B, T, _ = x.shape
    cos, sin = rope
    h, norm1 = ops.rms_norm_forward(x, params[blk + "attn_norm.weight"], cfg.rms_eps)  # [B, T, D]
    q = project_forward(params, blk + "attn_q", h, lora_scale).reshape(B, T, cfg.n_heads, cfg.head_dim)
    k = project_forward(params, blk + "attn_k", h, lora_scale).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
    v = project_forward(params, blk + "attn_v", h, lora_scale).reshape(B, T, cfg.n_kv_heads, cfg.head_dim)
    q, k = apply_rope(q, cos, sin, cfg.rope_style), apply_rope(k, cos, sin, cfg.rope_style)
    att, attn = ops.attention_forward(q, k, v, bias)  # [B, T, H * hd]
    x = x + project_forward(params, blk + "attn_output", att, lora_scale)  # residual
    h2, norm2 = ops.rms_norm_forward(x, params[blk + "ffn_norm.weight"], cfg.rms_eps)
    gate = project_forward(params, blk + "ffn_gate", h2, lora_scale)  # [B, T, F]
    up = project_forward(params, blk + "ffn_up", h2, lora_scale)
    act, swiglu = ops.swiglu_forward(gate, up)
    x = x + project_forward(params, blk + "ffn_down", act, lora_scale)  # residual
    return x, (h, norm1, attn, att, h2, norm2, swiglu, act)


def block_backward(cfg: ModelConfig, params: Params, blk: str, d_x: np.ndarray, cache: tuple,
                   rope: Tuple[np.ndarray, np.ndarray], lora_scale: float, grads: Grads,
                   trainable: Optional[Set[str]]) -> np.ndarray:
    h, norm1, attn, att, h2, norm2, swiglu, act = cache
    B, T, _ = d_x.shape
    cos, sin = rope

    def backward(name: str, d_y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return project_backward(params, blk + name, d_y, x, lora_scale, grads, trainable)

    def norm_backward(name: str, d_y: np.ndarray, cache: tuple) -> np.ndarray:
        d_in, d_w = ops.rms_norm_backward(d_y, cache)
        if _wants(blk + name, trainable):
            _add(grads, blk + name, d_w)
        return d_in

    # FFN, through the residual: d_x flows on unchanged and through the branch.
    d_gate, d_up = ops.swiglu_backward(backward("ffn_down", d_x, act), swiglu)
    d_h2 = backward("ffn_gate", d_gate, h2) + backward("ffn_up", d_up, h2)
    d_x = d_x + norm_backward("ffn_norm.weight", d_h2, norm2)
    # Attention
    d_q, d_k, d_v = ops.attention_backward(backward("attn_output", d_x, att), attn)
    d_q = ops.rope_backward(d_q, cos, sin, cfg.rope_style).reshape(B, T, -1)
    d_k = ops.rope_backward(d_k, cos, sin, cfg.rope_style).reshape(B, T, -1)
    d_h = backward("attn_q", d_q, h) + backward("attn_k", d_k, h) + backward("attn_v", d_v.reshape(B, T, -1), h)
    return d_x + norm_backward("attn_norm.weight", d_h, norm1)


# ----------------------------------------------------------------------------------------------
# The whole model


def _rope_tables(cfg: ModelConfig, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return rope_angles(positions, rope_frequencies(cfg.head_dim, cfg.rope_base))  # [T, hd/2] each


def _head(params: Params) -> str:
    return "output" if "output.weight" in params else "token_embd"  # tied: the embedding is the head


def forward_hidden(cfg: ModelConfig, params: Params, ids: np.ndarray, lora_scale: float = 1.0,
                   layout: Optional[Layout] = None) -> Tuple[np.ndarray, List[tuple]]:
    """The final normed hidden states [B, T, D] of token ids [B, T] (each sequence starts at position 0, or
    a packed batch's row [1, N] laid out by `layout`: batches.py), and the tape for backward_hidden."""
    positions = np.arange(ids.shape[1]) if layout is None else layout.positions  # [T]
    bias = None if layout is None else layout.bias
    rope = _rope_tables(cfg, positions)
    x = ops.embedding_forward(params["token_embd.weight"], ids)  # [B, T, D]
    tape = []
    for i in range(cfg.n_layers):
        x, cache = block_forward(cfg, params, "blk.%d." % i, x, rope, lora_scale, bias)
        tape.append(cache)
    x_norm, norm = ops.rms_norm_forward(x, params["output_norm.weight"], cfg.rms_eps)
    tape.append((norm, rope))
    return x_norm, tape


def backward_hidden(cfg: ModelConfig, params: Params, ids: np.ndarray, d_x_norm: np.ndarray, tape: List[tuple],
                    grads: Grads, lora_scale: float = 1.0, trainable: Optional[Set[str]] = None) -> Grads:
    """Add the gradients of the trainable parameters below the head, given d loss / d hidden [B, T, D]."""
    norm, rope = tape[-1]
    d_x, d_w = ops.rms_norm_backward(d_x_norm, norm)
    if _wants("output_norm.weight", trainable):
        grads["output_norm.weight"] = d_w
    for i in reversed(range(cfg.n_layers)):
        d_x = block_backward(cfg, params, "blk.%d." % i, d_x, tape[i], rope, lora_scale, grads, trainable)
    if _wants("token_embd.weight", trainable):
        _add(grads, "token_embd.weight", ops.embedding_backward(d_x, ids, cfg.vocab_size))
    return grads


def forward(cfg: ModelConfig, params: Params, ids: np.ndarray, lora_scale: float = 1.0) -> np.ndarray:
    """Logits [B, T, V] of token ids [B, T]."""
    hidden, _ = forward_hidden(cfg, params, ids, lora_scale)
    return project_forward(params, _head(params), hidden, lora_scale)


def loss_and_grads(cfg: ModelConfig, params: Params, ids: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray,
                   lora_scale: float = 1.0, trainable: Optional[Set[str]] = None, layout: Optional[Layout] = None,
                   ) -> Tuple[float, Grads]:
    """Mean cross-entropy of predicting targets [B, T] where loss_mask [B, T] is 1, and its gradients
    (`layout`: a packed batch's, batches.py).

    The output head (the widest matrix) runs only at the positions the loss counts.
    """
    hidden, tape = forward_hidden(cfg, params, ids, lora_scale, layout)
    B, T, D = hidden.shape
    counted = np.nonzero(loss_mask.reshape(-1))[0]  # [n] flat positions the loss counts
    h = hidden.reshape(B * T, D)[counted]  # [n, D]
    logits = project_forward(params, _head(params), h, lora_scale)  # [n, V]
    loss, ce = ops.cross_entropy_forward(logits, targets.reshape(-1)[counted], loss_mask.reshape(-1)[counted])
    del logits
    grads: Grads = {}
    d_h = project_backward(params, _head(params), ops.cross_entropy_backward(ce), h, lora_scale, grads, trainable)
    d_hidden = np.zeros((B * T, D), hidden.dtype)
    d_hidden[counted] = d_h
    backward_hidden(cfg, params, ids, d_hidden.reshape(B, T, D), tape, grads, lora_scale, trainable)
    return loss, grads


def loss_only(cfg: ModelConfig, params: Params, ids: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray,
              lora_scale: float = 1.0, layout: Optional[Layout] = None) -> Tuple[float, float]:
    """(summed loss, number of counted positions): for validation, where batches are pooled."""
    losses, counts, _ = answer_scores(cfg, params, ids, targets, loss_mask, lora_scale, layout)
    return float(losses.sum()), float(counts.sum())


def answer_scores(cfg: ModelConfig, params: Params, ids: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray,
                  lora_scale: float = 1.0, layout: Optional[Layout] = None,
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example of the batch [B]: the summed loss over its counted positions, their number, and whether the
    most likely next token is the target at every one of them (then greedy decoding gives the example's answers
    back exactly, as it is fed the same prefix at each step). Packed (`layout`), the examples are its rows."""
    hidden, _ = forward_hidden(cfg, params, ids, lora_scale, layout)
    B, T, D = hidden.shape
    counted = np.nonzero(loss_mask.reshape(-1))[0]  # [n] flat positions the loss counts
    logits = project_forward(params, _head(params), hidden.reshape(B * T, D)[counted], lora_scale)  # [n, V]
    wanted = targets.reshape(-1)[counted]  # [n]
    shifted = logits - logits.max(axis=-1, keepdims=True)  # [n, V]
    nll = np.log(np.exp(shifted).sum(axis=-1)) - shifted[np.arange(len(counted)), wanted]  # [n]
    missed = logits.argmax(axis=-1) != wanted  # [n]
    rows = counted // T if layout is None else layout.rows[counted]  # [n] the example of each counted position
    B = B if layout is None else layout.examples
    losses = np.bincount(rows, weights=nll.astype(np.float64), minlength=B)  # [B]
    counts = np.bincount(rows, minlength=B)  # [B]
    return losses, counts, np.bincount(rows, weights=missed.astype(np.float64), minlength=B) == 0
