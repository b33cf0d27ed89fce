"""The Python side of the browser worker: one model, one chat session, plain JSON in and out.

The worker (web/worker.js) calls these functions through Pyodide and posts the results to the page. Every
function returns a JSON string: {"ok": true, ...} or {"ok": false, "error": protocol.ErrorReply}, so
errors the user can cause (not a GGUF file, unsupported architecture or quant type, out of memory)
reach the page as data instead of as a Python traceback. Strings keep the JS side free of proxy
lifetimes.

    >>> load_model(np.fromfile("SmolLM2-135M-Instruct.Q4_1.gguf", np.uint8), "SmolLM2")   # doctest: +SKIP
    '{"ok": true, "info": {"architecture": "llama", ...}}'

LoRA adapters (llama.cpp's GGUF files, pychat_wasm/model/lora.py) are applied to the loaded model and removed
again without reloading its weights: apply_lora(bytes, name, scale), remove_lora(name); every worker of a split
model applies its own shard of an adapter, so the page calls every active worker, as for a turn.

One protocol answers both the page's chat and the engine of web/pychat.js: OpenAI's requests (begin_request),
answered by the library's LLM around the session (api/endpoints.py), chunk by chunk (next_chunk). The page owns
its conversation and sends it whole with each turn, a streamed chat.completions request; Python keeps only what
the KV cache holds. context_budget is the page's context meter before a turn (LLM.context_budget).

    >>> begin_request("chat.completions", '{"messages": [{"role": "user", "content": "Hi"}], "stream": true}')  # doctest: +SKIP
    >>> next_chunk()                                                                   # doctest: +SKIP
    '{"ok": true, "item": {"object": "chat.completion.chunk", ...}}'

The token loop lives in the worker's JS: it calls next_chunk(stop) once per step and yields to its event loop in
between, which is where a Stop message gets through (Pyodide's interrupt buffer would need cross-origin
isolation).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from ..api.endpoints import respond
from ..api.llm import LLM
from ..errors import InvalidRequestError, InvalidSettingError, NoModelLoadedError, NotGGUFError, PychatError
from ..model.fit_check import MODEL_HEAP, fit_check
from ..gguf.reader import GGUFFile, describe_non_gguf
from ..model.info import model_info
from ..chat.load import with_chat
from ..model.load_plan import check_supported, plan_model
from ..model.lora import adapter_header, open_adapters
from ..chat.session import ChatSession
from ..model.tensor_parallel import Collective
from .protocol import ErrorReply, FitOptions, LoadOptions


class _Worker:
    """What the worker holds between calls: the model's session, the LLM around it and the running request."""

    session: Optional[ChatSession] = None
    llm: Optional[LLM] = None
    base: Optional[GGUFFile] = None  # the loaded model's file, which adapters are checked against
    request: Optional[Iterator[Optional[Dict[str, Any]]]] = None


_worker = _Worker()


def json_reply(function: Callable[..., Dict[str, Any]]) -> Callable[..., str]:
    """Run `function` and answer with JSON; expected failures become {"ok": false, "error": ...}."""

    @functools.wraps(function)
    def wrapper(*args: Any) -> str:
        try:
            result = dict(function(*args), ok=True)
        except (PychatError, MemoryError) as exc:
            result = {"ok": False, "error": dataclasses.asdict(ErrorReply.of(exc, _worker.session is not None))}
        return json.dumps(result)

    return wrapper




