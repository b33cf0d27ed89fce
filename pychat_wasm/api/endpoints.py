"""OpenAI's endpoints over one LLM: a request body (the JSON object OpenAI's HTTP API takes) in, the LLM's
answer out. The one place that maps a body's fields to the LLM's keyword arguments, so the HTTP server
(server/app.py) and the browser's workers (browser/chat_worker.py, under web/pychat.js's engine.fetch) take
the same requests and refuse the same ones.

    kind                 body                              answer
    "chat.completions"   {"messages", "stream", ...}       LLM.create_chat_completion's
    "completions"        {"prompt", "stream", ...}         LLM.create_completion's
    "embeddings"         {"input", "encoding_format"}      LLM.create_embedding's, base64 when asked
    "models"             (none)                            the list of the one model

>>> arguments({"model": "x", "messages": [], "temperature": 0, "stream": True}, CHAT_FIELDS)
({'messages': [], 'temperature': 0}, True)
>>> arguments({"temprature": 0}, CHAT_FIELDS)
Traceback (most recent call last):
pychat_wasm.errors.InvalidRequestError: Unrecognized request argument supplied: temprature
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from . import shapes
from ..errors import InvalidRequestError

SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "repeat_penalty",
                   "repeat_last_n", "frequency_penalty", "presence_penalty", "response_format", "grammar",
                   "stream_options")  # grammar and repeat_last_n: llama.cpp's
CHAT_FIELDS = ("messages", "logprobs", "top_logprobs", "tools", "tool_choice", "truncation") + SAMPLING_FIELDS
COMPLETION_FIELDS = ("prompt", "logprobs") + SAMPLING_FIELDS
EMBEDDING_FIELDS = ("input",)
IGNORED_FIELDS = ("model", "user")  # accepted and without effect: there is one model
RENAMED_FIELDS = {"max_completion_tokens": "max_tokens"}  # OpenAI's newer name
ENCODING_FORMATS = ("float", "base64")  # base64: what the openai clients ask for, little-endian float32s
KINDS = ("chat.completions", "completions", "embeddings", "models")


def arguments(body: Mapping[str, Any], fields: Tuple[str, ...]) -> Tuple[Dict[str, Any], bool]:
    """(the LLM's keyword arguments, stream) from a request body; unknown fields are refused as OpenAI does."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError("the request body must be a JSON object, not %s" % type(body).__name__)
    kwargs: Dict[str, Any] = {}
    for name, value in body.items():
        name = RENAMED_FIELDS.get(name, name)
        if name in fields:
            if value is not None:
                kwargs[name] = value
        elif name == "n":
            if value not in (None, 1):
                raise InvalidRequestError("n must be 1: one choice per request", "n")
        elif name not in IGNORED_FIELDS and name != "stream":
            raise InvalidRequestError("Unrecognized request argument supplied: %s" % name, name)
    return kwargs, wants_stream(body)


def wants_stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream") if isinstance(body, Mapping) else None
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("stream must be true or false, not %r" % (stream,), "stream")
    return bool(stream)


def respond(llm: Any, kind: str, body: Mapping[str, Any]) -> Any:
    """The LLM's answer to a request of `kind` (KINDS): a response dict, or what the LLM returns for a stream
    (an iterator of chunks) or, for a stepwise LLM (llm.py), a non-streamed call's steps."""
    if kind == "chat.completions":
        kwargs, stream = arguments(body, CHAT_FIELDS)
        return llm.create_chat_completion(kwargs.pop("messages", None), stream=stream, **kwargs)
    if kind == "completions":
        kwargs, stream = arguments(body, COMPLETION_FIELDS)
        return llm.create_completion(kwargs.pop("prompt", None), stream=stream, **kwargs)
    if kind == "embeddings":
        body = dict(body)
        encoding = body.pop("encoding_format", None) or "float"
        if encoding not in ENCODING_FORMATS:
            raise InvalidRequestError("encoding_format must be float or base64, not %r" % (encoding,),
                                      "encoding_format")
        kwargs, _ = arguments(body, EMBEDDING_FIELDS)
        response = llm.create_embedding(kwargs.pop("input", None), **kwargs)
        return shapes.base64_embeddings(response) if encoding == "base64" else response
    if kind == "models":
        return shapes.models_list(llm.model_name)
    raise InvalidRequestError("no endpoint %r: one of %s" % (kind, ", ".join(KINDS)))
