"""Fine-tuning a GGUF model (pychat_wasm/train/finetune.py): LoRA gradients, training, merge, export, resume, CLI.

The bases are the tiny random GGUFs of tests/support/tiny_models.py (llama: GQA, tied head; qwen2: q/k/v biases,
rotate-half RoPE, separate head), whose matrices are stored quantized (Q4_0 ... Q8_0, F16): FinetuneRun's
frozen base is their dequantized values. Their vocabulary ("tokN" tokens, no byte tokens) encodes ordinary
text to nothing at all -- "tok5 tok6" gives [] -- and only the special tokens "<s>" and "</s>" survive, so
    - the oracle comparisons feed random token ids straight into transformer.loss_and_grads on run.params, or
      put Examples of random ids into the run's phase, and build the run itself from conversations whose
      text is made of "<s>" and "</s>";
    - the data path (chat template, answer masks, validation split), checkpoints and the command line use
      the "text" base: the same tiny llama with tiny_models' chat vocabulary (byte-level BPE, ChatML's
      special tokens and template), which encodes any text.

    1. loss and every LoRA gradient (float64, non-zero lora_b) against torch autograd (tests/support/torch_llama.py),
       relative error < 1e-8; frozen weights get no gradient and a step leaves them bitwise unchanged
    2. 10 LoRA steps in float32 against torch.optim.AdamW + clip_grad_norm_ + the schedule: losses within 5e-6
    3. merge: merged weights give the adapted model's logits (1e-5 in a float64 forward; in float32 1e-5 of
       the logits' scale); the F32 export gives them in pychat_wasm, transformers and llama.cpp (1e-4); its
       metadata is the base's, value types included; F16 and Q8_0 exports load and run in pychat_wasm and
       transformers alike
    4. typed errors: gemma3, data without conversations, bad settings
    5. checkpoints hold the adapters only, resume bitwise, and refuse another base model
    6. `pychat-wasm finetune` end to end and its "error:" lines (slow)
    7. SmolLM2 on the shipped example: two steps (slow)
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from llama_cpp_oracle import llama_cpp_results

from pychat_wasm.errors import CheckpointError, InvalidSettingError, TrainingDataError, UnsupportedArchitectureError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.layers import rope_angles, rope_frequencies
from pychat_wasm.model.forward import Model
from pychat_wasm.tokenizers import load_tokenizer
from pychat_wasm.train import transformer
from pychat_wasm.train.checkpoint import checkpoint_bytes, read_checkpoint, restore
from pychat_wasm.train.data import DATA_DIR, Example, TrainingData
from pychat_wasm.train.finetune import TARGETS, FinetuneRun, FinetuneSettings
from pychat_wasm.train.finetune_plan import MIN_PASSES
from pychat_wasm.train.run import Phase

import torch_llama  # tests/support/torch_llama.py
from tiny_models import TINY_TOKENS, transformers_logits, write_tiny_model

torch.set_num_threads(1)

# tiny_models writes no tokenizer.ggml.pre: the tokenizer says so and uses GPT-2's
pytestmark = pytest.mark.filterwarnings("ignore:unknown pre-tokenizer:UserWarning")

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pychat_wasm.cli"]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
EXAMPLE_DATA = os.path.join(DATA_DIR, "finetune_example.jsonl")
GRAD_TOL = 1e-8
LOSS_TOLERANCE = 5e-6  # float32 losses over 10 steps against torch's (measured: 1.9e-6)
LOGIT_TOL = 1e-4
ADAPTER_SUFFIXES = (".lora_a", ".lora_b")

# Conversations the tiny "tokN" vocabulary can encode: only its special tokens <s> (1) and </s> (2) parse.
TOKEN_CHATS = [[{"role": "user", "content": "<s>" * (1 + i % 3)},
                {"role": "assistant", "content": "<s>" * (1 + i % 2) + "</s><s>"}] for i in range(6)]


def text_chats(n: int):
    """n short chats: rendered with ChatML, each takes 33-36 tokens of the text base's vocabulary."""
    return [[{"role": "user", "content": "%d+%d?" % (i, i)},
             {"role": "assistant", "content": "It is %d." % (2 * i)}] for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict:
    """name -> path: the tiny llama, qwen2 and gemma3 of tiny_models, and two with the chat vocabulary (text, text_other)."""
    directory = tmp_path_factory.mktemp("finetune_bases")
    paths = {arch: write_tiny_model(directory / (arch + ".gguf"), arch) for arch in ("llama", "qwen2", "gemma3")}
    paths["text"] = write_tiny_model(directory / "text.gguf", "llama", chat=True)
    paths["text_other"] = write_tiny_model(directory / "text_other.gguf", "llama", seed=1, chat=True)
    return paths


def token_run(path: Path, **settings) -> FinetuneRun:
    return FinetuneRun(FinetuneSettings(**settings), GGUFFile.open(str(path)), TrainingData([], TOKEN_CHATS))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / np.abs(b).max())


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def rope_tables(cfg, n: int):
    cos, sin = rope_angles(np.arange(n), rope_frequencies(cfg.head_dim, cfg.rope_base))
    return torch.from_numpy(cos), torch.from_numpy(sin)


