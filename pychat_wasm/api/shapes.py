"""OpenAI's response shapes as plain dicts: chat completions and their chunks, text completions, embeddings,
the models list, usage, logprobs and the error object. The one place that knows their field names.

>>> usage(7, 3)
{'prompt_tokens': 7, 'completion_tokens': 3, 'total_tokens': 10}
>>> finish_reason("eos"), finish_reason("context_full")
('stop', 'length')
"""
from __future__ import annotations

import base64
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ContextFullError, InvalidConversationError, InvalidRequestError, PychatError

# The session's stop reasons (chat/events.py GenerationStats) as OpenAI's finish_reason.
FINISH_REASONS = {"eos": "stop", "stop_string": "stop", "grammar_end": "stop", "length": "length",
                  "context_full": "length", "cancelled": "cancelled"}


def finish_reason(stop_reason: str) -> str:
    return FINISH_REASONS[stop_reason]


def timings(stats: Any) -> Dict[str, Any]:
    """llama.cpp's server `timings` (an extension next to `usage`) of a GenerationStats: prompt tokens run
    (cache_n more were reused from the KV cache) and tokens sampled (the end-of-turn token included), their
    milliseconds and speeds; draft_n of them drafted by speculation and checked, draft_n_accepted of those
    kept."""
    return {"cache_n": stats.reused_tokens, "prompt_n": stats.prompt_tokens,
            "prompt_ms": stats.prompt_seconds * 1000.0, "prompt_per_second": stats.prompt_tps,
            "predicted_n": stats.generated_tokens, "predicted_ms": stats.generation_seconds * 1000.0,
            "predicted_per_second": stats.generation_tps,
            "draft_n": stats.draft_tokens, "draft_n_accepted": stats.draft_accepted}


def new_id(prefix: str) -> str:
    return "%s-%s" % (prefix, uuid.uuid4().hex)


def usage(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class TokenLogprob:
    """One sampled token's log-probability and its `top` best alternatives, from the raw logits (the model's
    distribution: before temperature, penalties and truncation, as OpenAI reports them)."""

    def __init__(self, tokenizer: Any, logits: np.ndarray, token: int, top: int):
        logprobs = log_softmax(logits)  # [vocab] float64
        self.tokenizer = tokenizer
        self.token = token
        self.logprob = float(logprobs[token])
        best = np.argpartition(-logprobs, top)[:top] if 0 < top < logprobs.shape[0] else np.arange(top)  # [top]
        best = best[np.argsort(-logprobs[best], kind="stable")]  # best first
        self.top = [(int(i), float(logprobs[i])) for i in best]

    def entry(self, token: int, logprob: float) -> Dict[str, Any]:
        raw = self.tokenizer.token_bytes(token)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    def chat_entry(self) -> Dict[str, Any]:
        """choices[0].logprobs.content[i] of a chat completion."""
        return dict(self.entry(self.token, self.logprob),
                    top_logprobs=[self.entry(i, lp) for i, lp in self.top])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64.

    >>> np.exp(log_softmax(np.array([0.0, 0.0]))).tolist()
    [0.5, 0.5]
    """
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits)  # [vocab]
    return shifted - np.log(np.exp(shifted).sum())


def chat_logprobs(records: Optional[Sequence[TokenLogprob]]) -> Optional[Dict[str, Any]]:
    return None if records is None else {"content": [r.chat_entry() for r in records]}


def text_logprobs(records: Optional[Sequence[TokenLogprob]], text_start: int) -> Optional[Dict[str, Any]]:
    """The legacy completions' logprobs: tokens, token_logprobs, top_logprobs, text_offset."""
    if records is None:
        return None
    tokens, offsets, offset = [], [], text_start
    for record in records:
        token = record.entry(record.token, record.logprob)["token"]
        tokens.append(token)
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": [r.logprob for r in records],
            "top_logprobs": [_by_text(r) for r in records],
            "text_offset": offsets}


def _by_text(record: TokenLogprob) -> Dict[str, float]:
    """The legacy top_logprobs {token text: logprob}; tokens that print alike keep the best one's."""
    best: Dict[str, float] = {}
    for token, logprob in record.top:
        best.setdefault(record.entry(token, logprob)["token"], logprob)
    return best


def chat_completion(ident: str, model: str, message: Dict[str, Any], reason: str,
                    logprobs: Optional[Dict[str, Any]], report: Dict[str, Any]) -> Dict[str, Any]:
    """report: usage, and the extensions next to it (generation.py's Generation.report)."""
    return dict(report, id=ident, object="chat.completion", created=int(time.time()), model=model,
                choices=[{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason}])


def chat_chunk(ident: str, model: str, delta: Dict[str, Any], reason: Optional[str] = None,
               logprobs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}]}


def usage_chunk(ident: str, model: str, obj: str, report: Dict[str, Any]) -> Dict[str, Any]:
    """stream_options.include_usage's last chunk: no choices, the usage (and the report's extensions)."""
    return dict(report, id=ident, object=obj, created=int(time.time()), model=model, choices=[])


def text_completion(ident: str, model: str, text: str, reason: Optional[str], logprobs: Optional[Dict[str, Any]],
                    report: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A text completion (report: usage and its extensions), or (report None) one chunk of a streamed one."""
    return dict(report or {}, id=ident, object="text_completion", created=int(time.time()), model=model,
                choices=[{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": reason}])


def embeddings(model: str, vectors: List[List[float]], prompt_tokens: int) -> Dict[str, Any]:
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "embedding": vector, "index": i} for i, vector in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def base64_embeddings(response: Dict[str, Any]) -> Dict[str, Any]:
    """An embeddings response with each vector as base64 of little-endian float32s (encoding_format base64)."""
    for item in response["data"]:
        item["embedding"] = base64.b64encode(np.asarray(item["embedding"], "<f4").tobytes()).decode()
    return response


def models_list(model: str) -> Dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "pychat-wasm"}]}


def error_object(message: str, kind: str = "invalid_request_error", param: Optional[str] = None,
                 code: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(exc: BaseException) -> Tuple[int, Dict[str, Any]]:
    """(HTTP status, OpenAI's error object) for an error of a call: a request the engine refuses is a 400
    naming the argument where one is to blame; anything else is the engine's failure, a 500.

    >>> openai_error(InvalidRequestError("top_p: ...", "top_p"))
    (400, {'error': {'message': 'top_p: ...', 'type': 'invalid_request_error', 'param': 'top_p', 'code': None}})
    """
    if isinstance(exc, InvalidRequestError):
        return 400, error_object(str(exc), param=exc.param or None)
    if isinstance(exc, ContextFullError):
        return 400, error_object(str(exc), param=getattr(exc, "param", None), code="context_length_exceeded")
    if isinstance(exc, InvalidConversationError):
        return 400, error_object(str(exc), param="messages")
    if isinstance(exc, PychatError) and isinstance(exc, ValueError):  # a template, tokenizer or setting refusal
        return 400, error_object(str(exc))
    return 500, error_object("the server failed: %s" % exc, kind="server_error")
