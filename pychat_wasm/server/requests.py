"""What the HTTP server itself reads and refuses: the request body (bounded, a JSON object), its own errors
as OpenAI's error object (401, 503, a body too long), and the bounded queue of requests waiting for the model.
Each endpoint's fields are read by api/endpoints.py, as the browser's engine reads them."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import anyio

from ..api.shapes import error_object

MAX_BODY_BYTES = 4 * 1024 * 1024  # far more than a full context of text
RETRY_AFTER_SECONDS = 5


class HTTPError(Exception):
    """A request the server refuses, as OpenAI's error object."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def body(self) -> Dict[str, Any]:
        return error_object(self.message, self.kind, self.param, self.code)


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