def is_adapter(name: str) -> bool:
    return name.endswith(ADAPTER_SUFFIXES)


def reader_fields(path: Path) -> dict:
    """key -> (value, value types) of every metadata field as gguf-py reads them."""
    return {k: (f.contents(), [int(t) for t in f.types]) for k, f in gguf.GGUFReader(str(path)).fields.items()}


# ----------------------------------------------------------------------------------------------
# 1. LoRA gradients against torch autograd


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_base_parameters_are_the_dequantized_weights(bases, arch):
    from gguf.quants import dequantize

    run = token_run(bases[arch], rank=4)
    reader = gguf.GGUFReader(str(bases[arch]))
    stored_types = {t.tensor_type.name for t in reader.tensors}
    assert {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"} <= stored_types  # the base really is quantized
    base = {n: v for n, v in run.params.items() if not is_adapter(n)}
    assert set(base) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        expected = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
        assert base[t.name].dtype == np.float32
        np.testing.assert_array_equal(base[t.name], expected, err_msg=t.name)


ADAPTED = {"attn": ("attn_q", "attn_k", "attn_v", "attn_output"),  # what each TARGETS choice must adapt
           "attn+mlp": ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}


@pytest.mark.parametrize("targets", sorted(TARGETS))
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora_loss_and_gradients_match_torch_autograd(bases, arch, targets):
    rank = 4
    run = token_run(bases[arch], rank=rank, alpha=6.0, targets=targets)
    cfg, scale = run.config, run.lora_scale
    assert scale == 1.5
    adapters = {n for n in run.params if is_adapter(n)}
    assert run.trainable == adapters
    assert len(adapters) == 2 * cfg.n_layers * len(ADAPTED[targets])
    for i in range(cfg.n_layers):
        for projection in ADAPTED[targets]:
            stem = "blk.%d.%s" % (i, projection)
            out_dim, in_dim = run.params[stem + ".weight"].shape
            assert run.params[stem + ".lora_a"].shape == (rank, in_dim)
            assert run.params[stem + ".lora_b"].shape == (out_dim, rank) and not run.params[stem + ".lora_b"].any()

    rng = np.random.default_rng(11)
    params = {n: v.astype(np.float64) for n, v in run.params.items()}
    for name in adapters:  # a fresh lora_b is zero: make it non-zero so that lora_a gets a gradient too
        if name.endswith(".lora_b"):
            params[name] = 0.5 * rng.standard_normal(params[name].shape)
    B, T = 3, 12
    tokens = rng.integers(0, cfg.vocab_size, (B, T + 1))
    ids, targets_ = tokens[:, :-1], tokens[:, 1:]
    mask = np.ones((B, T))
    mask[:, :3] = 0  # a prompt
    ids[2, 8:], targets_[2, 8:], mask[2, 8:] = 2, 2, 0  # padding at the end
    loss, grads = transformer.loss_and_grads(cfg, params, ids, targets_, mask, scale, run.trainable)

    t_params = torch_llama.to_torch(params, run.trainable)
    t_loss = torch_llama.loss(cfg, t_params, torch.from_numpy(ids), torch.from_numpy(targets_),
                              torch.from_numpy(mask), *rope_tables(cfg, T), lora_scale=scale)
    t_loss.backward()
    assert abs(loss - t_loss.item()) / abs(t_loss.item()) < GRAD_TOL
    assert set(grads) == adapters  # the frozen weights get no gradient at all
    errors = {}
    for name in sorted(adapters):
        assert grads[name].dtype == np.float64 and grads[name].shape == params[name].shape
        reference = t_params[name].grad.numpy()
        assert np.abs(reference).max() > 0, name
        errors[name] = rel_err(grads[name], reference)
    worst = max(errors, key=errors.get)
    assert errors[worst] < GRAD_TOL, (worst, errors[worst])
    assert all(t_params[n].grad is None for n in params if n not in adapters)


def test_answer_scores_are_torch_cross_entropy_and_argmax_per_row(bases):
    """The early stop's check (transformer.answer_scores): per row, the summed loss over the masked positions is
    torch's cross-entropy, and "exact" is torch's argmax equal to the target at every one of them."""
    run = token_run(bases["llama"])
    rng = np.random.default_rng(3)
    ids = rng.integers(0, run.config.vocab_size, (3, 8))  # [B, T]
    targets = rng.integers(0, run.config.vocab_size, (3, 8))
    mask = (rng.random((3, 8)) < 0.5).astype(np.float32)
    mask[2] = 0
    logits = torch.from_numpy(transformer.forward(run.config, run.params, ids).astype(np.float64))  # [B, T, V]
    targets[0] = logits[0].argmax(-1).numpy()  # row 0: every target is the most likely token
    losses, counts, right = transformer.answer_scores(run.config, run.params, ids, targets, mask)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1),
                                            reduction="none").reshape(3, 8).numpy()
    np.testing.assert_allclose(losses, (nll * mask).sum(1), rtol=1e-4, atol=1e-5)
    assert counts.tolist() == mask.sum(1).astype(int).tolist()
    hits = (logits.argmax(-1).numpy() == targets) | (mask == 0)
    assert right.tolist() == hits.all(1).tolist() and right[0] and right[2]  # row 2 counts nothing: vacuously right


