"""Training speed next to PyTorch CPU, and what the default training run costs and learns.

    python bench/bench_train.py                        # both parts (26 minutes on 2 busy cores)
    python bench/bench_train.py --quality-threads 1    # part 2 on one BLAS thread (13 minutes there)
    python bench/bench_train.py --quick                # speed only, fewer repeats
    python bench/bench_train.py --part quality         # only the two full training runs

1. Speed. For each preset (tiny, the default, and quick) the parent builds the run a `pychat-wasm train`
   would make (ScratchRun.create on the shipped corpus), takes the real micro-batches of --batches steps
   spread evenly over the whole run (both phases, in proportion to their steps, with each step's
   learning rate) and saves them with the initial weights to a temporary .npz. Two child processes then
   train on exactly those inputs: numpy (pychat_wasm.train: loss_and_grads, clip_grad_norm, AdamW, as
   TrainingRun.step does) and torch (tests/support/torch_llama.py, an independent implementation of the same model
   using F.rms_norm, scaled_dot_product_attention and F.cross_entropy, with torch autograd,
   torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW at its defaults, weight decay on matrices only;
   eager mode). The torch child puts tests/support/ on sys.path to import it. The children are separate processes
   because importing torch into the numpy process slows numpy (the two thread pools contend), and each
   gets the same thread count: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS in its
   environment, and torch.set_num_threads in the torch child. A child runs --warmup steps, then --repeats
   timed passes over the saved batches (one optimizer step each: forward, backward, clipping to norm 1.0,
   AdamW); the figure is the best pass over all repeats and --rounds (numpy, torch, numpy, torch... so that
   a busy moment on a shared machine hurts neither side alone; other work only ever slows a pass down).
   Speed is non-padding input tokens per second. Both sides start from the same weights on the same
   batches, so their losses must agree step for step: the table shows the largest difference over the
   first steps, a check that both do the same work. Target: numpy/torch >= 0.5.

2. Quality. In this process, what `pychat-wasm train` does with its defaults: ScratchRun.create(
   TrainSettings(), builtin_corpus()), every step to the end, export to GGUF (F32). Wall time covers the
   tokenizer, the model's initialisation, all steps (with their validation passes) and the export; target
   <= 180 s. Then the exported GGUF runs in ChatSession (answer_report): how many of the training chats'
   answers greedy decoding reproduces exactly (target >= 90%), and of the held-out chats; and the
   held-out validation loss and perplexity at the end of each phase (and the lowest of the validations
   every eval_every steps, where it was lower: how far the end has overfitted). The same again for a user's own small
   data set in RustGPT's format, examples/rustgpt_small/ (pretraining_data.json + chat_training_data.json,
   read with read_training_file and merged). Part 2 uses the BLAS threads OpenBLAS picks unless
   --quality-threads N (or OPENBLAS_NUM_THREADS) pins them; on a machine that other work keeps busy, two
   BLAS threads on two cores can be several times slower than one (the threads wait for each other).

Both parts print a table, then a Markdown summary for the README. The exit status is 0 whatever the
figures (PASS/FAIL against the targets is reported, not enforced).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEED_TARGET = 0.5  # numpy tokens/s over torch tokens/s
TIME_TARGET = 180.0  # seconds for the default run on the shipped corpus
ANSWER_TARGET = 0.9  # exact greedy reproduction of the training answers
LOSS_CHECK_STEPS = 10  # losses compared between the two sides over the first steps
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
USER_DATA = REPO / "examples" / "rustgpt_small"


# ----------------------------------------------------------------------------------------------
# Part 1, parent: the inputs both children train on


def save_inputs(preset: str, n_batches: int, path: str) -> Dict[str, Any]:
    """Save the run's initial weights and the micro-batches of n_batches steps spread over the run."""
    import numpy as np

    from pychat_wasm.train.data import builtin_corpus
    from pychat_wasm.train.optim import learning_rate
    from pychat_wasm.train.run import WARMUP_FRACTION
    from pychat_wasm.train.scratch import ScratchRun, TrainSettings

    run = ScratchRun.create(TrainSettings(preset=preset), builtin_corpus())
    total = run.total_steps
    arrays: Dict[str, Any] = {"p/" + name: value for name, value in run.params.items()}
    tokens, lrs, shapes, phases = [], [], [], []
    for i in range(n_batches):
        step = (2 * i + 1) * total // (2 * n_batches)  # the middles of n_batches equal slices of the run
        phase, phase_step = run.phase_at(step)
        accum = run.loop.grad_accum
        for j in range(accum):
            batch = run.batch(phase, phase_step * accum + j)
            arrays["ids/%d/%d" % (i, j)] = batch.ids
            arrays["targets/%d/%d" % (i, j)] = batch.targets
            arrays["mask/%d/%d" % (i, j)] = batch.mask
            shapes.append(batch.ids.shape)
            tokens.append(batch.tokens)
        lrs.append(learning_rate(phase_step, phase.steps, phase.lr, max(1, int(phase.steps * WARMUP_FRACTION))))
        phases.append(phase.name)
    cfg = run.config
    meta = {"preset": preset, "dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
            "n_kv_heads": cfg.n_kv_heads, "ffn_dim": cfg.ffn_dim, "vocab_size": cfg.vocab_size,
            "context_length": cfg.context_length, "grad_accum": run.loop.grad_accum, "n_steps": n_batches,
            "lrs": lrs, "weight_decay": run.loop.weight_decay, "clip_norm": run.loop.clip_norm,
            "tokens_per_pass": sum(tokens), "positions_per_pass": int(sum(b * t for b, t in shapes)),
            "batch_size": run.loop.batch_size, "phases": phases,
            "parameters": int(sum(p.size for p in run.params.values()))}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return meta


