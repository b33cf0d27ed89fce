"""The Python side of the browser's training worker: one run at a time, plain JSON in and out.

The training worker (web/train_worker.js) calls these through Pyodide. Like pychat_wasm.worker_api, each
returns {"ok": true, ...} or {"ok": false, "error": {"type", "message"}}, so bad data reaches the page as a
message, never as a traceback. The step loop lives in the worker's JS: it calls train_for(seconds) again
and again and yields to its event loop in between, which is where Stop gets through. A stopped run stays
in memory, so Continue simply calls train_for again; its checkpoint can also be kept across reloads.

    >>> begin_training('{"preset": "quick"}', '[]')          # [] = the corpus shipped with pychat_wasm  # doctest: +SKIP
    >>> train_for(0.5)                                        # doctest: +SKIP
    '{"ok": true, "records": [{"step": 1, "loss": 6.2, ...}], "step": 3, "total_steps": 500, ...}'
    >>> model_bytes()                                         # doctest: +SKIP
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

from ..errors import NoModelLoadedError, TrainingDataError
from ..worker_api import json_reply
from .checkpoint import checkpoint_bytes, read_checkpoint, restore
from .data import MAX_DATA_BYTES, TrainingData, builtin_corpus, parse_training_text
from .scratch import PRESETS, ScratchRun, TrainSettings


# Seconds one optimizer step takes in the browser (Chromium, 2 cores, measured with web/train_worker.js): the
# page shows each preset's expected duration from these. Only these presets are offered there ("small" is
# for the command line).
BROWSER_SECONDS_PER_STEP = {"quick": 0.15, "tiny": 0.8}


class _Training:
    run: Optional[ScratchRun] = None


_training = _Training()


def _parse_file(item: Dict[str, str]) -> TrainingData:
    if len(item["text"]) > MAX_DATA_BYTES:
        raise TrainingDataError("%s is too large: training data is limited to %d MB"
                                % (item["name"], MAX_DATA_BYTES // 2 ** 20))
    return parse_training_text(item["text"], item["name"])


def _data(files_json: str) -> TrainingData:
    """The documents and conversations of [{"name", "text"}, ...], or the shipped corpus for []."""
    files = json.loads(files_json)
    if not files:
        return builtin_corpus()
    data = TrainingData([], [])
    for item in files:
        part = _parse_file(item)
        data.documents.extend(part.documents)
        data.conversations.extend(part.conversations)
    return data


def _describe(run: ScratchRun) -> Dict[str, Any]:
    cfg = run.config
    return {"step": run.step_count, "total_steps": run.total_steps, "finished": run.finished,
            "phases": [{"name": p.name, "steps": p.steps, "examples": len(p.examples)} for p in run.phases],
            "parameters": int(sum(p.size for p in run.params.values())),
            "model": {"layers": cfg.n_layers, "dim": cfg.dim, "heads": cfg.n_heads, "vocab_size": cfg.vocab_size},
            "data": {"documents": len(run.data.documents), "conversations": len(run.data.conversations)},
            "log": run.log}


def _run() -> ScratchRun:
    if _training.run is None:
        raise NoModelLoadedError("no training run has been started")
    return _training.run


@json_reply
def limits() -> Dict[str, Any]:
    """What the page checks before reading a file (the largest training file) and the presets it offers:
    [{"name", "steps" (at most: a phase without data is skipped), "max_examples", "seconds_per_step"}]."""
    presets = [{"name": name, "steps": PRESETS[name].pretrain_steps + PRESETS[name].chat_steps,
                "max_examples": PRESETS[name].max_examples, "seconds_per_step": seconds}
               for name, seconds in BROWSER_SECONDS_PER_STEP.items()]
    return {"max_data_bytes": MAX_DATA_BYTES, "presets": presets}


@json_reply
def describe_files(files_json: str) -> Dict[str, Any]:
    """Parse [{"name", "text"}, ...] as begin_training would and say what each file holds:
    {"files": [{"name", "documents", "conversations"}]}. The page checks a file with it when it is chosen."""
    described = []
    for item in json.loads(files_json):
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
    run = ScratchRun.create(settings, _data(files_json))
    _training.run = run
    return _describe(run)


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


@json_reply
def status() -> Dict[str, Any]:
    return _describe(_run())


def model_bytes(ggml_type: str = "F32") -> bytes:
    """The current model as GGUF bytes (the page stores them in its model cache)."""
    return _run().gguf_writer(ggml_type).to_bytes()


def checkpoint() -> bytes:
    """The run's checkpoint bytes, so that it can be continued after a reload."""
    return checkpoint_bytes(_run())


@json_reply
def resume_training(data: Any, files_json: str) -> Dict[str, Any]:
    """Continue a run from its checkpoint bytes (a numpy uint8 array) with the same files it started with."""
    saved = read_checkpoint(data)
    run = ScratchRun.from_checkpoint(saved.extra, saved.params, _data(files_json))
    restore(run, saved)
    _training.run = run
    return _describe(run)
