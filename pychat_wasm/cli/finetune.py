"""`pychat-wasm finetune`: teach a GGUF chat model new answers with LoRA (or full fine-tuning).

    pychat-wasm finetune                                      # SmolLM2 on the shipped example, LoRA rank 8
    pychat-wasm finetune base.gguf --data chats.jsonl --out tuned.gguf --targets attn+mlp --epochs 6
    pychat-wasm finetune --data mine.jsonl --out tuned.gguf   # passes, replay, validation follow the data's size
    pychat-wasm chat tuned.gguf
    pychat-wasm finetune base.gguf --data chats.jsonl --lora-out tuned.lora.gguf   # the adapter alone, a few MB
    pychat-wasm chat base.gguf --lora tuned.lora.gguf

The adapters train on a frozen float32 copy of the base weights, with the loss on the assistant tokens of
each conversation rendered by the model's own chat template; --out folds them into the weights, --lora-out
writes them alone as llama.cpp's LoRA adapter GGUF (pychat_wasm/model/lora.py), and either or both may be given.
Progress, checkpoints (adapters only), Ctrl-C, the log and the loss chart work as in `pychat-wasm train`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List

from .common import CLIError, model_path
from .train import add_run_options, check_outputs, finish, load_data, read_resume, say
from ..gguf.reader import GGUFFile
from ..train.checkpoint import restore
from ..train.data import DATA_DIR
from ..train.evaluate import keyword_report, session_from_gguf_bytes
from ..train.data import Conversation
from ..train.finetune import TARGETS, FinetuneRun, FinetuneSettings, check_can_finetune, plan_finetune
from ..model.load_plan import LoadPlan
from ..train.finetune_plan import MLP_BELOW, REPLAY_QUESTIONS
from ..train.replay import MAX_ANSWER_TOKENS, ReplayAnswers, replay_plan

EXAMPLE_DATA = os.path.join(DATA_DIR, "finetune_example.jsonl")
EXAMPLE_EVAL = os.path.join(DATA_DIR, "finetune_eval.json")
DEFAULTS = FinetuneSettings()


def report_example(model_bytes: bytes) -> None:
    """On the shipped example: new phrasings of the taught facts, and general questions that must stay right."""
    with open(EXAMPLE_EVAL) as fh:
        questions = json.load(fh)
    session = session_from_gguf_bytes(model_bytes)
    for kind, what in (("taught", "new questions about the taught facts"), ("general", "general questions")):
        result = keyword_report(session, questions[kind])
        say("answers %d of %d %s correctly" % (result.exact, result.total, what))


def answer_replay(plan: LoadPlan, count: int) -> List[Conversation]:
    """The base model's own answers to `count` general questions, with a counter while it answers (what of
    them is trained on, the run's plan says)."""
    if not count:
        return []
    def show(answered: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\rthe base model answers general questions to learn beside the data: %d of %d"
                             % (answered, total))
            sys.stderr.flush()

    replay = ReplayAnswers(plan, count)
    replay.answer_all(show)
    if sys.stderr.isatty():
        sys.stderr.write("\r")
    say("replay: the base model answered %d of %d general questions within %d tokens (--replay 0 skips this)"
        % (len(replay.conversations), count, MAX_ANSWER_TOKENS))
    return replay.conversations