def run_child(side: str, data: str, threads: int, warmup: int, repeats: int) -> Dict[str, Any]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", side, "--data", data,
                          "--threads", str(threads), "--warmup", str(warmup), "--repeats", str(repeats)],
                         env=env, cwd=str(REPO), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("%s child failed:\n%s" % (side, out.stderr[-3000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Part 1, children: numpy or torch, each alone in its process


def load_inputs(path: str):
    import numpy as np

    z = np.load(path)
    meta = json.loads(bytes(z["meta"]).decode())
    params = {k[2:]: z[k] for k in z.files if k.startswith("p/")}
    steps = [[(z["ids/%d/%d" % (i, j)], z["targets/%d/%d" % (i, j)], z["mask/%d/%d" % (i, j)])
              for j in range(meta["grad_accum"])] for i in range(meta["n_steps"])]
    return meta, params, steps


def config_of(meta: Dict[str, Any]):
    from pychat_wasm.train.transformer import llama_config

    return llama_config(meta["dim"], meta["n_layers"], meta["n_heads"], meta["n_kv_heads"], meta["ffn_dim"],
                        meta["vocab_size"], context_length=meta["context_length"])


def timed_passes(step_fn, n_steps: int, warmup: int, repeats: int) -> Dict[str, Any]:
    """warmup steps, then `repeats` passes over the n_steps saved steps; each pass's seconds and the losses."""
    losses = [step_fn(i % n_steps) for i in range(warmup)]
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n_steps):
            losses.append(step_fn(i))
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "losses": losses}


def child_numpy(path: str, warmup: int, repeats: int) -> Dict[str, Any]:
    import numpy as np

    from pychat_wasm.train import transformer
    from pychat_wasm.train.optim import AdamW, clip_grad_norm

    meta, params, steps = load_inputs(path)
    cfg = config_of(meta)
    optimizer = AdamW(weight_decay=meta["weight_decay"])

    def step(i: int) -> float:  # TrainingRun.step without the bookkeeping
        grads: Dict[str, Any] = {}
        loss_sum = 0.0
        for ids, targets, mask in steps[i]:
            loss, micro = transformer.loss_and_grads(cfg, params, ids, targets, mask)
            loss_sum += loss
            for name, g in micro.items():
                grads[name] = g if name not in grads else grads[name] + g
        if len(steps[i]) > 1:
            grads = {name: g / np.float32(len(steps[i])) for name, g in grads.items()}
        clip_grad_norm(grads, meta["clip_norm"])
        optimizer.step(params, grads, meta["lrs"][i])
        return loss_sum / len(steps[i])

    return dict(timed_passes(step, meta["n_steps"], warmup, repeats), version=np.__version__)


def child_torch(path: str, threads: int, warmup: int, repeats: int) -> Dict[str, Any]:
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "tests" / "support"))
    import torch_llama  # the independent torch model the trainer's tests check against

    from pychat_wasm.model.layers import rope_angles, rope_frequencies

    torch.set_num_threads(threads)
    meta, params, steps = load_inputs(path)
    cfg = config_of(meta)
    t_params = torch_llama.to_torch(params)
    matrices = [p for p in t_params.values() if p.dim() >= 2]
    vectors = [p for p in t_params.values() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": meta["weight_decay"]},
                                   {"params": vectors, "weight_decay": 0.0}],
                                  lr=meta["lrs"][0], betas=(0.9, 0.95), eps=1e-8)
    inv_freq = rope_frequencies(cfg.head_dim, cfg.rope_base)
    t_steps = []
    for micro_batches in steps:
        converted = []
        for ids, targets, mask in micro_batches:
            cos, sin = (torch.from_numpy(a) for a in rope_angles(np.arange(ids.shape[1]), inv_freq))
            converted.append((torch.from_numpy(ids), torch.from_numpy(targets), torch.from_numpy(mask), cos, sin))
        t_steps.append(converted)
    all_params = list(t_params.values())

    def step(i: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for ids, targets, mask, cos, sin in t_steps[i]:
            loss = torch_llama.loss(cfg, t_params, ids, targets, mask, cos, sin) / len(t_steps[i])
            loss.backward()
            loss_sum += loss.item()
        torch.nn.utils.clip_grad_norm_(all_params, meta["clip_norm"])
        for group in optimizer.param_groups:
            group["lr"] = meta["lrs"][i]
        optimizer.step()
        return loss_sum

    return dict(timed_passes(step, meta["n_steps"], warmup, repeats), version=torch.__version__,
                threads=torch.get_num_threads())


# ----------------------------------------------------------------------------------------------
# Part 1: the table


def bench_speed(presets: List[str], thread_counts: List[int], n_batches: int, warmup: int, repeats: int,
                rounds: int) -> List[Dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            path = os.path.join(tmp, preset + ".npz")
            meta = save_inputs(preset, n_batches, path)
            print("%s: %s parameters (%d layers, width %d, vocabulary %d); %d steps of %d sequences, %d tokens "
                  "(%d positions with padding) per pass: %s" % (
                      preset, "{:,}".format(meta["parameters"]), meta["n_layers"], meta["dim"], meta["vocab_size"],
                      meta["n_steps"], meta["batch_size"], meta["tokens_per_pass"], meta["positions_per_pass"],
                      " ".join("%s:%d" % (p, meta["phases"].count(p)) for p in dict.fromkeys(meta["phases"]))),
                  file=sys.stderr)
            for threads in thread_counts:
                results: Dict[str, List[Dict[str, Any]]] = {"numpy": [], "torch": []}
                for _ in range(rounds):
                    for side in ("numpy", "torch"):
                        results[side].append(run_child(side, path, threads, warmup, repeats))
                best = {side: min(s for r in results[side] for s in r["seconds"]) for side in results}
                tps = {side: meta["tokens_per_pass"] / best[side] for side in best}
                checked = min(LOSS_CHECK_STEPS, len(results["numpy"][0]["losses"]))
                diff = max(abs(a - b) for a, b in zip(results["numpy"][0]["losses"][:checked],
                                                      results["torch"][0]["losses"][:checked]))
                row = dict(preset=preset, threads=threads, numpy_tps=tps["numpy"], torch_tps=tps["torch"],
                           ratio=tps["numpy"] / tps["torch"], loss_diff=diff, loss_steps=checked,
                           numpy_ms=1000 * best["numpy"] / meta["n_steps"],
                           torch_ms=1000 * best["torch"] / meta["n_steps"],
                           numpy_version=results["numpy"][0]["version"], torch_version=results["torch"][0]["version"],
                           torch_threads=results["torch"][0]["threads"])
                rows.append(row)
                print("  %d thread%s: numpy %.0f tokens/s, torch %.0f tokens/s, ratio %.2f; |loss diff| %.1e over "
                      "%d steps" % (threads, "" if threads == 1 else "s", row["numpy_tps"], row["torch_tps"],
                                    row["ratio"], diff, checked), file=sys.stderr)
    print()
    print("%-7s %7s %12s %12s %10s %10s %8s %12s %6s" % ("preset", "threads", "numpy tok/s", "torch tok/s",
                                                          "numpy ms", "torch ms", "ratio", "|loss diff|", ""))
    for r in rows:
        print("%-7s %7d %12.0f %12.0f %10.1f %10.1f %8.2f %12.1e %6s" % (
            r["preset"], r["threads"], r["numpy_tps"], r["torch_tps"], r["numpy_ms"], r["torch_ms"], r["ratio"],
            r["loss_diff"], "PASS" if r["ratio"] >= SPEED_TARGET else "FAIL"))
    print("(ms: per optimizer step; ratio: numpy/torch tokens per second, target >= %.1f; numpy %s, torch %s)"
          % (SPEED_TARGET, rows[0]["numpy_version"], rows[0]["torch_version"]))
    return rows


# ----------------------------------------------------------------------------------------------
# Part 2: the default run, to the end


def user_data():
    from pychat_wasm.train.data import TrainingData, read_training_file

    data = TrainingData([], [])
    for name in ("pretraining_data.json", "chat_training_data.json"):
        part = read_training_file(str(USER_DATA / name))
        data.documents.extend(part.documents)
        data.conversations.extend(part.conversations)
    return data


def train_and_evaluate(label: str, data: Any) -> Dict[str, Any]:
    from pychat_wasm.train.evaluate import answer_report, session_from_gguf_bytes
    from pychat_wasm.train.scratch import ScratchRun, TrainSettings

    interactive = sys.stderr.isatty()
    started = time.perf_counter()
    run = ScratchRun.create(TrainSettings(), data)
    created = time.perf_counter()
    tokens = 0
    while not run.finished:
        record = run.step()
        tokens += record["tokens"]
        if run.step_count % 100 == 0:
            sys.stderr.write("%s  %s: step %d of %d, loss %.3f, %.0f s " % (
                "\r" if interactive else "\n", label, run.step_count, run.total_steps, record["loss"],
                time.perf_counter() - started))
    trained = time.perf_counter()
    model = run.gguf_writer().to_bytes()
    exported = time.perf_counter()
    wall = exported - started
    sys.stderr.write("\n")
    session = session_from_gguf_bytes(model)
    train_report = answer_report(session, run.trained_on.conversations)
    held_report = answer_report(session, run.held_out.conversations) if run.held_out.conversations else None
    validation: Dict[str, Any] = {}  # the last validation of each phase (at its end), and its lowest
    for entry in run.log:
        if "validation" in entry and "loss" not in entry and entry["validation"]:
            v = entry["validation"]
            best = validation.get(v["phase"], {}).get("best", v)
            validation[v["phase"]] = dict(v, best=min(best, v, key=lambda x: x["loss"]))
    return dict(data=label, preset=run.settings.preset, documents=len(run.data.documents),
                chats=len(run.data.conversations), held_documents=len(run.held_out.documents),
                held_chats=len(run.held_out.conversations), steps=run.total_steps,
                parameters=int(sum(p.size for p in run.params.values())), setup_s=created - started,
                train_s=trained - created, wall_s=wall, tokens_per_s=tokens / (trained - created),
                exact=train_report.exact, total=train_report.total, rate=train_report.rate,
                misses=train_report.misses[:5], held_exact=held_report.exact if held_report else None,
                held_total=held_report.total if held_report else 0, validation=validation,
                eval_every=run.loop.eval_every,
                eval_s=time.perf_counter() - exported)


def bench_quality() -> List[Dict[str, Any]]:
    from pychat_wasm.train.data import builtin_corpus

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "OpenBLAS's choice (%d cores)" % os.cpu_count())
    print("\nquality: default preset, BLAS threads %s; load average %.2f" % (threads, os.getloadavg()[0]),
          file=sys.stderr)
    rows = [train_and_evaluate("shipped corpus", builtin_corpus()),
            train_and_evaluate("examples/rustgpt_small", user_data())]
    print()
    print("%-22s %5s %5s %5s %11s %7s %7s %14s %8s  %s" % (
        "data", "docs", "chats", "steps", "wall s", "tok/s", "eval s", "answers", "held-out",
        "validation loss / perplexity: pretrain; chat"))
    for r in rows:
        print("%-22s %5d %5d %5d %11s %7.0f %7.1f %14s %8s  %s; %s" % (
            r["data"], r["documents"], r["chats"], r["steps"],
            "%.1f %s" % (r["wall_s"], "PASS" if r["wall_s"] <= TIME_TARGET else "FAIL"), r["tokens_per_s"],
            r["eval_s"], "%d/%d %s" % (r["exact"], r["total"], "PASS" if r["rate"] >= ANSWER_TARGET else "FAIL"),
            held_text(r), validation_text(r, "pretrain"), validation_text(r, "chat")))
        for question, expected, got in r["misses"]:
            print("    miss: %r -> %r (expected %r)" % (question, got, expected))
    print("(wall: tokenizer + initialisation + %s steps + export, target <= %.0f s; answers: exact greedy "
          "reproduction of the training chats, target >= %.0f%%; val: held-out loss / perplexity at the end "
          "of the phase,\n and the lowest of the validations every %d steps if lower; eval s: greedy answers "
          "to all chats)"
          % ("/".join(str(r["steps"]) for r in rows), TIME_TARGET, 100 * ANSWER_TARGET, rows[0]["eval_every"]))
    return rows


def validation_text(row: Dict[str, Any], phase: str) -> str:
    v = row["validation"].get(phase)
    if not v:
        return "-"
    text = "%.3f / %.1f" % (v["loss"], v["perplexity"])
    if v["best"]["step"] != v["step"]:
        text += " (lowest %.3f at step %d)" % (v["best"]["loss"], v["best"]["step"])
    return text


def held_text(row: Dict[str, Any]) -> str:
    return "%d/%d" % (row["held_exact"], row["held_total"]) if row["held_total"] else "-"


# ----------------------------------------------------------------------------------------------
# Summary


def markdown(speed: List[Dict[str, Any]], quality: List[Dict[str, Any]]) -> str:
    lines = []
    if speed:
        lines += ["| preset | threads | numpy tokens/s | PyTorch tokens/s | numpy / PyTorch |",
                  "|---|---:|---:|---:|---:|"]
        for r in speed:
            lines.append("| %s | %d | %.0f | %.0f | %.2f %s |" % (r["preset"], r["threads"], r["numpy_tps"],
                                                                  r["torch_tps"], r["ratio"],
                                                                  "✓" if r["ratio"] >= SPEED_TARGET else "✗"))
        lines.append("")
    if quality:
        lines += ["| data (preset %s) | documents / chats | steps | wall time | training answers exact | "
                  "held-out chats exact | validation loss (ppl): pretrain, chat |" % quality[0]["preset"],
                  "|---|---:|---:|---:|---:|---:|---|"]
        for r in quality:
            lines.append("| %s | %d / %d | %d | %.0f s | %d/%d (%.0f%%) | %s | %s, %s |" % (
                r["data"], r["documents"], r["chats"], r["steps"], r["wall_s"], r["exact"], r["total"],
                100 * r["rate"], held_text(r), validation_text(r, "pretrain"), validation_text(r, "chat")))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("speed", "quality", "all"), default=None,
                        help="what to run (default: all; with --quick: speed)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batches; skips part 2")
    parser.add_argument("--presets", default="tiny,quick", help="speed: comma-separated (default %(default)s)")
    parser.add_argument("--threads", default="2,1", help="speed: thread counts (default %(default)s)")
    parser.add_argument("--batches", type=int, help="speed: steps per timed pass (default 16, quick 8)")
    parser.add_argument("--warmup", type=int, help="speed: warm-up steps per child (default 3, quick 2)")
    parser.add_argument("--repeats", type=int, help="speed: timed passes per child (default 3, quick 2)")
    parser.add_argument("--rounds", type=int, help="speed: children per side, alternating (default 2, quick 1)")
    parser.add_argument("--quality-threads", type=int, metavar="N",
                        help="quality: pin BLAS threads (sets %s here; default: OpenBLAS's choice)"
                        % ", ".join(THREAD_VARS))
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--child", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        threads = int(args.threads)
        result = (child_numpy(args.data, args.warmup, args.repeats) if args.child == "numpy"
                  else child_torch(args.data, threads, args.warmup, args.repeats))
        print(json.dumps(result))
        return 0

    if args.quality_threads:  # before numpy is first imported (only the functions import it)
        for var in THREAD_VARS:
            os.environ[var] = str(args.quality_threads)
    part = args.part or ("speed" if args.quick else "all")
    n_batches = args.batches or (8 if args.quick else 16)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    repeats = args.repeats or (2 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 2)
    print("load average before: %.2f (other work on the machine slows both sides)" % os.getloadavg()[0],
          file=sys.stderr)
    speed = quality = []
    if part in ("speed", "all"):
        speed = bench_speed(args.presets.split(","), [int(t) for t in args.threads.split(",")], n_batches,
                            warmup, repeats, rounds)
    if part in ("quality", "all") and not (args.quick and args.part is None):
        quality = bench_quality()
    print("\n" + markdown(speed, quality))
    if args.json:
        print(json.dumps({"speed": speed, "quality": quality}, indent=2, default=str))
    print("load average after: %.2f" % os.getloadavg()[0], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
