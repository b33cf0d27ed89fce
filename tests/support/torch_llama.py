"""An independent torch implementation of the trainable llama/qwen2 transformer (pychat_wasm/train).

It is the reference the numpy trainer is checked against: torch autograd through this model gives the
gradients that pychat_wasm/train/ops.py and transformer.py compute by hand (tests/oracle/test_train_ops.py,
tests/oracle/test_train_model_grads.py), and torch.optim.AdamW on it gives the training run the numpy AdamW must
reproduce (tests/oracle/test_train_reference.py). It is written from the architecture's description with torch's
own ops (F.rms_norm, scaled_dot_product_attention, F.cross_entropy), not from the numpy code, and is
functional: parameters are a dict {GGUF tensor name: torch tensor}, the same names as the numpy model's.

A projection "blk.0.attn_q" is weight "blk.0.attn_q.weight" [out, in], optional "blk.0.attn_q.bias" [out]
and optional LoRA adapter "blk.0.attn_q.lora_a" [r, in], "blk.0.attn_q.lora_b" [out, r] adding
lora_scale * x A^T B^T. Without "output.weight" the head is tied to "token_embd.weight". RoPE takes the
cos/sin tables [T, head_dim/2] as input so that both implementations rotate by identical angles.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

Params = Dict[str, torch.Tensor]


def project(params: Params, name: str, x: torch.Tensor, lora_scale: float = 1.0) -> torch.Tensor:
    """x W^T (+ b) (+ lora_scale * x A^T B^T)."""
    y = F.linear(x, params[name + ".weight"], params.get(name + ".bias"))
    if name + ".lora_a" in params:
        y = y + lora_scale * F.linear(F.linear(x, params[name + ".lora_a"]), params[name + ".lora_b"])
    return y


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str) -> torch.Tensor:
    """Rotate x [B, T, heads, hd] by the angles whose cos/sin [T, hd/2] are given.

    "interleaved" rotates the pairs (2i, 2i+1), here as complex numbers (Meta's llama formulation);
    "neox" rotates (i, i + hd/2), here with rotate_half (transformers' formulation).
    """
    cos, sin = cos.to(x.dtype)[:, None, :], sin.to(x.dtype)[:, None, :]  # [T, 1, hd/2]
    if style == "interleaved":
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())  # [B, T, heads, hd/2]
        return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)
    if style == "neox":
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * torch.cat([cos, cos], dim=-1) + rotated * torch.cat([sin, sin], dim=-1)
    raise ValueError("unknown RoPE style %r" % style)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal grouped-query attention: q [B, T, H, hd], k and v [B, T, Hkv, hd] -> [B, T, H * hd]."""
    B, T, H, hd = q.shape
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True, enable_gqa=True)  # [B, H, T, hd]
    return out.transpose(1, 2).reshape(B, T, H * hd)


def block(cfg, params: Params, blk: str, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
          lora_scale: float) -> torch.Tensor:
    B, T, D = x.shape
    hd = cfg.head_dim
    h = F.rms_norm(x, (D,), params[blk + "attn_norm.weight"], cfg.rms_eps)
    q = project(params, blk + "attn_q", h, lora_scale).view(B, T, -1, hd)
    k = project(params, blk + "attn_k", h, lora_scale).view(B, T, -1, hd)
    v = project(params, blk + "attn_v", h, lora_scale).view(B, T, -1, hd)
    q, k = rope(q, cos, sin, cfg.rope_style), rope(k, cos, sin, cfg.rope_style)
    x = x + project(params, blk + "attn_output", attention(q, k, v), lora_scale)
    h = F.rms_norm(x, (D,), params[blk + "ffn_norm.weight"], cfg.rms_eps)
    ffn = F.silu(project(params, blk + "ffn_gate", h, lora_scale)) * project(params, blk + "ffn_up", h, lora_scale)
    return x + project(params, blk + "ffn_down", ffn, lora_scale)


def logits(cfg, params: Params, ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
           lora_scale: float = 1.0) -> torch.Tensor:
    """Logits [B, T, V] of token ids [B, T]; cfg needs n_layers, head_dim, rms_eps and rope_style."""
    x = F.embedding(ids, params["token_embd.weight"])
    for i in range(cfg.n_layers):
        x = block(cfg, params, "blk.%d." % i, x, cos, sin, lora_scale)
    x = F.rms_norm(x, (x.shape[-1],), params["output_norm.weight"], cfg.rms_eps)
    head = "output" if "output.weight" in params else "token_embd"
    return project(params, head, x, lora_scale)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the positions loss_mask keeps (0 when it keeps none)."""
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    weights = loss_mask.reshape(-1).to(nll.dtype)
    return (nll * weights).sum() / weights.sum().clamp(min=1.0)


def loss(cfg, params: Params, ids: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor,
         cos: torch.Tensor, sin: torch.Tensor, lora_scale: float = 1.0) -> torch.Tensor:
    return masked_cross_entropy(logits(cfg, params, ids, cos, sin, lora_scale), targets, loss_mask)


def to_torch(params, requires_grad: Optional[set] = None) -> Params:
    """numpy params -> torch leaf tensors (copies); requires_grad on the names given (all when None)."""
    out = {}
    for name, value in params.items():
        t = torch.tensor(value)
        t.requires_grad_(requires_grad is None or name in requires_grad)
        out[name] = t
    return out
