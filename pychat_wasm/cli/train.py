"""`pychat-wasm train`: train a small chat model from scratch and write it as GGUF.

    pychat-wasm train --out my.gguf                          # the shipped corpus, the default preset
    pychat-wasm train --out my.gguf --pretrain-data facts.json --chat-data chats.json --preset small
    pychat-wasm train --out my.gguf --resume my.ckpt.npz     # continue an interrupted run
    pychat-wasm chat my.gguf

Beside MODEL.gguf it writes MODEL.ckpt.npz (every --checkpoint-every steps and on Ctrl-C), MODEL.log.json
(every step's loss, learning rate, gradient norm, tokens; validation loss and perplexity) and
MODEL.loss.png. Progress goes to stderr: one updating line on a terminal, a line per 50 steps otherwise.
`run_to_completion` is shared with `pychat-wasm finetune` (cli_finetune.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from .common import CLIError
from ..errors import CheckpointError
from ..train.checkpoint import Checkpoint, read_checkpoint, restore, save_checkpoint
from ..train.data import TrainingData, builtin_corpus, read_training_files
from ..train.evaluate import answer_report, session_from_gguf_bytes
from ..train.export import FILE_TYPES
from .plot import loss_curve_png
from ..train.scratch import DEFAULT_PRESET, PRESETS, ScratchRun, TrainSettings

LINE_EVERY = 50  # steps between progress lines when stderr is not a terminal


def output_paths(out: str) -> Dict[str, str]:
    """my.gguf -> {"model": my.gguf, "checkpoint": my.ckpt.npz, "log": my.log.json, "chart": my.loss.png}."""
    stem = out[:-len(".gguf")] if out.endswith(".gguf") else out
    return {"model": out, "checkpoint": stem + ".ckpt.npz", "log": stem + ".log.json", "chart": stem + ".loss.png"}


def format_seconds(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour.

    >>> format_seconds(3725.2), format_seconds(75)
    ('1:02:05', '1:15')
    """
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return ("%d:%02d:%02d" % (hours, rest // 60, rest % 60)) if hours else ("%d:%02d" % (rest // 60, rest % 60))


def progress_line(record: Dict[str, Any], total: int, tokens_per_second: float, eta: float) -> str:
    """The progress line of a step.

    >>> progress_line({"step": 50, "phase": "chat", "loss": 1.2345}, 200, 5120.4, 75)
    'chat      [#####---------------]   50/200  loss 1.2345  5,120 tok/s  ETA 1:15'
    """
    done = int(20 * record["step"] / max(1, total))
    return "%-9s [%s%s] %4d/%d  loss %.4f  %s tok/s  ETA %s" % (
        record["phase"], "#" * done, "-" * (20 - done), record["step"], total, record["loss"],
        "{:,.0f}".format(tokens_per_second), format_seconds(eta))


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[Dict[str, bool]]:
    """A flag that Ctrl-C sets instead of raising, so that a step always finishes before the run stops."""
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def write_log_and_chart(run: Any, paths: Dict[str, str], title: str) -> None:
    with open(paths["log"], "w") as fh:
        json.dump(run.log, fh)
    steps = [r for r in run.log if "loss" in r]
    validation = [r["validation"] for r in run.log if "validation" in r and "loss" not in r]
    series = [("train", [(r["step"], r["loss"]) for r in steps], (31, 119, 180)),
              ("validation", [(v["step"], v["loss"]) for v in validation], (230, 85, 13))]
    with open(paths["chart"], "wb") as fh:
        fh.write(loss_curve_png(series, title))


def run_to_completion(run: Any, paths: Dict[str, str], checkpoint_every: int, title: str,
                      report: Callable[[str], None]) -> bool:
    """Step `run` to its end with progress, checkpoints and Ctrl-C; True if it finished."""
    interactive = sys.stderr.isatty()
    started, first_step, tokens = time.perf_counter(), run.step_count, 0
    with stop_on_ctrl_c() as flag:
        while not run.finished and not flag["stop"]:
            record = run.step()
            tokens += record["tokens"]
            elapsed = time.perf_counter() - started
            steps_done = run.step_count - first_step
            eta = elapsed / steps_done * (run.total_steps - run.step_count)
            line = progress_line(record, run.total_steps, tokens / max(elapsed, 1e-9), eta)
            if interactive:
                sys.stderr.write("\r" + line)
            elif run.step_count % LINE_EVERY == 0 or run.finished:
                sys.stderr.write(line + "\n")
            validation = record.get("validation")
            if validation:
                sys.stderr.write("%s%s validation loss %.4f, perplexity %.2f\n" % (
                    "\n" if interactive else "", validation["phase"], validation["loss"], validation["perplexity"]))
            if run.step_count % checkpoint_every == 0 and not run.finished:
                save_checkpoint(run, paths["checkpoint"])
    if interactive:
        sys.stderr.write("\n")
    write_log_and_chart(run, paths, title)
    if not run.finished:
        save_checkpoint(run, paths["checkpoint"])
        report("stopped at step %d of %d; the checkpoint is %s: continue with the same command and --resume %s"
               % (run.step_count, run.total_steps, paths["checkpoint"], paths["checkpoint"]))
        return False
    report("trained %d steps in %s" % (run.total_steps - first_step, format_seconds(time.perf_counter() - started)))
    return True


def report_answers(gguf_bytes: bytes, conversations: List[Any], what: str, report: Callable[[str], None]) -> None:
    if not conversations:
        return
    result = answer_report(session_from_gguf_bytes(gguf_bytes), conversations)
    report("greedy answers reproduce %d of %d %s exactly (%.0f%%)" % (result.exact, result.total, what,
                                                                     100 * result.rate))


def load_data(paths: List[Optional[str]]) -> TrainingData:
    """The documents and conversations of the given files, or the shipped corpus if none is given."""
    given = [p for p in paths if p]
    return read_training_files(given) if given else builtin_corpus()


def say(text: str) -> None:
    sys.stderr.write(text + "\n")


def check_outputs(args: argparse.Namespace) -> Dict[str, str]:
    """The output paths of --out (and finetune's --lora-out), checked before any training time is spent; the
    checkpoint, log and chart go beside the first of them."""
    given = [(flag, path) for flag, path in (("--out", args.out), ("--lora-out", getattr(args, "lora_out", None)))
             if path]
    if not given:
        raise CLIError("give --out MODEL.gguf, --lora-out ADAPTER.gguf or both")
    for flag, path in given:
        if os.path.isdir(path):
            raise CLIError("%s must be a file name such as my.gguf, not a directory" % flag)
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise CLIError("the directory of %s %s does not exist" % (flag, path))
    if args.checkpoint_every < 1:
        raise CLIError("--checkpoint-every must be at least 1, got %d" % args.checkpoint_every)
    return dict(output_paths(given[0][1]), model=args.out, adapter=getattr(args, "lora_out", None))


def read_resume(path: str, kind: str, command: str) -> Checkpoint:
    checkpoint = read_checkpoint(path)
    if checkpoint.kind != kind:
        raise CheckpointError("%s was written by a %s run, not by pychat-wasm %s" % (path, checkpoint.kind, command))
    return checkpoint


def write_file(path: str, data: bytes) -> str:
    """Write `data` to `path` atomically; "path (12.3 MB)" for the report."""
    with open(path + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)
    return "%s (%.1f MB)" % (path, len(data) / 1e6)


def write_model(run: Any, paths: Dict[str, str], outtype: str) -> bytes:
    """Export the run to paths["model"] and its LoRA adapter to paths["adapter"] (each when given); return the
    model's GGUF bytes (built even when only the adapter is written: the answer report runs on them)."""
    model_bytes = run.gguf_writer(outtype).to_bytes()
    written = []
    if paths["model"]:
        written.append(write_file(paths["model"], model_bytes))
    if paths.get("adapter"):
        name = os.path.basename(paths["adapter"])
        name = name[:-len(".gguf")] if name.endswith(".gguf") else name
        written.append(write_file(paths["adapter"], run.adapter_writer(name).to_bytes()))
    say("wrote %s, %s and %s" % (", ".join(written), paths["log"], paths["chart"]))
    return model_bytes


def finish(run: Any, paths: Dict[str, str], args: argparse.Namespace, title: str) -> Optional[bytes]:
    """Train to the end, export, and report how well the training answers come back; the model's bytes, or
    None when Ctrl-C stopped the run (its checkpoint is saved)."""
    if not run_to_completion(run, paths, args.checkpoint_every, title, say):
        return None
    model_bytes = write_model(run, paths, args.outtype)
    report_answers(model_bytes, run.trained_on.conversations, "training answers", say)
    return model_bytes


def add_run_options(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    """Options `train` and `finetune` share (finetune may write an adapter instead of --out)."""
    p.add_argument("--out", required=out_required, metavar="MODEL.gguf", help="where to write the model")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the whole run (default %(default)s)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue the run that wrote this checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help="steps between checkpoints (default %(default)s)")
    p.add_argument("--outtype", choices=sorted(FILE_TYPES), default="F32",
                   help="how the model's matrices are stored (default %(default)s)")


def cmd_train(args: argparse.Namespace) -> int:
    paths = check_outputs(args)
    data = load_data([args.pretrain_data, args.chat_data])
    if args.resume:
        checkpoint = read_resume(args.resume, ScratchRun.kind, "train")
        run = ScratchRun.from_checkpoint(checkpoint.extra, checkpoint.params, data)
        restore(run, checkpoint)
        say("resuming at step %d of %d (settings from the checkpoint)" % (run.step_count, run.total_steps))
    else:
        settings = TrainSettings(preset=args.preset, steps=args.steps, seed=args.seed,
                                 name=os.path.basename(paths["model"])[:-len(".gguf")] or "model")
        run = ScratchRun.create(settings, data)
        cfg = run.config
        say("model: %d layers, width %d, %d heads, vocabulary %d (%s parameters); data: %d documents, %d chats"
            % (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.vocab_size,
               "{:,}".format(sum(p.size for p in run.params.values())), len(run.data.documents),
               len(run.data.conversations)))
    if finish(run, paths, args, "pychat-wasm train: " + run.settings.preset) is None:
        return 130
    say("chat with it: pychat-wasm chat %s" % paths["model"])
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a small chat model from scratch and write it as GGUF",
        description="Train a tokenizer and a llama-architecture chat model from scratch: pretraining on "
                    "documents, then instruction tuning on chats (loss on the answers only). Data: a JSON array "
                    "of strings (RustGPT's format; \"User: ... Assistant: ...\" strings are chats), JSONL of "
                    "{\"text\"} or {\"messages\"}, or plain text with one document per line. Without data "
                    "options it trains on the corpus shipped with pychat-wasm.")
    add_run_options(p)
    p.add_argument("--pretrain-data", metavar="PATH", help="documents to pretrain on")
    p.add_argument("--chat-data", metavar="PATH", help="conversations to instruction-tune on")
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help="model size and training length (default %(default)s)")
    p.add_argument("--steps", type=int, metavar="N", help="total optimizer steps (default: the preset's)")
    p.set_defaults(func=cmd_train)
    return p
