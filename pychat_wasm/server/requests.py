"""What the HTTP server reads and refuses: the request body (bounded, a JSON object), each endpoint's fields as
the LLM's keyword arguments, OpenAI's error object, and the bounded queue of requests waiting for the model.

>>> arguments({"model": "x", "messages": [], "temperature": 0, "stream": True}, CHAT_FIELDS)
({'messages': [], 'temperature': 0}, True)
>>> arguments({"temprature": 0}, CHAT_FIELDS)
Traceback (most recent call last):
pychat_wasm.server.requests.HTTPError: Unrecognized request argument supplied: temprature
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

import anyio

MAX_BODY_BYTES = 4 * 1024 * 1024  # far more than a full context of text
RETRY_AFTER_SECONDS = 5

SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "repeat_penalty",
                   "repeat_last_n", "frequency_penalty", "presence_penalty", "response_format", "grammar",
                   "stream_options")  # grammar and repeat_last_n: llama.cpp's
CHAT_FIELDS = ("messages", "logprobs", "top_logprobs", "tools", "tool_choice", "truncation") + SAMPLING_FIELDS
COMPLETION_FIELDS = ("prompt", "logprobs") + SAMPLING_FIELDS
EMBEDDING_FIELDS = ("input",)
IGNORED_FIELDS = ("model", "user")  # accepted and without effect: there is one model
RENAMED_FIELDS = {"max_completion_tokens": "max_tokens"}  # OpenAI's newer name


class HTTPError(Exception):
    """A request the server refuses, as OpenAI's error object."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


async def json_body(request: Any) -> Dict[str, Any]:
    """The request's JSON object, read up to MAX_BODY_BYTES (a longer body is refused once that much is read,
    so the client that sent it reads the refusal)."""
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise HTTPError(400, "the request body is over %d bytes" % MAX_BODY_BYTES, code="body_too_large")
    try:
        value = json.loads(bytes(body))
    except ValueError as exc:  # malformed JSON or not UTF-8
        raise HTTPError(400, "the request body is not valid JSON: %s" % exc, code="invalid_json") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "the request body must be a JSON object, not %s" % type(value).__name__,
                        code="invalid_json")
    return value


def arguments(body: Dict[str, Any], fields: Tuple[str, ...]) -> Tuple[Dict[str, Any], bool]:
    """(the LLM's keyword arguments, stream) from a request body; unknown fields are refused as OpenAI does."""
    kwargs: Dict[str, Any] = {}
    for name, value in body.items():
        name = RENAMED_FIELDS.get(name, name)
        if name in fields:
            if value is not None:
                kwargs[name] = value
        elif name == "n":
            if value not in (None, 1):
                raise HTTPError(400, "n must be 1: one choice per request", param="n")
        elif name not in IGNORED_FIELDS and name != "stream":
            raise HTTPError(400, "Unrecognized request argument supplied: %s" % name, param=name)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise HTTPError(400, "stream must be true or false, not %r" % (stream,), param="stream")
    return kwargs, bool(stream)


class ModelQueue:
    """One request at a time on the model; at most `limit` more wait, and one beyond that gets 503."""

    def __init__(self, limit: int):
        self.limit = limit
        self.waiting = 0
        self.lock = anyio.Lock()

    async def acquire(self) -> None:
        if self.lock.locked() and self.waiting >= self.limit:
            raise HTTPError(503, "the server is busy: %d requests are waiting; retry later" % self.waiting,
                            kind="server_error", code="queue_full",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self.lock.release()

    @property
    def busy(self) -> bool:
        return self.lock.locked()
