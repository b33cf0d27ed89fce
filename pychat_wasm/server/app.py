"""The HTTP server of `pychat-wasm serve`: OpenAI's endpoints over one `LLM`, as a Starlette (ASGI) app.

    GET  /v1/models              the one model
    POST /v1/chat/completions    chat; with "stream": true, server-sent events ending with `data: [DONE]`
    POST /v1/completions         raw prompt
    POST /v1/embeddings          mean-pooled, L2-normalised embeddings ("encoding_format": "float" | "base64")
    GET  /health                 {"status": "ok", busy, waiting, generated_tokens} (no key needed)

Requests run one at a time on the model (the LLM is not thread-safe; its work runs in a worker thread so the
server keeps answering); others wait in a bounded queue, and a full queue answers 503 with Retry-After. A
client that goes away stops its generation: a stream at its next piece, a plain request at its next token.
With an API key, every request but /health needs `Authorization: Bearer KEY` (401 otherwise). CORS is off
unless origins are given. Refusals are 400s with OpenAI's error object (api/endpoints.py, api/shapes.py); the
server stays up.

Native only: the browser never imports this package (it needs the `server` extra: Starlette and uvicorn).
"""
from __future__ import annotations

import hmac
import json
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .requests import HTTPError, ModelQueue, json_body
from ..api.endpoints import respond, wants_stream
from ..api.shapes import openai_error
from ..errors import PychatError

DEFAULT_QUEUE_LIMIT = 8


def build_app(llm: Any, api_key: Optional[str] = None, cors_origins: Sequence[str] = (),
              queue_limit: int = DEFAULT_QUEUE_LIMIT) -> Starlette:
    """The ASGI app serving `llm` (a pychat_wasm.LLM)."""
    queue = ModelQueue(queue_limit)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse(respond(llm, "models", {}))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": llm.model_name, "busy": queue.busy, "waiting": queue.waiting,
                             "generated_tokens": llm.generated_tokens})

    def endpoint(kind: str) -> Callable[[Request], Any]:
        """The route of one of OpenAI's POST endpoints (api/endpoints.py reads and checks the body)."""

        async def answer(request: Request) -> Any:
            body = await json_body(request)
            stream = wants_stream(body)
            return _response(await _on_model(request, llm, queue, lambda: respond(llm, kind, body), stream))

        return answer

    routes = [Route("/v1/models", models), Route("/health", health),
              Route("/v1/chat/completions", endpoint("chat.completions"), methods=["POST"]),
              Route("/v1/completions", endpoint("completions"), methods=["POST"]),
              Route("/v1/embeddings", endpoint("embeddings"), methods=["POST"])]
    middleware = []
    if cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                                     allow_headers=["*"]))
    if api_key:
        middleware.append(Middleware(BearerKey, key=api_key))
    # PychatError's handler answers and the connection stays open; Exception's (Starlette's server-error
    # middleware) answers and then re-raises, for errors nobody expected.
    handlers = {HTTPError: _http_error, PychatError: _engine_error, Exception: _engine_error}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


def _response(result: Any) -> Any:
    return result if isinstance(result, EventStream) else JSONResponse(result)


async def _on_model(request: Request, llm: Any, queue: ModelQueue, call: Callable[[], Any], stream: bool) -> Any:
    """Run `call` on the model when its turn comes: its result, or for a stream its events."""
    await queue.acquire()
    handed_over = False
    try:
        if not stream:
            return await _cancelled_on_disconnect(request, llm, call)
        chunks = await anyio.to_thread.run_sync(call)  # the prompt is processed here: errors are still a 400
        handed_over = True
        return EventStream(chunks, queue.release)
    finally:
        if not handed_over:
            queue.release()


async def _cancelled_on_disconnect(request: Request, llm: Any, call: Callable[[], Any]) -> Any:
    """call() in a worker thread, while a watcher cancels the generation if the client goes away."""
    outcome: List[Any] = []

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        llm.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            outcome.append(await anyio.to_thread.run_sync(call))
        except Exception as exc:  # raised after the group, not wrapped in an exception group
            outcome.append(exc)
        group.cancel_scope.cancel()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


class EventStream(StreamingResponse):
    """Server-sent events of an iterator of chunks (computed in a worker thread, one at a time), then
    `data: [DONE]`; when it ends, however it ends, the generation is closed and the model released."""

    def __init__(self, chunks: Iterator[Dict[str, Any]], release: Callable[[], None]):
        super().__init__(self._events(chunks), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})
        self.chunks, self.release = chunks, release

    @staticmethod
    async def _events(chunks: Iterator[Dict[str, Any]]):
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                break
            yield "data: %s\n\n" % json.dumps(chunk)
        yield "data: [DONE]\n\n"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass
        finally:
            self.chunks.close()  # stops the generation where the client left it
            self.release()


class BearerKey:
    """ASGI middleware: every request but /health and CORS preflights needs `Authorization: Bearer KEY`."""

    def __init__(self, app: Any, key: str):
        self.app, self.expected = app, ("Bearer " + key).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health" and scope["method"] != "OPTIONS":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                error = HTTPError(401, "Incorrect API key provided: send Authorization: Bearer KEY",
                                  code="invalid_api_key")
                await _http_error(None, error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _http_error(request: Optional[Request], exc: HTTPError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    """The engine's errors as OpenAI's error object (api/shapes.py): a refused request is a 400, the rest 500."""
    status, body = openai_error(exc)
    return JSONResponse(body, status_code=status)