def cmd_finetune(args: argparse.Namespace) -> int:
    paths = check_outputs(args)
    if args.lora_out and args.full:
        raise CLIError("--lora-out writes LoRA adapters, and --full trains every weight instead: use --out")
    base_path = str(model_path(args.base))
    gguf = GGUFFile.open(base_path)
    data = load_data([args.data or EXAMPLE_DATA])
    if args.resume:
        checkpoint = read_resume(args.resume, FinetuneRun.kind, "finetune")
        run = FinetuneRun.from_checkpoint(checkpoint.extra, checkpoint.params, gguf, data)
        restore(run, checkpoint)
        say("resuming at step %d of %d (settings from the checkpoint)" % (run.step_count, run.total_steps))
    else:
        settings = FinetuneSettings(rank=args.rank, alpha=args.alpha, targets=args.targets, epochs=args.epochs,
                                    lr=args.lr, seq_len=args.seq_len, batch_size=args.batch, full=args.full,
                                    seed=args.seed, replay=args.replay, early_stop=not args.no_early_stop)
        plan = replay_plan(gguf, check=lambda base: check_can_finetune(base, data))
        run_plan = plan_finetune(settings, plan, data)
        for line in run_plan.explain():
            say(line)
        run = FinetuneRun(settings, gguf, data, replay=answer_replay(plan, run_plan.replay_questions), plan=plan)
        say(run.plan.describe_steps(run.replayed))
        trained = sum(run.params[name].size for name in run.trainable) if run.trainable else \
            sum(p.size for p in run.params.values())
        say("fine-tuning %s (%s): %s trainable parameters, %d conversations + %d replayed, at most %d steps"
            % (os.path.basename(base_path), "all weights" if args.full else "LoRA rank %d on %s" % (
                args.rank, run.plan.targets), "{:,}".format(trained), len(run.trained_on.conversations),
               run.replayed, run.total_steps))
    if args.lora_out and run.trainable is None:
        raise CLIError("--lora-out writes LoRA adapters, and %s is a full fine-tune: use --out" % args.resume)
    if data.documents:
        say("note: %d plain documents in the data are not used: fine-tuning learns from conversations"
            % len(data.documents))
    model_bytes = finish(run, paths, args, "pychat-wasm finetune")
    if run.stopped_early:
        say("stopped early after %d of %d planned steps: the training answers come back and the loss has stopped "
            "falling" % (run.step_count, run.planned_steps))
    if model_bytes is None:
        return 130
    if not args.data:
        report_example(model_bytes)
    if paths["model"]:
        say("chat with it: pychat-wasm chat %s" % paths["model"])
    if paths["adapter"]:
        say("chat with the adapter: pychat-wasm chat %s --lora %s (llama.cpp: llama-cli -m %s --lora %s)"
            % ((base_path, paths["adapter"]) * 2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a GGUF chat model on conversations (LoRA) and write the result as GGUF",
        description="Fine-tune a llama or qwen2 GGUF model on conversations: JSONL {\"messages\": [...]} or "
                    "RustGPT's \"User: ... Assistant: ...\" strings. Without --data it teaches SmolLM2 the "
                    "shipped example (facts about an invented town) and checks the answers.")
    p.add_argument("base", nargs="?", help="the model to start from (default: the installed SmolLM2)")
    p.add_argument("--data", metavar="PATH", help="conversations to learn (default: the shipped example)")
    add_run_options(p, out_required=False)
    p.add_argument("--lora-out", metavar="ADAPTER.gguf",
                   help="write the LoRA adapter alone in llama.cpp's adapter format (a few MB), besides or "
                        "instead of --out")
    p.add_argument("--rank", type=int, default=DEFAULTS.rank, metavar="R", help="LoRA rank (default %(default)s)")
    p.add_argument("--alpha", type=float, default=DEFAULTS.alpha, metavar="A",
                   help="LoRA alpha; updates scale by alpha/rank (default %(default)s)")
    p.add_argument("--targets", choices=sorted(TARGETS),
                   help="which projections get adapters (default: attn, and attn+mlp for fewer than %d "
                        "conversations)" % MLP_BELOW)
    p.add_argument("--epochs", type=int, metavar="N", help="times each conversation is trained on (default: from "
                                                          "the data's size, 6 to 40; the first lines say why)")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, metavar="LR", help="peak learning rate "
                                                                               "(default %(default)s)")
    p.add_argument("--seq-len", type=int, default=DEFAULTS.seq_len, metavar="T",
                   help="longest training sequence in tokens (default %(default)s)")
    p.add_argument("--batch", type=int, default=DEFAULTS.batch_size, metavar="B",
                   help="conversations per step (default %(default)s)")
    p.add_argument("--full", action="store_true", help="train every weight instead of LoRA adapters")
    p.add_argument("--replay", type=int, metavar="N",
                   help="general questions the base model answers first; its answers are learned beside the "
                        "data so that it keeps them, as at most half of each pass (0 to %d, default %d)"
                        % (REPLAY_QUESTIONS, REPLAY_QUESTIONS))
    p.add_argument("--no-early-stop", action="store_true",
                   help="train every planned step, even once the answers come back and the loss stops falling")
    p.set_defaults(func=cmd_finetune)
    return p
