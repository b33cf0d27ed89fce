"""A batch packed over its examples' shared prefix (pychat_wasm/train/batches.py) gives the padded batch's
numbers: the loss and every trainable gradient against torch autograd on the padded batch (tests/support/
torch_llama.py), and the per-example scores of the early-stop check against the padded computation.

The examples are built as a chat template renders them: a shared system prompt, then each its own question
(untrained) and answer (trained), of different lengths; LoRA on every projection of a frozen llama and of
qwen2 (biases, rotate-half RoPE), in float64 to the same relative error as the unpacked oracle tests (1e-8).
"""
from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import torch

from pychat_wasm.model.layers import rope_angles, rope_frequencies
from pychat_wasm.train import transformer
from pychat_wasm.train.batches import make_batch, pad_batch, shared_prefix
from pychat_wasm.train.data import Example
from pychat_wasm.train.transformer import llama_config, param_shapes

import torch_llama  # tests/support/torch_llama.py

torch.set_num_threads(1)

TOL = 1e-8
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
LORA_RANK, LORA_SCALE = 3, 2.0
PAD = 0


def model(arch: str, n_kv_heads: int):
    """(cfg, float64 params with LoRA adapters on every projection, the trainable adapter names)."""
    rng = np.random.default_rng(zlib.crc32(arch.encode()))
    cfg = llama_config(dim=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, ffn_dim=48, vocab_size=40,
                       rope_base=500.0)
    cfg = dataclasses.replace(cfg, arch=arch)
    params = {}
    for name, shape in param_shapes(cfg).items():
        params[name] = 1.0 + 0.3 * rng.standard_normal(shape) if len(shape) == 1 else \
            rng.standard_normal(shape) / np.sqrt(shape[1])
    for i in range(cfg.n_layers):
        for proj in PROJECTIONS:
            stem = "blk.%d.%s" % (i, proj)
            n_out, n_in = params[stem + ".weight"].shape
            if arch == "qwen2" and proj in ("attn_q", "attn_k", "attn_v"):
                params[stem + ".bias"] = 0.5 * rng.standard_normal(n_out)
            params[stem + ".lora_a"] = rng.standard_normal((LORA_RANK, n_in)) / np.sqrt(n_in)
            params[stem + ".lora_b"] = 0.5 * rng.standard_normal((n_out, LORA_RANK))  # nonzero: a's grads too
    return cfg, params, {n for n in params if ".lora_" in n}


def chats(seed: int, lengths=((3, 4), (5, 2), (2, 6), (4, 3))):
    """Examples [system prompt | question | answer] with one shared 5-token prompt; the answers are trained."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(1, 40, 5).tolist()
    examples = []
    for question, answer in lengths:
        ids = prompt + rng.integers(1, 40, question + answer).tolist()
        examples.append(Example(ids, [0] * (len(prompt) + question) + [1] * answer))
    return examples


def torch_padded(cfg, params, trainable, batch):
    """torch's loss of the padded batch and its gradients of the trainable parameters."""
    cos, sin = rope_angles(np.arange(batch.ids.shape[1]), rope_frequencies(cfg.head_dim, cfg.rope_base))
    t_params = torch_llama.to_torch(params, trainable)
    t_loss = torch_llama.loss(cfg, t_params, torch.from_numpy(batch.ids), torch.from_numpy(batch.targets),
                              torch.from_numpy(batch.mask.astype(np.float64)), torch.from_numpy(cos),
                              torch.from_numpy(sin), LORA_SCALE)
    t_loss.backward()
    return t_loss.item(), {name: t_params[name].grad.numpy() for name in trainable}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("arch, n_kv_heads", [("llama", 2), ("qwen2", 1)])
def test_packed_loss_and_gradients_match_torch_on_the_padded_batch(arch, n_kv_heads):
    cfg, params, trainable = model(arch, n_kv_heads)
    examples = chats(seed=1)
    packed = make_batch(examples, PAD)
    assert packed.layout is not None and packed.ids.shape == (1, 5 + sum(q + a - 1 for q, a in
                                                                         ((3, 4), (5, 2), (2, 6), (4, 3))))
    padded = pad_batch(examples, PAD)
    assert packed.tokens == padded.tokens
    loss, grads = transformer.loss_and_grads(cfg, params, packed.ids, packed.targets, packed.mask, LORA_SCALE,
                                             trainable, packed.layout)
    t_loss, t_grads = torch_padded(cfg, params, trainable, padded)
    assert abs(loss - t_loss) / abs(t_loss) < TOL
    assert set(grads) == trainable
    errors = {name: rel_err(grads[name], t_grads[name]) for name in trainable}
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, (worst, errors[worst])


def test_packed_answer_scores_are_the_padded_batch_rows():
    """Per example: the summed loss, the counted positions and whether every greedy token is the target."""
    cfg, params, _ = model("llama", 2)
    examples = chats(seed=2)
    # one example's answer made the model's own greedy continuation, so that "right" is True somewhere
    ids = list(examples[0].ids)
    for t in range(len(ids) - 4, len(ids)):
        logits = transformer.forward(cfg, params, np.array([ids[:t]]), LORA_SCALE)
        ids[t] = int(logits[0, -1].argmax())
    examples[0] = Example(ids, examples[0].mask)
    packed, padded = make_batch(examples, PAD), pad_batch(examples, PAD)
    got = transformer.answer_scores(cfg, params, packed.ids, packed.targets, packed.mask, LORA_SCALE, packed.layout)
    want = transformer.answer_scores(cfg, params, padded.ids, padded.targets, padded.mask, LORA_SCALE)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    assert got[1].tolist() == want[1].tolist() == [4, 2, 6, 3]
    assert got[2].tolist() == want[2].tolist() and got[2][0] and not got[2].all()


def test_a_counted_target_is_never_in_the_shared_prefix():
    """An example trained from its first tokens (a document) keeps them: the prefix stops before them."""
    prompt = [5, 6, 7, 8]
    chat = Example(prompt + [9, 10, 11], [0, 0, 0, 0, 0, 1, 1])
    document = Example(prompt + [12, 13], [1, 1, 1, 1, 1, 1])
    assert shared_prefix([chat, chat._replace(ids=prompt + [14, 15, 16])]) == 4  # the prompt
    assert shared_prefix([chat, document]) == 0  # the document's token 1 is counted
    assert make_batch([chat, document], PAD).layout is None  # nothing shared: padded
