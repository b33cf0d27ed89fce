"""LoRA fine-tuning of SmolLM2-135M: speed and peak memory next to PyTorch CPU, and what a small run costs and teaches.

    python bench/bench_finetune.py                  # both parts: 20 to 60 minutes on 2 shared cores
    python bench/bench_finetune.py --quick          # one repeat, only batch 1 x 128 (and part 2)
    python bench/bench_finetune.py --part speed     # or --part time: only one part

1. Speed and peak memory. LoRA rank 8, alpha 16 (scale 2), on the attention projections (q, k, v, o) and,
   as a second row, on attention and MLP (q, k, v, o, gate, up, down), AdamW, at batch 1 x 128 and
   4 x 256 tokens. The parent dequantizes the base model with pychat_wasm.train.finetune.base_parameters
   and saves it, with the token sequences, to a temporary .npz. The sequences are real text: the
   conversations of pychat_wasm/train/corpus/finetune_example.jsonl rendered with the model's chat template
   and concatenated (repeated if needed) into B sequences of exactly T + 1 ids (inputs and targets
   overlap by all but one), every target counted by the loss. Two child processes then train on them:
     numpy   the product's own path: a FinetuneRun built from the GGUF (dequantized base, adapters from
             init_adapters, seed 0), its phase replaced by one holding exactly those sequences, and
             run.step() (loss_and_grads with lora_scale and the trainable adapters, global-norm clipping
             to 1.0, warm-up + cosine learning rate, AdamW with weight decay 0.01 on the adapters);
     torch   plain PyTorch CPU, eager: the .npz base weights as frozen tensors (torch.from_numpy, no
             copy), the same adapters (init_adapters, seed 0), tests/support/torch_llama.py -- an independent
             torch implementation of the same model with LoRA (F.rms_norm, scaled_dot_product_attention,
             F.cross_entropy); the child puts tests/support/ on sys.path to import it -- with autograd,
             torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW over the adapters only (betas 0.9/0.95,
             eps 1e-8, weight decay 0.01), at the same learning rate each step.
   Each side runs in its own process (importing torch into the numpy process slows numpy) with the same
   thread count: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS in its environment and
   torch.set_num_threads in the torch child. A child runs one warm-up step (--warmup), then --repeats
   timed passes (default 3) of --steps optimizer steps; speed is B * T tokens per step over the best pass
   (other work on a shared machine only ever slows a pass down) of --rounds children per side (default 2,
   alternating numpy, torch, numpy, torch, so that a busy moment hurts neither side alone).
   Memory is the child's peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss), next to its RSS once the
   weights are loaded and before the first step, and to what the browser worker's memory check
   (worker_api.begin_finetune: GGUF size + finetune.estimated_bytes) expects. Both sides start from the
   same weights on the same sequences, so their losses must agree step by step: the table shows the
   largest difference, a check that both do the same work. Target: numpy/torch tokens/s >= 0.5.

2. Time to fine-tune on 20 examples. In a child process with the same thread count, what
   `pychat-wasm finetune` does with FinetuneSettings defaults on examples/finetune_small/own_data.jsonl (20
   conversations about a made-up planet; fewer than 40, so none is held out): open the GGUF, build the
   FinetuneRun, every step to the end, export (run.gguf_writer().to_bytes(), F32). The wall time covers all
   of it; target <= 600 s. Then the exported model runs in ChatSession (session_from_gguf_bytes) and
   keyword_report scores the greedy answers to examples/finetune_small/own_eval.json: "taught" (questions
   about the taught facts, reworded) and "general" (facts the base model knew, which fine-tuning should
   not break); the base model's scores are shown next to them.

The tables are followed by a Markdown summary. The exit status is 0 whatever the figures (PASS/FAIL
against the targets is reported, not enforced).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SEQUENCE_DATA = REPO / "pychat_wasm" / "train" / "corpus" / "finetune_example.jsonl"
OWN_DATA = REPO / "examples" / "finetune_small" / "own_data.jsonl"
OWN_EVAL = REPO / "examples" / "finetune_small" / "own_eval.json"
RANK, ALPHA = 8, 16.0
TARGET_SETS = ("attn", "attn+mlp")
SHAPES = ((1, 128), (4, 256))  # (sequences, tokens) per step
STEPS = {(1, 128): 8, (4, 256): 3}  # timed optimizer steps per pass
SPEED_TARGET = 0.5  # numpy tokens/s over torch tokens/s
TIME_TARGET = 600.0  # seconds for the whole 20-example run
PEAK_LR = 1e-3
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MB = 2 ** 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # Linux: kilobytes


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def child_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def run_child(args: List[str], threads: int) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--threads", str(threads)] + args,
                         env=child_env(threads), cwd=str(REPO), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("child %s failed:\n%s" % (" ".join(args), out.stderr[-3000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Part 1, parent: the base weights and the token sequences both children train on


def save_inputs(model: Path, shapes: List[Tuple[int, int]], path: str) -> Dict[str, Any]:
    import numpy as np

    from pychat_wasm.chat.template import ChatTemplate
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.config import ModelConfig
    from pychat_wasm.tokenizers import load_tokenizer
    from pychat_wasm.train.data import encode_conversation, read_training_file
    from pychat_wasm.train.finetune import base_parameters

    gguf = GGUFFile.open(str(model))
    tokenizer = load_tokenizer(gguf)
    template = ChatTemplate.from_gguf(gguf, tokenizer)
    stream: List[int] = []
    for chat in read_training_file(str(SEQUENCE_DATA)).conversations:
        stream.extend(encode_conversation(tokenizer, template, chat).ids)
    arrays: Dict[str, Any] = {}
    for b, t in shapes:
        need = b * (t + 1)
        ids = np.array((stream * (need // len(stream) + 1))[:need], dtype=np.int64).reshape(b, t + 1)
        arrays["seq/%dx%d" % (b, t)] = ids
    params = base_parameters(gguf)
    arrays.update({"p/" + name: value for name, value in params.items()})
    cfg = ModelConfig.from_gguf(gguf)
    meta = {"model": str(model), "parameters": int(sum(p.size for p in params.values())),
            "stream_tokens": len(stream), "n_layers": cfg.n_layers, "dim": cfg.dim, "ffn_dim": cfg.ffn_dim,
            "vocab_size": cfg.vocab_size, "gguf_bytes": gguf.size}
    del params
    np.savez(path, **arrays)
    return meta


# ----------------------------------------------------------------------------------------------
# Part 1, children: numpy or torch, each alone in its process


def schedule(total: int):
    """The learning rate of each step of a phase of `total` steps, as TrainingRun.step computes it."""
    from pychat_wasm.train.optim import learning_rate
    from pychat_wasm.train.run import WARMUP_FRACTION

    return [learning_rate(s, total, PEAK_LR, max(1, int(total * WARMUP_FRACTION))) for s in range(total)]


def timed_passes(step_fn, warmup: int, steps: int, repeats: int) -> Dict[str, Any]:
    """`warmup` steps, then `repeats` passes of `steps` steps; the losses of every step in order."""
    loaded_rss, loaded_peak = current_rss_mb(), peak_rss_mb()
    losses = [step_fn(i) for i in range(warmup)]
    seconds = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            losses.append(step_fn(warmup + r * steps + i))
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "losses": losses, "loaded_rss_mb": loaded_rss, "loaded_peak_mb": loaded_peak,
            "peak_rss_mb": peak_rss_mb()}


def child_numpy(model: str, data: str, targets: str, b: int, t: int, warmup: int, steps: int,
                repeats: int) -> Dict[str, Any]:
    import numpy as np

    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.train.data import Example, read_training_file
    from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings
    from pychat_wasm.train.run import Phase

    with np.load(data) as z:
        ids = z["seq/%dx%d" % (b, t)]
    started = time.perf_counter()
    settings = FinetuneSettings(rank=RANK, alpha=ALPHA, targets=targets, batch_size=b, seq_len=t)
    run = FinetuneRun(settings, GGUFFile.open(model), read_training_file(str(SEQUENCE_DATA)))
    setup = time.perf_counter() - started
    total = warmup + repeats * steps + 1  # the last step never runs: no end-of-phase validation in a pass
    examples = [Example(row.tolist(), [1] * len(row)) for row in ids]
    run.phases = [Phase("bench", examples, [], total, PEAK_LR)]
    lrs = schedule(total)

    def step(i: int) -> float:
        record = run.step()
        assert record["tokens"] == b * t and abs(record["lr"] - lrs[i]) < 1e-12
        return float(record["loss"])

    assert "torch" not in sys.modules
    n_adapters = int(sum(run.params[n].size for n in run.trainable))
    return dict(timed_passes(step, warmup, steps, repeats), version=np.__version__, setup_s=setup, adapters=n_adapters)


def child_torch(model: str, data: str, targets: str, b: int, t: int, warmup: int, steps: int, repeats: int,
                threads: int) -> Dict[str, Any]:
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "tests" / "support"))
    import torch_llama  # the independent torch model the trainer's tests check against

    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.layers import rope_angles, rope_frequencies
    from pychat_wasm.model.config import ModelConfig
    from pychat_wasm.train.finetune import init_adapters

    torch.set_num_threads(threads)
    started = time.perf_counter()
    cfg = ModelConfig.from_gguf(GGUFFile.open(model))
    with np.load(data) as z:
        ids = z["seq/%dx%d" % (b, t)]
        base = {k[2:]: z[k] for k in z.files if k.startswith("p/")}
    adapters = init_adapters(cfg, base, targets, RANK, seed=0)  # what FinetuneRun gives (seed 0)
    params = {name: torch.from_numpy(value) for name, value in base.items()}  # frozen: requires_grad False
    trained = {name: torch.from_numpy(value).requires_grad_(True) for name, value in adapters.items()}
    params.update(trained)
    leaves = list(trained.values())
    optimizer = torch.optim.AdamW(leaves, lr=PEAK_LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    cos, sin = (torch.from_numpy(a) for a in rope_angles(np.arange(t), rope_frequencies(cfg.head_dim, cfg.rope_base)))
    inputs = torch.from_numpy(np.ascontiguousarray(ids[:, :-1]))
    targets_t = torch.from_numpy(np.ascontiguousarray(ids[:, 1:]))
    mask = torch.ones(b, t, dtype=torch.float32)
    scale = ALPHA / RANK
    lrs = schedule(warmup + repeats * steps + 1)
    setup = time.perf_counter() - started

    def step(i: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch_llama.loss(cfg, params, inputs, targets_t, mask, cos, sin, lora_scale=scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(leaves, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lrs[i]
        optimizer.step()
        return float(loss.item())

    return dict(timed_passes(step, warmup, steps, repeats), version=torch.__version__, threads=torch.get_num_threads(),
                setup_s=setup, adapters=int(sum(p.numel() for p in leaves)))


# ----------------------------------------------------------------------------------------------
# Part 1: the table


def estimate_mb(meta: Dict[str, Any], targets: str, b: int, t: int) -> float:
    """What the browser worker's memory check expects: GGUF size + finetune.estimated_bytes."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.config import ModelConfig
    from pychat_wasm.train.finetune import FinetuneSettings, estimated_bytes

    gguf = GGUFFile.open(meta["model"])
    n_params = sum(info.n_elements for info in gguf.tensors.values())
    settings = FinetuneSettings(rank=RANK, alpha=ALPHA, targets=targets, batch_size=b, seq_len=t)
    return (gguf.size + estimated_bytes(ModelConfig.from_gguf(gguf), n_params, settings)) / MB


