"""The Python side of the browser's training worker: one run at a time, plain JSON in and out.

The training worker (web/train_worker.js) calls these through Pyodide. Like pychat_wasm.browser.chat_worker, each
returns {"ok": true, ...} or {"ok": false, "error": {"type", "message"}}, so bad data reaches the page as a
message, never as a traceback. The step loop lives in the worker's JS: it calls train_for(seconds) again
and again and yields to its event loop in between, which is where Stop gets through. A stopped run stays
in memory, so Continue simply calls train_for again.

    >>> begin_training('{"preset": "quick"}', '[]')          # [] = the corpus shipped with pychat_wasm  # doctest: +SKIP
    >>> train_for(0.5)                                        # doctest: +SKIP
    '{"ok": true, "records": [{"step": 1, "loss": 6.2, ...}], "step": 3, "total_steps": 500, ...}'
    >>> model_bytes()                                         # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Optional

from ..errors import InvalidSettingError, NoModelLoadedError, NotEnoughMemoryError, TrainingDataError
from ..gguf.reader import GGUFFile
from .chat_worker import json_reply
from .protocol import FinetuneOptions
from ..train.data import (DATA_DIR, MAX_DATA_BYTES, MAX_TOTAL_DATA_BYTES, TrainingData, builtin_corpus,
                          check_total_size, merge_data, parse_training_text, read_training_file)
from ..train.finetune import FinetuneRun, check_can_finetune, estimated_bytes, plan_finetune
from ..train.replay import ReplayAnswers, replay_plan
from ..train.run import TrainingRun
from ..train.scratch import PRESETS, ScratchRun, TrainSettings

FINETUNE_EXAMPLE = os.path.join(DATA_DIR, "finetune_example.jsonl")


# Seconds one optimizer step takes in the browser, on average over a run, with some margin: measured in
# headless Chromium on 2 cores through web/train_worker.js while another job used a core (quick 62 s for 400
# steps, tiny 419 s for 650; a chat step takes about twice a pretraining step). The page shows each preset's
# expected duration from these, and a live ETA once it runs. Only these presets are offered there ("small"
# is for the command line).
BROWSER_SECONDS_PER_STEP = {"quick": 0.2, "tiny": 0.8}


class _Training:
    run: Optional[TrainingRun] = None


_training = _Training()


def _parse_file(item: Dict[str, str]) -> TrainingData:
    if len(item["text"]) > MAX_DATA_BYTES:
        raise TrainingDataError("%s is too large: training data is limited to %d MB"
                                % (item["name"], MAX_DATA_BYTES // 2 ** 20))
    return parse_training_text(item["text"], item["name"])


def _data(files_json: str, kind: str) -> TrainingData:
    """The documents and conversations of [{"name", "text"}, ...]; for [] the shipped corpus (scratch) or the
    shipped fine-tuning example."""
    files = json.loads(files_json)
    if not files:
        return builtin_corpus() if kind == ScratchRun.kind else read_training_file(FINETUNE_EXAMPLE)
    check_total_size(len(item["text"]) for item in files)
    return merge_data(_parse_file(item) for item in files)


def _describe(run: TrainingRun) -> Dict[str, Any]:
    cfg = run.config
    return {"step": run.step_count, "total_steps": run.total_steps, "finished": run.finished,
            "phases": [{"name": p.name, "steps": p.steps, "examples": len(p.examples)} for p in run.phases],
            "parameters": int(sum(p.size for p in run.params.values())),
            "model": {"layers": cfg.n_layers, "dim": cfg.dim, "heads": cfg.n_heads, "vocab_size": cfg.vocab_size},
            "data": {"documents": len(run.data.documents), "conversations": len(run.data.conversations)},
            "log": run.log}


def _run() -> TrainingRun:
    if _training.run is None:
        raise NoModelLoadedError("no training run has been started")
    return _training.run


@json_reply
def limits() -> Dict[str, Any]:
    """What the page checks before reading a file (the largest training file, the largest total of all files)
    and the presets it offers:
    [{"name", "steps" (at most: a phase without data is skipped), "max_examples", "seconds_per_step"}]."""
    presets = [{"name": name, "steps": PRESETS[name].pretrain_steps + PRESETS[name].chat_steps,
                "max_examples": PRESETS[name].max_examples, "seconds_per_step": seconds}
               for name, seconds in BROWSER_SECONDS_PER_STEP.items()]
    return {"max_data_bytes": MAX_DATA_BYTES, "max_total_data_bytes": MAX_TOTAL_DATA_BYTES, "presets": presets}


@json_reply
def describe_files(files_json: str) -> Dict[str, Any]:
    """Parse [{"name", "text"}, ...] as begin_training would and say what each file holds:
    {"files": [{"name", "documents", "conversations"}]}. The page checks a file with it when it is chosen."""
    described, files = [], json.loads(files_json)
    check_total_size(len(item["text"]) for item in files)
    for item in files:
        part = _parse_file(item)
        described.append({"name": item["name"], "documents": len(part.documents),
                          "conversations": len(part.conversations)})
    return {"files": described}


@json_reply
def begin_training(options_json: str, files_json: str) -> Dict[str, Any]:
    """Start a run: options {"preset", "seed", "name", "steps"}; files [{"name", "text"}] or [] for the shipped
    corpus. A bad file raises before anything is replaced: a run already in memory stays as it was."""
    options = json.loads(options_json)
    settings = TrainSettings(preset=options.get("preset", "tiny"), seed=int(options.get("seed", 0)),
                             steps=options.get("steps"), name=options.get("name") or "my-model")
    run = ScratchRun.create(settings, _data(files_json, ScratchRun.kind))
    _training.run = run
    return _describe(run)


@json_reply
def begin_finetune(base: Any, base_name: str, options_json: str, files_json: str,
                   on_replay: Optional[Callable[[int, int], Any]] = None) -> Dict[str, Any]:
    """Start fine-tuning the model whose GGUF bytes (numpy uint8) are `base`; options: protocol.FinetuneOptions
    (the browser's defaults for what the page leaves out); files as in begin_training, [] for the shipped
    example. Refuses, before allocating, a run that would not fit options.memory_limit (default: the browser's
    4 GiB heap). First the base model answers the plan's general questions (finetune_plan.py, replay.py),
    calling on_replay(answered, total) after each. The reply's "explain" holds the plan's lines, as the
    command line prints them."""
    options = FinetuneOptions.from_mapping(json.loads(options_json))
    settings = options.settings()
    gguf = GGUFFile(base, name=base_name)
    plan = replay_plan(gguf)  # the one parse and check of the base model: config, tokenizer, template
    n_params = sum(info.n_elements for info in gguf.tensors.values())
    need = gguf.size + estimated_bytes(plan.config, n_params, settings)
    limit = options.memory_limit
    if need > limit:
        raise NotEnoughMemoryError(
            "fine-tuning %s needs about %.1f GB (the model as float32 plus activations), more than the %.1f GB "
            "a browser worker can use: try a smaller model, batch or sequence length"
            % (base_name, need / 1e9, limit / 1e9))
    data = _data(files_json, FinetuneRun.kind)
    check_can_finetune(plan, data)
    _training.run = None  # free the previous run's weights first
    replayed = ReplayAnswers(plan, plan_finetune(settings, plan, data).replay_questions).answer_all(on_replay)
    run = FinetuneRun(settings, gguf, data, replay=replayed, plan=plan)
    _training.run = run
    return dict(_describe(run), memory_bytes=need, explain=run.plan.explain(run.replayed))


@json_reply
def train_for(seconds: float) -> Dict[str, Any]:
    """Run steps for about `seconds` (at least one step, unless the run is finished)."""
    run = _run()
    records = []
    deadline = time.perf_counter() + seconds
    while not run.finished:
        records.append(run.step())
        if time.perf_counter() >= deadline:
            break
    return {"records": records, "step": run.step_count, "total_steps": run.total_steps, "finished": run.finished}


def model_bytes(ggml_type: str = "F32") -> bytes:
    """The current model as GGUF bytes (the page stores them in its model cache)."""
    return _run().gguf_writer(ggml_type).to_bytes()


def adapter_bytes(name: str) -> bytes:
    """A fine-tuning run's LoRA adapters alone, as llama.cpp's adapter GGUF (pychat_wasm/model/lora.py) named
    `name`; a few MB, applied in the chat worker with chat_worker.apply_lora. InvalidSettingError for a run
    without adapters (training from scratch, or a full fine-tune)."""
    run = _run()
    if not isinstance(run, FinetuneRun):
        raise InvalidSettingError("training from scratch makes a whole model, not a LoRA adapter")
    return run.adapter_writer(name).to_bytes()