def test_a_step_changes_the_adapters_only(bases):
    run = token_run(bases["qwen2"], targets="attn+mlp", lr=1e-2)
    before = {n: v.copy() for n, v in run.params.items()}
    run.step()
    run.step()
    for name, value in run.params.items():
        if is_adapter(name):
            assert not np.array_equal(value, before[name]), name
        else:
            assert np.array_equal(value, before[name]), name  # frozen, bit for bit
    assert set(run.optimizer.m) == run.trainable


# ----------------------------------------------------------------------------------------------
# 2. Ten LoRA steps against torch


STEPS, PEAK_LR, LORA_WEIGHT_DECAY, BETAS, MAX_NORM = 10, 1e-2, 0.01, (0.9, 0.95), 1.0


def schedule(step: int, total: int = STEPS, peak: float = PEAK_LR) -> float:
    """Linear warm-up over 5% of the steps (at least one), then a cosine from the peak to a tenth of it."""
    warmup = max(1, int(total * 0.05))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / (total - warmup)
    low = 0.1 * peak
    return low + (peak - low) * (1 + math.cos(math.pi * progress)) / 2


def test_ten_lora_steps_match_torch_adamw(bases):
    settings = dict(rank=4, alpha=8.0, targets="attn+mlp", lr=PEAK_LR, batch_size=4, seq_len=64)
    run = token_run(bases["llama"], **settings)
    assert run.optimizer.weight_decay == LORA_WEIGHT_DECAY  # what FinetuneSettings.loop() gives LoRA
    assert (run.optimizer.beta1, run.optimizer.beta2) == BETAS and run.loop.clip_norm == MAX_NORM
    cfg = run.config
    # One fixed batch: four examples of the same length, so that every step's batch holds exactly these four
    # rows (run.batch only reorders them); the loss skips a prompt and a few final positions.
    rng = np.random.default_rng(3)
    T = 24
    examples = []
    for tail in (0, 3, 5, 9):
        mask = [0] * 5 + [1] * (T + 1 - 5 - tail) + [0] * tail
        examples.append(Example(rng.integers(3, cfg.vocab_size, T + 1).tolist(), mask))
    run.phases = [Phase("finetune", examples, [], STEPS, PEAK_LR)]
    initial = {n: v.copy() for n, v in run.params.items()}
    batches = [run.batch(run.phases[0], s) for s in range(STEPS)]
    for batch in batches:
        rows = sorted(map(tuple, np.concatenate([batch.ids, batch.targets[:, -1:]], axis=1).tolist()))
        assert rows == sorted(tuple(e.ids) for e in examples)
    records = [run.step() for _ in range(STEPS)]
    assert [r["lr"] for r in records] == pytest.approx([schedule(s) for s in range(STEPS)], rel=1e-12)

    t_params = torch_llama.to_torch(initial, run.trainable)
    leaves = [t_params[n] for n in sorted(run.trainable)]
    optimizer = torch.optim.AdamW([{"params": [p for p in leaves if p.dim() >= 2], "weight_decay": LORA_WEIGHT_DECAY},
                                   {"params": [p for p in leaves if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=PEAK_LR, betas=BETAS, eps=1e-8)
    cos, sin = rope_tables(cfg, T)
    t_losses, t_norms = [], []
    for step, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        optimizer.zero_grad()
        loss = torch_llama.loss(cfg, t_params, torch.from_numpy(batch.ids), torch.from_numpy(batch.targets),
                                torch.from_numpy(batch.mask), cos, sin, lora_scale=run.lora_scale)
        loss.backward()
        t_norms.append(float(torch.nn.utils.clip_grad_norm_(leaves, MAX_NORM)))
        optimizer.step()
        t_losses.append(loss.item())

    losses = [r["loss"] for r in records]
    print("losses %s\nlargest difference from torch: loss %.2g, final adapters %.2g" % (
        np.round(losses, 4).tolist(), max_diff(losses, t_losses),
        max(max_diff(run.params[n], t_params[n].detach().numpy()) for n in run.trainable)))
    np.testing.assert_allclose(losses, t_losses, rtol=0, atol=LOSS_TOLERANCE)
    np.testing.assert_allclose([r["grad_norm"] for r in records], t_norms, rtol=1e-4)
    assert losses[-1] < losses[0] - 0.5  # it learns the batch
    for name in run.trainable:
        np.testing.assert_allclose(run.params[name], t_params[name].detach().numpy(), rtol=0, atol=1e-4,
                                   err_msg=name)
    for name, value in initial.items():
        if not is_adapter(name):
            assert np.array_equal(run.params[name], value) and t_params[name].grad is None


# ----------------------------------------------------------------------------------------------
# 3. Merge and export


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def trained(request, bases, tmp_path_factory):
    """(arch, a run trained 3 steps with adapters on every projection, its exports type -> path)."""
    arch = request.param
    run = token_run(bases[arch], rank=4, targets="attn+mlp", lr=5e-2, batch_size=2, epochs=1)
    while not run.finished:
        run.step()
    directory = tmp_path_factory.mktemp("finetuned_" + arch)
    exports = {}
    for ggml_type in ("F32", "F16", "Q8_0"):
        exports[ggml_type] = directory / ("tuned-%s.gguf" % ggml_type)
        run.gguf_writer(ggml_type).write(exports[ggml_type])
    return arch, run, exports


def test_merged_parameters_give_the_adapted_model(trained):
    arch, run, _ = trained
    assert run.step_count == 3
    assert all(np.abs(run.params[n]).max() > 1e-3 for n in run.trainable if n.endswith(".lora_b"))
    merged = run.merged_parameters()
    base = {n: v for n, v in run.params.items() if not is_adapter(n)}
    assert set(merged) == set(base) and not any(is_adapter(n) for n in merged)
    assert all(merged[n].dtype == np.float32 and merged[n].shape == base[n].shape for n in merged)
    ids = np.array([TINY_TOKENS])
    adapted = transformer.forward(run.config, run.params, ids, run.lora_scale)
    assert max_diff(transformer.forward(run.config, base, ids), adapted) > 1e-2  # the adapters do matter
    # In float64 the forward passes add no rounding of their own: what is left is the merged weights' float32
    # rounding. In float32 both forwards round (the tiny models' logits reach tens: a few ulps, measured 1.0e-5).
    as64 = lambda params: {n: v.astype(np.float64) for n, v in params.items()}  # noqa: E731
    adapted64 = transformer.forward(run.config, as64(run.params), ids, run.lora_scale)
    assert max_diff(transformer.forward(run.config, as64(merged), ids), adapted64) < 1e-5
    scale = max(1.0, float(np.abs(adapted).max()))
    assert max_diff(transformer.forward(run.config, merged, ids), adapted) < 1e-5 * scale
    for i in range(run.config.n_layers):  # W + (alpha / r) B A, in float64
        stem = "blk.%d.ffn_down" % i
        a, b = (run.params[stem + s].astype(np.float64) for s in ADAPTER_SUFFIXES)
        expected = base[stem + ".weight"] + run.lora_scale * (b @ a)
        assert max_diff(merged[stem + ".weight"], expected) < 1e-6


@pytest.mark.slow
def test_f32_export_gives_the_adapted_logits_in_pychat_wasm_and_transformers(trained):
    arch, run, exports = trained
    ours = Model.from_gguf(str(exports["F32"]), policy="float32").forward(TINY_TOKENS, 0, all_logits=True)
    hf = transformers_logits(exports["F32"], TINY_TOKENS)
    adapted = transformer.forward(run.config, run.params, np.array([TINY_TOKENS]), run.lora_scale)[0]
    diffs = {"ours-hf": max_diff(ours, hf), "ours-adapted": max_diff(ours, adapted),
             "hf-adapted": max_diff(hf, adapted)}
    assert max(diffs.values()) < LOGIT_TOL, diffs
    stored = {t.name: t for t in gguf.GGUFReader(str(exports["F32"])).tensors}
    merged = run.merged_parameters()
    assert set(stored) == set(merged)
    for name, t in stored.items():
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(t.data).reshape(merged[name].shape), merged[name], err_msg=name)


@pytest.mark.slow
def test_llama_cpp_runs_the_f32_export_alike(trained):
    """llama.cpp (node-llama-cpp, tests/support/llama_cpp_greedy.mjs: F32 KV cache) on the merged export."""
    arch, run, exports = trained
    jobs = [{"ids": TINY_TOKENS, "logits": True}]
    result = llama_cpp_results(exports["F32"], jobs, timeout=120, vocab_size=run.config.vocab_size)[0]
    theirs = np.array(result["logits"], np.float64)
    ours = Model.from_gguf(str(exports["F32"]), policy="float32").forward(TINY_TOKENS, 0, all_logits=True)
    assert max_diff(ours, theirs) < LOGIT_TOL


@pytest.mark.parametrize("ggml_type", ["F32", "F16", "Q8_0"])
def test_export_metadata_is_the_base_models(bases, trained, ggml_type):
    arch, run, exports = trained
    base, tuned = reader_fields(bases[arch]), reader_fields(exports[ggml_type])
    assert "general.file_type" not in base  # tiny_models writes none
    assert tuned.pop("general.file_type") == ({"F32": 0, "F16": 1, "Q8_0": 7}[ggml_type],
                                              [int(gguf.GGUFValueType.UINT32)])
    assert tuned.pop("GGUF.kv_count")[0] == base.pop("GGUF.kv_count")[0] + 1
    assert set(tuned) == set(base)
    for key in base:
        assert tuned[key] == base[key], key  # value and value types (arrays: element type too)


@pytest.mark.slow
@pytest.mark.parametrize("ggml_type", ["F16", "Q8_0"])
def test_f16_and_q8_0_exports_load_and_run(trained, ggml_type):
    arch, run, exports = trained
    path = exports[ggml_type]
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert types == {"F32", ggml_type}  # matrices in the type, norms (and biases) F32
    ours = Model.from_gguf(str(path), policy="float32").forward(TINY_TOKENS, 0, all_logits=True)
    hf = transformers_logits(path, TINY_TOKENS)
    f32 = Model.from_gguf(str(exports["F32"]), policy="float32").forward(TINY_TOKENS, 0, all_logits=True)
    assert max_diff(ours, hf) < LOGIT_TOL
    scale = np.abs(f32).max()
    assert 0 < max_diff(ours, f32) < {"F16": 0.01, "Q8_0": 0.05}[ggml_type] * scale


# ----------------------------------------------------------------------------------------------
# 4. Typed errors


def test_gemma3_is_refused(bases):
    with pytest.raises(UnsupportedArchitectureError, match="llama and qwen2.*gemma3"):
        token_run(bases["gemma3"])


def test_data_without_conversations_is_refused(bases):
    gguf_file = GGUFFile.open(str(bases["llama"]))
    with pytest.raises(TrainingDataError, match="needs conversations"):
        FinetuneRun(FinetuneSettings(), gguf_file, TrainingData(["a document", "another"], []))
    # Conversations whose answers encode to nothing (the tiny vocabulary drops plain text) teach nothing
    chats = [[{"role": "user", "content": "tok5"}, {"role": "assistant", "content": "tok6 tok7"}]]
    assert load_tokenizer(gguf_file).encode("tok6 tok7", add_special=False) == []
    with pytest.raises(TrainingDataError, match="no assistant answer fits within 256 tokens"):
        FinetuneRun(FinetuneSettings(), gguf_file, TrainingData([], chats))


@pytest.mark.parametrize("settings, message", [
    (dict(rank=0), "rank must be at least 1"),
    (dict(targets="mlp"), "targets must be one of attn, attn\\+mlp"),
    (dict(lr=0.0), "learning rate must be positive"),
    (dict(lr=-1e-3), "learning rate must be positive"),
    (dict(lr=float("nan")), "learning rate must be positive"),
    (dict(epochs=0), "epochs must be at least 1"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(InvalidSettingError, match=message):
        FinetuneSettings(**settings)


def test_bad_loop_settings_are_refused(bases):
    with pytest.raises(InvalidSettingError, match="batch_size must be at least 1"):
        token_run(bases["llama"], batch_size=0)


# ----------------------------------------------------------------------------------------------
# The data path, on the text base


def test_conversations_train_their_answers_through_the_chat_template(bases):
    gguf_file = GGUFFile.open(str(bases["text"]))
    chats = text_chats(40)
    run = FinetuneRun(FinetuneSettings(rank=2, batch_size=4, epochs=2, seq_len=64), gguf_file,
                      TrainingData(["a document is ignored"], chats))
    # from 40 conversations on, every 20th is held out; 38 left in batches of 4 make 10 steps an epoch
    assert run.held_out.conversations == [chats[10], chats[30]] and len(run.trained_on.conversations) == 38
    phase, = run.phases
    assert (phase.steps, len(phase.examples), len(phase.validation)) == (20, 38, 2) and run.total_steps == 20
    tokenizer = run.tokenizer
    assert tokenizer.token_text(tokenizer.eos_id) == "<|im_end|>"
    first = phase.examples[0]
    text = run.template.render(chats[0], add_generation_prompt=False)
    assert text == "<|im_start|>user\n0+0?<|im_end|>\n<|im_start|>assistant\nIt is 0.<|im_end|>\n"
    assert first.ids == tokenizer.encode(text, add_special=False, parse_special=True)
    assert tokenizer.decode([i for i, m in zip(first.ids, first.mask) if m]) == "It is 0.<|im_end|>"
    # The adapters start at zero: the first step's loss is the base model's loss on its batch
    base = {n: v for n, v in run.params.items() if not is_adapter(n)}
    batch = run.batch(phase, 0)
    total, count = transformer.loss_only(run.config, base, batch.ids, batch.targets, batch.mask, 1.0, batch.layout)
    record = run.step()
    assert record["loss"] == pytest.approx(total / count, rel=1e-6)
    assert record["tokens"] == batch.tokens > 0


def test_seq_len_cuts_long_conversations(bases):
    gguf_file = GGUFFile.open(str(bases["text"]))
    run = FinetuneRun(FinetuneSettings(seq_len=30), gguf_file, TrainingData([], text_chats(3)))
    assert all(len(e.ids) == 31 for e in run.phases[0].examples)  # inputs and targets overlap
    with pytest.raises(TrainingDataError, match="no assistant answer fits within 10 tokens"):
        FinetuneRun(FinetuneSettings(seq_len=10), gguf_file, TrainingData([], text_chats(3)))


def test_full_fine_tuning_trains_every_weight_without_decay(bases):
    run = FinetuneRun(FinetuneSettings(full=True, lr=1e-3, batch_size=2), GGUFFile.open(str(bases["text"])),
                      TrainingData([], text_chats(4)))
    assert run.trainable is None and run.optimizer.weight_decay == 0.0
    assert not any(is_adapter(n) for n in run.params)
    before = {n: v.copy() for n, v in run.params.items()}
    run.step()
    assert all(not np.array_equal(run.params[n], before[n]) for n in before)
    assert set(run.checkpoint_params()) == set(before)


# ----------------------------------------------------------------------------------------------
# 5. Checkpoints


def _text_run(path: Path, chats) -> FinetuneRun:
    settings = FinetuneSettings(rank=4, targets="attn+mlp", lr=1e-2, seq_len=48, batch_size=2, epochs=2, seed=5)
    return FinetuneRun(settings, GGUFFile.open(str(path)), TrainingData([], chats))


def test_checkpoint_holds_the_adapters_only_and_resumes_exactly(bases):
    chats = text_chats(10)  # 5 steps an epoch, 10 in all
    whole = _text_run(bases["text"], chats)
    assert whole.total_steps == 10
    for _ in range(10):
        whole.step()

    first = _text_run(bases["text"], chats)
    for _ in range(5):
        first.step()
    data = checkpoint_bytes(first)
    checkpoint = read_checkpoint(data)
    assert set(checkpoint.params) == first.trainable and all(is_adapter(n) for n in checkpoint.params)
    assert set(checkpoint.optimizer) == {p + n for p in ("m/", "v/") for n in first.trainable}
    assert checkpoint.extra["base_name"] == str(bases["text"])
    assert len(data) < 0.5 * os.path.getsize(bases["text"]) * 4  # adapters, not a float32 copy of the base

    resumed = FinetuneRun.from_checkpoint(checkpoint.extra, checkpoint.params, GGUFFile.open(str(bases["text"])),
                                          TrainingData([], chats))
    restore(resumed, checkpoint)
    assert resumed.step_count == 5 and resumed.settings == first.settings
    while not resumed.finished:
        resumed.step()

    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    assert strip(resumed.log) == strip(whole.log)  # every loss, norm and validation result, exactly
    for name, value in whole.params.items():
        assert np.array_equal(resumed.params[name], value), name
    for name in whole.optimizer.m:
        assert np.array_equal(resumed.optimizer.m[name], whole.optimizer.m[name])
        assert np.array_equal(resumed.optimizer.v[name], whole.optimizer.v[name])
    assert resumed.gguf_writer("F32").to_bytes() == whole.gguf_writer("F32").to_bytes()


def test_checkpoint_refuses_another_base_or_other_data(bases):
    chats = text_chats(10)
    run = _text_run(bases["text"], chats)
    run.step()
    checkpoint = read_checkpoint(checkpoint_bytes(run))
    with pytest.raises(CheckpointError, match=r"trained on another base model \(.*/text.gguf\), not on .*/text_other"):
        FinetuneRun.from_checkpoint(checkpoint.extra, checkpoint.params, GGUFFile.open(str(bases["text_other"])),
                                    TrainingData([], chats))
    other = FinetuneRun.from_checkpoint(checkpoint.extra, checkpoint.params, GGUFFile.open(str(bases["text"])),
                                        TrainingData([], text_chats(12)))
    with pytest.raises(CheckpointError, match="other data or settings"):
        restore(other, checkpoint)
    wrong = dict(checkpoint.params)
    name = sorted(wrong)[0]
    wrong[name] = wrong[name][:1]
    with pytest.raises(CheckpointError, match="does not fit"):
        FinetuneRun.from_checkpoint(checkpoint.extra, wrong, GGUFFile.open(str(bases["text"])),
                                    TrainingData([], chats))


# ----------------------------------------------------------------------------------------------
# 6. The command line (the tiny "tokN" vocabulary would encode no answer: "no assistant answer fits")


def cli(*args, timeout=300):
    return subprocess.run(CLI + [str(a) for a in args], cwd=str(REPO), env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def write_jsonl(path: Path, chats) -> Path:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    return path


@pytest.mark.slow
def test_cli_finetune_writes_model_log_and_chart(bases, tmp_path):
    data = write_jsonl(tmp_path / "chats.jsonl", text_chats(4))
    out = tmp_path / "tuned.gguf"
    result = cli("finetune", bases["text"], "--data", data, "--out", out, "--epochs", 1, "--batch", 2,
                 "--seq-len", 32, "--replay", 0)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # 4 conversations: the plan puts adapters on the MLP too (finetune_plan.MLP_BELOW)
    assert "LoRA rank 8 on attn+mlp" in result.stderr
    assert "4 conversations + 0 replayed, at most 2 steps" in result.stderr
    assert "wrote %s" % out in result.stderr and "greedy answers reproduce" in result.stderr
    records = [r for r in json.loads((tmp_path / "tuned.log.json").read_text()) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
    assert (tmp_path / "tuned.loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "tuned.ckpt.npz").exists()
    base, tuned = reader_fields(bases["text"]), reader_fields(out)
    assert tuned["general.file_type"][0] == 0
    assert tuned["tokenizer.ggml.tokens"] == base["tokenizer.ggml.tokens"]
    tokens = [1, 40, 41, 87, 200]
    ours = Model.from_gguf(str(out), policy="float32").forward(tokens, 0, all_logits=True)  # [5, vocab]
    reference = transformers_logits(out, tokens)  # transformers' llama on the same file
    assert max_diff(ours, reference) < LOGIT_TOL
    assert max_diff(reference, transformers_logits(bases["text"], tokens)) > 1e-3  # tuned: not the base's logits


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("missing data", "cannot read %(dir)s/nothing.jsonl: No such file or directory"),
    ("gemma3", "fine-tuning supports llama and qwen2 models; %(bases)s/gemma3.gguf is gemma3"),
    ("rank 0", "rank must be at least 1, got 0"),
])
def test_cli_finetune_errors_are_one_line(bases, tmp_path, case, message):
    data = write_jsonl(tmp_path / "chats.jsonl", text_chats(4))
    args = {"missing data": [bases["text"], "--data", tmp_path / "nothing.jsonl"],
            "gemma3": [bases["gemma3"], "--data", data],
            "rank 0": [bases["text"], "--data", data, "--rank", 0]}[case]
    result = cli("finetune", *args, "--out", tmp_path / "m.gguf", timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message % {"dir": tmp_path, "bases": bases["gemma3"].parent} in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.gguf").exists()


# ----------------------------------------------------------------------------------------------
# 7. A real model


# In a child with one BLAS thread: on a busy 2-core machine OpenBLAS's own threads made these two steps take
# 30 s instead of 7 s; the child also gives back the float32 copy of the model (0.5 GB) when it ends.
_SMOLLM2_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.train import transformer
    from pychat_wasm.train.data import read_training_file
    from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings
    started = time.perf_counter()
    run = FinetuneRun(FinetuneSettings(seq_len=96, batch_size=2), GGUFFile.open(sys.argv[1]),
                      read_training_file(sys.argv[2]))
    built = time.perf_counter() - started
    batch = run.batch(run.phases[0], 0)
    before = {n: run.params[n].copy() for n in run.trainable}
    records = [run.step(), run.step()]
    total, count = transformer.loss_only(run.config, run.params, batch.ids, batch.targets, batch.mask,
                                         run.lora_scale, batch.layout)
    changed = {n: bool(not np.array_equal(run.params[n], before[n])) for n in run.trainable}
    print(json.dumps({"built": built, "seconds": time.perf_counter() - started - built,
                      "total_steps": run.total_steps, "examples": len(run.phases[0].examples),
                      "records": [{k: r[k] for k in ("loss", "tokens", "grad_norm")} for r in records],
                      "batch0_after": total / count, "changed": changed, "arch": run.config.arch}))
""")


@pytest.mark.slow
def test_smollm2_two_steps_on_the_shipped_example(smollm2_path):
    done = subprocess.run([sys.executable, "-c", _SMOLLM2_CHILD, str(smollm2_path), EXAMPLE_DATA], cwd=str(REPO),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    losses = [r["loss"] for r in result["records"]]
    print("SmolLM2: built in %.1f s, 2 steps in %.1f s, losses %s, batch 0 after them %.4f"
          % (result["built"], result["seconds"], np.round(losses, 4).tolist(), result["batch0_after"]))
    # 40 chats, 2 held out for validation, all within 96 tokens; 38 get the minimum passes, in batches of 2
    assert result["arch"] == "llama" and result["examples"] == 38 and result["total_steps"] == MIN_PASSES * 19
    assert all(math.isfinite(r["loss"]) and r["tokens"] > 0 and r["grad_norm"] > 0 for r in result["records"])
    assert 0.5 < losses[0] < 10  # a pretrained model on plain English answers
    changed = result["changed"]
    assert len(changed) == 2 * 30 * 4  # attn adapters, 30 layers
    assert all(changed.values())
    assert result["batch0_after"] < losses[0]  # the first batch got easier