def bench_speed(model: Path, shapes: List[Tuple[int, int]], threads: int, warmup: int, repeats: int, rounds: int,
                steps_override: int) -> List[Dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inputs.npz")
        started = time.perf_counter()
        meta = save_inputs(model, shapes, path)
        print("%s: %s parameters dequantized to float32 and saved in %.1f s; sequences from %d tokens of "
              "rendered chats (%s)" % (model.name, "{:,}".format(meta["parameters"]), time.perf_counter() - started,
                                       meta["stream_tokens"], SEQUENCE_DATA.name), file=sys.stderr)
        for targets in TARGET_SETS:
            for b, t in shapes:
                steps = steps_override or STEPS.get((b, t), 4)
                args = ["--model", meta["model"], "--data", path, "--targets", targets, "--shape", "%dx%d" % (b, t),
                        "--steps", str(steps), "--warmup", str(warmup), "--repeats", str(repeats)]
                results: Dict[str, List[Dict[str, Any]]] = {"numpy": [], "torch": []}
                for _ in range(rounds):
                    for side in ("numpy", "torch"):
                        results[side].append(run_child(["--child", side] + args, threads))
                best = {side: min(s for r in results[side] for s in r["seconds"]) for side in results}
                tps = {side: steps * b * t / best[side] for side in best}
                peak = {side: max(r["peak_rss_mb"] for r in results[side]) for side in results}
                loaded = {side: max(r["loaded_rss_mb"] for r in results[side]) for side in results}
                diff = max(abs(x - y) for x, y in zip(results["numpy"][0]["losses"], results["torch"][0]["losses"]))
                row = dict(targets=targets, batch=b, tokens=t, steps=steps, threads=threads,
                           numpy_tps=tps["numpy"], torch_tps=tps["torch"], ratio=tps["numpy"] / tps["torch"],
                           numpy_ms=1000 * best["numpy"] / steps, torch_ms=1000 * best["torch"] / steps,
                           numpy_peak_mb=peak["numpy"], torch_peak_mb=peak["torch"],
                           numpy_loaded_mb=loaded["numpy"], torch_loaded_mb=loaded["torch"],
                           estimate_mb=estimate_mb(meta, targets, b, t), loss_diff=diff,
                           loss_steps=len(results["numpy"][0]["losses"]), first_loss=results["numpy"][0]["losses"][0],
                           last_loss=results["numpy"][0]["losses"][-1], adapters=results["numpy"][0]["adapters"],
                           torch_adapters=results["torch"][0]["adapters"],
                           numpy_setup_s=min(r["setup_s"] for r in results["numpy"]),
                           torch_setup_s=min(r["setup_s"] for r in results["torch"]),
                           numpy_version=results["numpy"][0]["version"], torch_version=results["torch"][0]["version"],
                           torch_threads=results["torch"][0]["threads"])
                assert row["adapters"] == row["torch_adapters"]
                rows.append(row)
                print("  %-8s %dx%-3d: numpy %.0f tokens/s, torch %.0f tokens/s, ratio %.2f; peak %.0f / %.0f MB; "
                      "|loss diff| %.1e over %d steps (loss %.3f -> %.3f); load avg %.2f" % (
                          targets, b, t, row["numpy_tps"], row["torch_tps"], row["ratio"], row["numpy_peak_mb"],
                          row["torch_peak_mb"], diff, row["loss_steps"], row["first_loss"], row["last_loss"],
                          os.getloadavg()[0]), file=sys.stderr)
                passes = tuple(" ".join("%.1f" % x for r in results[side] for x in r["seconds"])
                               for side in ("numpy", "torch"))
                print("           seconds per pass: numpy %s; torch %s" % passes, file=sys.stderr)
    print()
    print("%-9s %-7s %9s %11s %11s %9s %9s %7s %6s %10s %10s %8s %9s %11s" % (
        "targets", "batch", "adapters", "numpy tok/s", "torch tok/s", "numpy ms", "torch ms", "ratio", "",
        "numpy MB", "torch MB", "mem n/t", "estim. MB", "|loss diff|"))
    for r in rows:
        print("%-9s %-7s %9s %11.0f %11.0f %9.0f %9.0f %7.2f %6s %10s %10s %8.2f %9.0f %11.1e" % (
            r["targets"], "%dx%d" % (r["batch"], r["tokens"]), "{:,}".format(r["adapters"]), r["numpy_tps"],
            r["torch_tps"], r["numpy_ms"], r["torch_ms"], r["ratio"], "PASS" if r["ratio"] >= SPEED_TARGET else "FAIL",
            "%.0f (%.0f)" % (r["numpy_peak_mb"], r["numpy_loaded_mb"]),
            "%.0f (%.0f)" % (r["torch_peak_mb"], r["torch_loaded_mb"]), r["numpy_peak_mb"] / r["torch_peak_mb"],
            r["estimate_mb"], r["loss_diff"]))
    print("(ms: per optimizer step; ratio: numpy/torch tokens per second, target >= %.1f, best of %d passes x %d "
          "round(s); MB: peak RSS in MiB (RSS with the weights loaded, before the first step); estim.: the "
          "worker's memory check; %d threads; numpy %s, torch %s)"
          % (SPEED_TARGET, repeats, rounds, threads, rows[0]["numpy_version"], rows[0]["torch_version"]))
    return rows


# ----------------------------------------------------------------------------------------------
# Part 2: a whole fine-tuning run on 20 examples, in a child


def child_time(model: str, eval_base: bool) -> Dict[str, Any]:
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.chat.session import ChatSession
    from pychat_wasm.train.data import read_training_file
    from pychat_wasm.train.evaluate import keyword_report, session_from_gguf_bytes
    from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings, plan_finetune
    from pychat_wasm.train.replay import ReplayAnswers, replay_plan

    with open(OWN_EVAL) as fh:
        items = json.load(fh)
    started = time.perf_counter()
    gguf = GGUFFile.open(model)
    data = read_training_file(str(OWN_DATA))
    settings = FinetuneSettings()
    plan = replay_plan(gguf)
    questions = plan_finetune(settings, plan, data).replay_questions  # as many as `finetune` asks for this data
    replay = ReplayAnswers(plan, questions).answer_all()  # the base model's own answers, as `finetune` has
    replayed = time.perf_counter()
    run = FinetuneRun(settings, gguf, data, replay=replay, plan=plan)
    created = time.perf_counter()
    losses, tokens = [], 0
    while not run.finished:
        record = run.step()
        losses.append(record["loss"])
        tokens += record["tokens"]
        sys.stderr.write("  step %d of %d, loss %.3f, %.0f s\n" % (run.step_count, run.total_steps, record["loss"],
                                                                   time.perf_counter() - started))
    trained = time.perf_counter()
    exported = run.gguf_writer().to_bytes()
    wall = time.perf_counter() - started
    train_peak = peak_rss_mb()
    validation = [e["validation"] for e in run.log if "validation" in e and "loss" not in e and e["validation"]]
    session = session_from_gguf_bytes(exported)
    reports = {group: keyword_report(session, items[group]) for group in ("taught", "general")}
    result = dict(examples=len(data.conversations), trained_on=len(run.trained_on.conversations),
                  held_out=len(run.held_out.conversations), steps=run.total_steps, passes=run.plan.presentations,
                  stopped_early=run.stopped_early,
                  replayed=len(replay), replay_s=replayed - started,
                  settings=dataclasses.asdict(settings), setup_s=created - started, train_s=trained - created,
                  wall_s=wall, tokens_per_s=tokens / (trained - created), first_loss=losses[0], last_loss=losses[-1],
                  validation=validation[-1]["loss"] if validation else None, train_peak_mb=train_peak,
                  scores={g: [r.exact, r.total] for g, r in reports.items()},
                  misses={g: r.misses for g, r in reports.items()})
    del session, exported, run
    if eval_base:
        base = ChatSession.from_plan(plan)
        result["base_scores"] = {g: [r.exact, r.total] for g, r in
                                 ((g, keyword_report(base, items[g])) for g in ("taught", "general"))}
    result["eval_s"] = time.perf_counter() - started - wall
    return result


def bench_time(model: Path, threads: int, eval_base: bool) -> Dict[str, Any]:
    print("\ntime: FinetuneSettings() on %s, %d threads; load average %.2f" % (
        OWN_DATA.relative_to(REPO), threads, os.getloadavg()[0]), file=sys.stderr)
    args = ["--child", "time", "--model", str(model)] + ([] if eval_base else ["--no-base"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(threads)] + args
    proc = subprocess.run(cmd, env=child_env(threads), cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError("the time child failed (its stderr is above)")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    s = r["settings"]
    print()
    print("%-44s %5s %6s %8s %8s %5s %7s %13s %9s %9s" % (
        "data", "steps", "setup", "train s", "wall s", "", "tok/s", "loss", "taught", "general"))
    base = r.get("base_scores")

    def score(group: str) -> str:
        text = "%d/%d" % tuple(r["scores"][group])
        return text + (" (%d)" % base[group][0] if base else "")

    print("%-44s %5d %6.1f %8.1f %8.1f %5s %7.0f %13s %9s %9s" % (
        "%s (%d/%d)" % (OWN_DATA.relative_to(REPO), r["trained_on"], r["held_out"]), r["steps"], r["setup_s"],
        r["train_s"], r["wall_s"], "PASS" if r["wall_s"] <= TIME_TARGET else "FAIL", r["tokens_per_s"],
        "%.2f -> %.2f" % (r["first_loss"], r["last_loss"]), score("taught"), score("general")))
    for group in ("taught", "general"):
        for question, expected, got in r["misses"][group]:
            print("    %s miss: %r -> %r (expected %r)" % (group, question, got[:80], expected))
    print("(defaults: rank %d, alpha %g, targets %s, %d passes%s, lr %g, batch %d, seq_len %d; wall: open + "
          "%d replay answers (%.0f s) + dequantize + %d steps + F32 export, target <= %.0f s; taught/general: answers of the exported model "
          "containing the expected word, own_eval.json%s; held-out validation loss %s; peak RSS %.0f MiB; "
          "evaluation %.0f s)" % (
              s["rank"], s["alpha"], s["targets"], r["passes"], " (stopped early)" if r["stopped_early"] else "",
              s["lr"], s["batch_size"], s["seq_len"],
              r["replayed"], r["replay_s"], r["steps"],
              TIME_TARGET, ", base model in ()" if base else "",
              "%.3f" % r["validation"] if r["validation"] is not None else "-", r["train_peak_mb"], r["eval_s"]))
    return r


# ----------------------------------------------------------------------------------------------
# Summary


def markdown(speed: List[Dict[str, Any]], run: Dict[str, Any]) -> str:
    lines = []
    if speed:
        lines += ["| LoRA r%d targets | batch | numpy tokens/s | PyTorch tokens/s | numpy / PyTorch | "
                  "numpy peak MB | PyTorch peak MB |" % RANK, "|---|---|---:|---:|---:|---:|---:|"]
        for r in speed:
            lines.append("| %s | %d x %d | %.0f | %.0f | %.2f %s | %.0f | %.0f |" % (
                r["targets"], r["batch"], r["tokens"], r["numpy_tps"], r["torch_tps"], r["ratio"],
                "✓" if r["ratio"] >= SPEED_TARGET else "✗", r["numpy_peak_mb"], r["torch_peak_mb"]))
        lines.append("")
    if run:
        base = run.get("base_scores")

        def score(group: str) -> str:
            text = "%d/%d" % tuple(run["scores"][group])
            return text + (" (base %d/%d)" % tuple(base[group]) if base else "")

        lines += ["| fine-tuning run (defaults) | examples | steps | wall time | taught | general |",
                  "|---|---:|---:|---:|---:|---:|",
                  "| %s | %d (%d held out) | %d | %.0f s %s | %s | %s |" % (
                      OWN_DATA.relative_to(REPO), run["examples"], run["held_out"], run["steps"], run["wall_s"],
                      "✓" if run["wall_s"] <= TIME_TARGET else "✗", score("taught"), score("general"))]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL), help="a llama/qwen2 .gguf (default: SmolLM2-135M Q4_1)")
    parser.add_argument("--part", choices=("speed", "time", "all"), default="all", help="default %(default)s")
    parser.add_argument("--quick", action="store_true", help="speed: one repeat, only batch 1 x 128")
    parser.add_argument("--shapes", help="speed: comma-separated BxT (default %s; quick: the first)"
                        % ",".join("%dx%d" % shape for shape in SHAPES))
    parser.add_argument("--threads", type=int, default=2, help="threads of every child (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="speed: warm-up steps per child (default %(default)s)")
    parser.add_argument("--repeats", type=int, help="speed: timed passes per child (default 3, quick 1)")
    parser.add_argument("--rounds", type=int, help="speed: children per side, alternating (default 2, quick 1)")
    parser.add_argument("--steps", type=int, default=0, help="speed: optimizer steps per pass (default: %s)"
                        % ", ".join("%d at %dx%d" % (n, b, t) for (b, t), n in STEPS.items()))
    parser.add_argument("--no-base", action="store_true", help="time: skip scoring the base model")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--child", choices=("numpy", "torch", "time"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "time":
        print(json.dumps(child_time(args.model, not args.no_base)))
        return 0
    if args.child:
        b, t = (int(x) for x in args.shape.split("x"))
        plan = (args.model, args.data, args.targets, b, t, args.warmup, args.steps, args.repeats)
        result = child_numpy(*plan) if args.child == "numpy" else child_torch(*plan, args.threads)
        print(json.dumps(result))
        return 0

    model = Path(args.model)
    repeats = args.repeats or (1 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 2)
    shapes = list(SHAPES[:1] if args.quick else SHAPES)
    if args.shapes:
        shapes = [tuple(int(x) for x in shape.split("x")) for shape in args.shapes.split(",")]
    print("load average before: %.2f (other work on the machine slows both sides)" % os.getloadavg()[0],
          file=sys.stderr)
    speed: List[Dict[str, Any]] = []
    run: Dict[str, Any] = {}
    if args.part in ("speed", "all"):
        speed = bench_speed(model, shapes, args.threads, args.warmup, repeats, rounds, args.steps)
    if args.part in ("time", "all"):
        run = bench_time(model, args.threads, not args.no_base)
    print("\n" + markdown(speed, run))
    if args.json:
        print(json.dumps({"speed": speed, "time": run}, indent=2, default=str))
    print("load average after: %.2f" % os.getloadavg()[0], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