@json_reply
def check_fit(header: Any, file_size: int, options_json: str = "{}") -> Dict[str, Any]:
    """Before downloading a model: describe it and say whether it fits, from its first bytes (a numpy uint8
    array, e.g. a Range request's answer, or a download's first chunk) and the whole file's size.
    HeaderTruncatedError: fetch more bytes. NotGGUFError says what the bytes are instead (a web page, ...).
    A LoRA adapter file (general.type "adapter") is no model: the answer is {"adapter": lora.adapter_header},
    and the page adds it to the model in use with apply_lora.
    options: protocol.FitOptions (default: the engine's default context, the 4 GiB heap less what Python
    keeps of it)."""
    options = FitOptions.from_mapping(json.loads(options_json))
    try:
        gguf = GGUFFile.header(header, int(file_size), name=options.name)
    except NotGGUFError:
        if not options.from_address:
            raise
        raise NotGGUFError("%s is not a GGUF model: %s"
                           % (options.name, describe_non_gguf(bytes(header[:64]), from_address=True))) from None
    if gguf.metadata.get("general.type") == "adapter":
        return {"adapter": adapter_header(gguf)}
    check_supported(gguf)
    return {"info": model_info(gguf),
            "fit": fit_check(gguf, options.context_length or None, options.memory_limit or MODEL_HEAP)}


class SharedMemoryCollective(Collective):
    """The browser's workers of one model (web/tensor_parallel.js): JS reads and writes the numpy arrays
    in this worker's wasm memory at their addresses, so nothing is converted or copied by Pyodide."""

    def __init__(self, js_collective: Any, rank: int, workers: int):
        self.rank, self.workers = rank, workers
        self._sum, self._gather = js_collective.sum, js_collective.gather  # looked up once, not at ~60 calls a token

    def sum_(self, x):
        self._sum(_address(x), x.size)

    def gather(self, part, out, start):
        self._gather(_address(part), part.size, _address(out), out.size, start)


def _address(array) -> int:
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        raise ValueError("the workers exchange C-contiguous float32 arrays, not %s" % array.dtype)
    return array.__array_interface__["data"][0]


@json_reply
def load_model(data: Any, name: str, options_json: str = "{}", connect: Any = None) -> Dict[str, Any]:
    """Parse and load a model from its bytes (a numpy uint8 array).

    The load plan (model/load_plan.py) checks everything that can reject a file before the weights are built
    (header, tensor types, architecture, tensor shapes and values, tokenizer, chat template), so a bad file
    leaves the previous model loaded and usable; it also chooses the weight policy, by the fit check's rule.
    options: protocol.LoadOptions; for one of several workers sharing the model, connect(n) gives the
    collective of the first n workers (the model may split into fewer than asked; a worker beyond them holds
    no model and answers {"idle": true}). "phases": the seconds each step took, in order (GGUF parse, checks,
    tokenizer and template, weights, session), for the page's start-up timeline (web/startup_timeline.js).
    """
    options = LoadOptions.from_mapping(json.loads(options_json))
    clock = _PhaseClock()
    gguf = GGUFFile(data, name=name)
    clock.lap("GGUF parse")
    plan = plan_model(gguf, context_length=options.context_length or None, policy=options.policy,
                      memory_limit=options.memory_limit or MODEL_HEAP, workers=options.workers, rank=options.rank)
    clock.lap("checks")
    _worker.session = _worker.llm = _worker.request = _worker.base = None  # free the old weights first
    if plan.idle:
        return {"idle": True, "workers": plan.workers, "phases": clock.phases}
    plan = with_chat(plan)
    clock.lap("tokenizer and template")
    collective = SharedMemoryCollective(connect(plan.workers), plan.rank, plan.workers) if plan.shard else None
    _worker.session = ChatSession.from_plan(plan, collective)
    clock.lap("weights")
    if not options.speculative:
        _worker.session.speculative = None
    _worker.base = gguf
    _worker.llm = LLM.around(_worker.session, name, stepwise=True)
    model = _worker.session.model
    clock.lap("session")
    return {"workers": plan.workers, "phases": clock.phases,
            "info": dict(model_info(gguf), context_length=plan.config.context_length, policy=plan.policy,
                         memory_bytes=model.memory_bytes())}


class _PhaseClock:
    """A load's phases in order, as the page's start-up timeline shows them: [[name, seconds], ...]."""

    def __init__(self):
        self.phases: List[List[Any]] = []
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases.append([name, round(now - self._last, 4)])
        self._last = now


def _llm() -> LLM:
    if _worker.llm is None:
        raise NoModelLoadedError("no model is loaded yet")
    return _worker.llm


