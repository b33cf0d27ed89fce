"""The worker protocol's payloads, declared once: what the page sends the Python workers besides OpenAI's
requests (api/endpoints.py reads those), and what a failed request answers. build/build_site.py writes what the page reads of it into
manifest.json (page_manifest), so the page's form bounds and defaults are never copies.

    LoadOptions      load_model's options: {"context_length", "policy", "memory_limit", "workers", "rank"}
    FitOptions       check_fit's options: {"name", "context_length", "memory_limit", "from_address"}
    FinetuneOptions  begin_finetune's options, with the browser's defaults (a 135M model within one heap)
    ErrorReply       {"type": the exception's class name, "message", "has_model", "needed_bytes", "status", "openai"}:
                     the "error" of {"ok": false, "error": ...}; web/worker_error.js's WorkerError carries it on
                     the JS side, and web/pychat.js answers a failed API request with its status and "openai"

    >>> FinetuneOptions.from_mapping({"epochs": 1.0, "name": "mine"}).settings().epochs
    1
    >>> page_manifest()["settings_rules"]["top_p"]
    {'label': 'top-p', 'whole': False, 'min': 0, 'max': 1, 'min_excluded': True, 'hint': '1 = off'}
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional

from ..api.shapes import openai_error
from ..chat.sampler import SETTING_RULES, SamplingSettings
from ..errors import HeaderTruncatedError, InvalidSettingError
from ..model.fit_check import HEAP_LIMIT
from ..train.finetune import FinetuneSettings


def _from_mapping(cls, values: Mapping[str, Any]):
    """`cls` from the page's JSON object: every field it names (None: the default), as the field's type;
    other keys (a name only the page uses) are ignored."""
    if not isinstance(values, Mapping):
        raise InvalidSettingError("the options must be an object, not %s" % type(values).__name__)
    changes = {}
    for field in dataclasses.fields(cls):
        value = values.get(field.name)
        if value is None:
            continue
        kind = field.metadata.get("kind", type(field.default))  # a None default: the run chooses unless given
        try:
            changes[field.name] = kind(value) if kind is not bool else bool(value)
        except (TypeError, ValueError):
            raise InvalidSettingError("%s must be a %s, not %r" % (field.name, kind.__name__, value)) from None
    return cls(**changes)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """load_model's options. context_length 0: the engine's default; memory_limit 0: fit_check.MODEL_HEAP;
    workers and rank: how many share the model and this worker's place among them; speculative false: no
    prompt-lookup speculation (chat/speculative.py), which the session otherwise does."""

    context_length: int = 0
    policy: str = "auto"
    memory_limit: int = 0
    workers: int = 1
    rank: int = 0
    speculative: bool = True

    from_mapping = classmethod(_from_mapping)


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """check_fit's options. context_length 0: the model's own; from_address: the first bytes came from a URL
    (a web page there is the address's answer, not a saved file)."""

    name: str = "<header>"
    context_length: int = 0
    memory_limit: int = 0  # 0: what the heap leaves a model (fit_check.MODEL_HEAP)
    from_address: bool = False

    from_mapping = classmethod(_from_mapping)


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """begin_finetune's options. The page sends epochs and lr from its form (filled with these defaults from
    manifest.json; epochs empty unless the user sets it) and leaves the rest to these: LoRA rank 8 on the
    attention, batch 4 x 128 tokens (the command line's batch, so the plan steps as it does there; its batches
    are packed over the template's shared prefix: train/batches.py). epochs, targets and replay None: the run's
    plan chooses them from the data's size (train/finetune_plan.py), as on the command line."""

    epochs: Optional[int] = dataclasses.field(default=FinetuneSettings.epochs, metadata={"kind": int})
    lr: float = FinetuneSettings.lr
    rank: int = 8
    targets: Optional[str] = dataclasses.field(default=FinetuneSettings.targets, metadata={"kind": str})
    seq_len: int = 128
    batch_size: int = FinetuneSettings.batch_size
    seed: int = 0
    replay: Optional[int] = dataclasses.field(default=FinetuneSettings.replay, metadata={"kind": int})
    memory_limit: int = HEAP_LIMIT  # the run is refused before it allocates more than this

    from_mapping = classmethod(_from_mapping)

    def settings(self) -> FinetuneSettings:
        return FinetuneSettings(rank=self.rank, targets=self.targets, epochs=self.epochs, lr=self.lr,
                                seq_len=self.seq_len, batch_size=self.batch_size, seed=self.seed, replay=self.replay)


@dataclasses.dataclass(frozen=True)
class ErrorReply:
    """A failed request's error. `type` is the exception's class name: the page tells errors apart by it (the
    names it branches on are listed in web/worker_error.js, and tests/browser/test_site.py checks them here)."""

    type: str
    message: str
    has_model: bool  # the worker still holds the model it had before
    needed_bytes: int = 0  # HeaderTruncatedError: the fit check's next read is at least this long
    status: int = 500  # as an HTTP answer: 400 for a refused request (api/shapes.py openai_error)
    openai: Optional[Dict[str, Any]] = None  # OpenAI's error object: {"message", "type", "param", "code"}

    @classmethod
    def of(cls, exc: BaseException, has_model: bool) -> "ErrorReply":
        if isinstance(exc, MemoryError):
            message = ("Out of memory: the browser gives Python at most 4 GiB (2 GiB for any one array), and this "
                       "model does not fit (%s). Try a smaller model." % (exc or "allocation failed"))
        else:
            message = str(exc)
        needed = exc.needed_bytes if isinstance(exc, HeaderTruncatedError) else 0
        status, body = openai_error(exc)
        if status >= 500:
            body["error"]["message"] = message
        return cls(type(exc).__name__, message, has_model, needed, status, body["error"])


def _rule(rule) -> Dict[str, Any]:
    return {"label": rule.label, "whole": rule.whole, "min": rule.low,
            "max": None if rule.high == math.inf else rule.high, "min_excluded": rule.low_excluded, "hint": rule.hint}


def page_manifest() -> Dict[str, Optional[Dict[str, Any]]]:
    """What the page reads from manifest.json of the protocol: the sampling defaults and each setting's bounds
    (the form's min and max), and the fine-tuning defaults it fills its form and hint with."""
    finetune = dataclasses.asdict(FinetuneOptions())
    del finetune["memory_limit"]  # not the page's to choose
    return {"sampling_defaults": dataclasses.asdict(SamplingSettings()),
            "settings_rules": {name: _rule(rule) for name, rule in SETTING_RULES.items()},
            "finetune_defaults": finetune}
