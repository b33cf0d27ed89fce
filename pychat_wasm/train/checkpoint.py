"""Checkpoints: everything a run needs to continue exactly where it stopped, in one .npz file.

    params/<name>   the parameters the run trains (scratch: all; LoRA: the adapters only)
    m/<name>        AdamW's first moments
    v/<name>        AdamW's second moments
    meta            JSON (as uint8): format, kind, step, the run's fingerprint, its log, and what the run
                    is rebuilt from (settings, tokenizer vocabulary, base model)

The batches of every step follow from the seed (run.py), so parameters, moments and the step count are the
whole state: a resumed run gives the numbers an uninterrupted one gives. A checkpoint is read with
allow_pickle=False and checked against the run it is resumed into (kind, fingerprint, parameter shapes).

    >>> save_checkpoint(run, "model.ckpt.npz")                                   # doctest: +SKIP
    >>> checkpoint = read_checkpoint("model.ckpt.npz")                           # doctest: +SKIP
    >>> run = ScratchRun.from_checkpoint(checkpoint.extra, checkpoint.params, data)  # doctest: +SKIP
    >>> restore(run, checkpoint)                                                 # doctest: +SKIP
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, Dict, NamedTuple

import numpy as np

from ..errors import CheckpointError

FORMAT = 1


class Checkpoint(NamedTuple):
    kind: str
    step: int
    fingerprint: str
    log: list
    extra: Dict[str, Any]
    params: Dict[str, np.ndarray]
    optimizer: Dict[str, np.ndarray]  # "m/<name>", "v/<name>"


def checkpoint_bytes(run: Any) -> bytes:
    """The run's state as the bytes of an .npz file."""
    meta = {"format": FORMAT, "kind": run.kind, "step": run.step_count, "fingerprint": run.fingerprint(),
            "log": run.log, "extra": run.checkpoint_extra()}
    arrays = {"params/" + name: value for name, value in run.checkpoint_params().items()}
    arrays.update(run.optimizer.state())
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_checkpoint(run: Any, path: str) -> None:
    """Write atomically: an interrupted save leaves the previous checkpoint intact."""
    data = checkpoint_bytes(run)
    temporary = path + ".tmp"
    with open(temporary, "wb") as fh:
        fh.write(data)
    os.replace(temporary, path)


def read_checkpoint(source: Any) -> Checkpoint:
    """A checkpoint from a path or from bytes."""
    name = source if isinstance(source, str) else "the checkpoint"
    try:
        fileobj = open(source, "rb") if isinstance(source, str) else io.BytesIO(bytes(source))
    except OSError as exc:
        raise CheckpointError("cannot read %s: %s" % (name, exc.strerror)) from None
    try:
        with fileobj:
            archive = np.load(fileobj, allow_pickle=False)
            if not hasattr(archive, "files"):  # a single .npy array
                raise ValueError("it holds one array, not an .npz archive")
            with archive:
                arrays = {key: np.array(archive[key]) for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        # numpy calls anything it does not recognise "pickled data" and suggests loading it unsafely: don't
        reason = "it is not an .npz archive" if "pickle" in str(exc) else str(exc)
        raise CheckpointError("%s is not a pychat-wasm checkpoint (or it is damaged): %s" % (name, reason)) from None
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (KeyError, ValueError):
        raise CheckpointError("%s has no readable metadata: it is not a pychat-wasm checkpoint" % name) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError("%s has checkpoint format %r; this version reads format %d"
                              % (name, meta.get("format"), FORMAT))
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    optimizer = {k: v for k, v in arrays.items() if k.startswith(("m/", "v/"))}
    try:
        return Checkpoint(str(meta["kind"]), int(meta["step"]), str(meta["fingerprint"]), list(meta["log"]),
                          dict(meta["extra"]), params, optimizer)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("%s has incomplete metadata: it is damaged" % name) from None


def restore(run: Any, checkpoint: Checkpoint) -> None:
    """Put the checkpoint's step, optimizer moments and log into `run` (built with its parameters)."""
    if checkpoint.kind != run.kind:
        raise CheckpointError("this checkpoint is from a %s run, not a %s run" % (checkpoint.kind, run.kind))
    if checkpoint.fingerprint != run.fingerprint():
        raise CheckpointError("this checkpoint was made with other data or settings: resume with the same data "
                              "files and options as the run that wrote it")
    if not 0 <= checkpoint.step <= run.total_steps:
        raise CheckpointError("the checkpoint is at step %d of a %d-step run" % (checkpoint.step, run.total_steps))
    for name, value in checkpoint.params.items():
        if name not in run.params or run.params[name].shape != value.shape:
            raise CheckpointError("the checkpoint's parameter %s does not fit this model" % name)
    run.optimizer.load_state(checkpoint.optimizer, checkpoint.step)
    run.step_count = checkpoint.step
    run.log = list(checkpoint.log)