@json_reply
def context_budget(body_json: str) -> Dict[str, Any]:
    """The context a conversation takes as it stands, before any answer: {"budget": {used, ...}}, as a streamed
    answer's context_budget reports it. body: {"messages": [...] (possibly none), "max_tokens": the answer's
    room (null: the engine's default)}, as in a chat.completions request."""
    body = json.loads(body_json)
    if not isinstance(body, dict):
        raise InvalidRequestError("the budget's body must be a JSON object, not %s" % type(body).__name__)
    messages: List[Dict[str, Any]] = body.get("messages") or []
    return {"budget": _llm().context_budget(messages, max_tokens=body.get("max_tokens"))}


@json_reply
def count_tokens(text: str) -> Dict[str, Any]:
    """{"tokens": n}: how many token ids `text` is in the loaded model's vocabulary, as the chat template's
    rendering tokenizes it (special tokens parsed, no BOS): the page's attachment chips (web/attachments.js)."""
    return {"tokens": len(_llm().tokenizer.encode(text, add_special=False))}


def _between_turns() -> ChatSession:
    session = _llm().session
    if _worker.request is not None:
        raise InvalidSettingError("an answer is being written: stop it before applying or removing an adapter")
    return session


def _adapters_reply(session: ChatSession) -> Dict[str, Any]:
    """{"adapters": [{name, scale, alpha, rank, tensors, base_name}, ...]}: what is applied now, in order."""
    return {"adapters": [{"name": adapter.name, "scale": scale, "alpha": adapter.alpha,
                          "rank": max(b.shape[1] for _, b in adapter.pairs.values()), "tensors": len(adapter.pairs),
                          "base_name": adapter.base_name} for adapter, scale in session.model.adapters]}


@json_reply
def apply_lora(data: Any, name: str, scale: float = 1.0) -> Dict[str, Any]:
    """Apply the LoRA adapter in `data` (a numpy uint8 array of its GGUF bytes) to the loaded model, beside those
    applied already; one of the same `name` is replaced (e.g. to change its scale). The model's weights are not
    reloaded; the KV cache is emptied. AdapterMismatchError (an adapter for another base model) and AdapterError
    leave everything as it was."""
    session = _between_turns()
    [(adapter, scale)] = open_adapters(_worker.base, [(GGUFFile(data, name=name), scale)])
    kept = [(applied, s) for applied, s in session.model.adapters if applied.name != name]
    session.model.set_adapters(kept + [(adapter, scale)])
    return _adapters_reply(session)


@json_reply
def remove_lora(name: str = "") -> Dict[str, Any]:
    """Remove the adapter `name` ("": all of them): the model computes exactly what it did without it."""
    session = _between_turns()
    if name and all(adapter.name != name for adapter, _ in session.model.adapters):
        raise InvalidSettingError("no adapter named %s is applied" % name)
    session.model.set_adapters([(a, s) for a, s in session.model.adapters if name and a.name != name])
    return _adapters_reply(session)
@json_reply
def begin_request(kind: str, body_json: str) -> Dict[str, Any]:
    """Start answering one of OpenAI's requests, as the library API does (api/endpoints.py): kind
    "chat.completions", "completions", "embeddings" or "models", body its JSON object. The answer then comes
    from next_chunk() calls. Refusals (InvalidRequestError, ...) come here, before anything is generated."""
    _worker.request = None
    answer = respond(_llm(), kind, json.loads(body_json))
    _worker.request = iter([answer]) if isinstance(answer, dict) else answer
    return {}


@json_reply
def next_chunk(stop: bool = False) -> Dict[str, Any]:
    """The running request's next step: {"item": a chunk of a stream, or a whole response, or null for a piece
    generated towards one}, or {"done": true} once it is over. stop=True (an AbortSignal) ends the generation
    after the current token: its last chunk (or its response) then says finish_reason "cancelled"."""
    if _worker.request is None:
        return {"done": True}
    if stop:
        _llm().cancel()
    try:
        return {"item": next(_worker.request)}
    except StopIteration:
        _worker.request = None
        return {"done": True}
    except BaseException:
        _worker.request = None
        raise
