"""One call's run of the ChatSession, and the OpenAI responses made of it: `Generation` turns the session's
events into text pieces with their tokens' logprobs, then a finish reason and its report (usage, timings,
context budget); chat_chunks (through a tools.CallReader: content or a tool call), chat_response (the same
chunks put together), text_response and text_chunks shape them (shapes.py). A whole response is made in steps
too (None per chunk or piece, then the response), so a caller may stop between two: the browser's worker."""
from __future__ import annotations

import itertools
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import shapes
from .tools import CallReader
from ..chat.events import ChatEvent, ContextBudget, GenerationStats
from ..errors import ContextFullError


class Generation:
    """One call's run of the session: text pieces with their tokens' logprobs as they come, then the finish
    reason and the token counts. The prompt is processed (and a conversation too long for the context
    refused) when it is made, so errors surface before a stream starts."""

    def __init__(self, llm: Any, events: Iterator[ChatEvent], top_logprobs: Optional[int], source: str,
                 drops_turns: bool = False):
        self.llm, self.events, self.top, self.source = llm, events, top_logprobs, source  # source: the argument
        self.drops_turns = drops_turns  # truncation "auto": the session may leave the oldest turns out
        self.budget: Optional[ContextBudget] = None
        self.records: Optional[List[shapes.TokenLogprob]] = None if top_logprobs is None else []
        self.unsent = 0  # records not yet handed out with a piece
        self.stats = GenerationStats()
        llm.session.on_sample = self._observe
        self.first = self._start()

    def _start(self) -> List[ChatEvent]:
        """The first event, which tells how the prompt went (its budget: the turns left out)."""
        try:
            pulled: List[ChatEvent] = list(itertools.islice(self.events, 1))
        except ContextFullError as exc:
            self.close()
            raise naming(exc, self.source)
        except BaseException:
            self.close()
            raise
        budget = self.budget = pulled[0].budget if pulled else None
        if budget and budget.dropped and not self.drops_turns:
            self.close()
            raise naming(ContextFullError(
                "messages: the conversation does not fit the context of %d tokens with room for the answer "
                "(max_tokens, at most a quarter of the context): send fewer or shorter messages or a smaller "
                "max_tokens" % budget.context), "messages")
        return pulled

    def _observe(self, logits: np.ndarray, token: int) -> None:
        self.llm.generated_tokens += 1
        if self.records is not None and token not in self.llm.session.end_ids:
            self.records.append(shapes.TokenLogprob(self.llm.tokenizer, logits, token, self.top))

    def pieces(self, progress: bool = False) -> Iterator[Tuple[Any, Optional[List[shapes.TokenLogprob]]]]:
        """(text, the logprobs of the tokens sampled since the last piece, or None without logprobs); with
        `progress`, also ((prompt tokens read, of), None) after each chunk of the prompt but its last: a caller
        may show it, and stop there (the session's cancel() is checked between chunks)."""
        try:
            for event in itertools.chain(self.first, self.events):
                self.budget = event.budget or self.budget  # the context as of this event
                if event.kind == "piece":
                    yield event.text, self.unsent_records()
                elif progress and event.kind == "progress" and event.progress[0] < event.progress[1]:
                    yield event.progress, None
                elif event.kind == "done":
                    self.stats = event.stats
        finally:
            self.close()

    def unsent_records(self) -> Optional[List[shapes.TokenLogprob]]:
        if self.records is None:
            return None
        fresh, self.unsent = self.records[self.unsent:], len(self.records)
        return fresh

    def close(self) -> None:
        """Stop generating (a reader that went away) and unhook from the session."""
        self.events.close()
        if self.llm.session.on_sample == self._observe:
            self.llm.session.on_sample = None

    def finish_reason(self) -> str:
        return shapes.finish_reason(self.stats.stop_reason)

    def report(self) -> Dict[str, Any]:
        """What the finished call reports next to its answer: OpenAI's usage, llama.cpp's timings and, for a
        chat, the context budget (ContextBudget's fields; `dropped`: the oldest messages left out)."""
        stats = self.stats
        answer_tokens = stats.generated_tokens - (stats.stop_reason == "eos")  # the end-of-turn token is no text
        report = {"usage": shapes.usage(stats.prompt_tokens + stats.reused_tokens, answer_tokens),
                  "timings": shapes.timings(stats)}
        if self.budget is not None:
            report["context_budget"] = self.budget.as_dict()
        return report

    def report_so_far(self) -> Dict[str, Any]:
        """A chat's usage and context budget as of the last event, for a chunk of a stream (vLLM's
        continuous_usage_stats): the prompt, and the tokens sampled so far."""
        budget = self.budget
        if budget is None:
            return {}
        return {"usage": shapes.usage(budget.system + budget.history, budget.answer),
                "context_budget": budget.as_dict()}


def naming(error: ContextFullError, param: str) -> ContextFullError:
    """`error` with the argument that did not fit (for the server's error object)."""
    if not getattr(error, "param", None):
        error.param = param
    return error


def chat_response(run: Generation, model: str, reader: CallReader) -> Iterator[Optional[Dict[str, Any]]]:
    """The steps of the non-streamed answer: None per chunk of the stream, then its deltas put together."""
    ident, content, calls, reason = "", [], [], None
    for chunk in chat_chunks(run, model, reader):
        yield None
        ident, choice = chunk["id"], chunk["choices"][0]
        content.append(choice["delta"].get("content") or "")
        for part in choice["delta"].get("tool_calls", ()):
            if part["index"] == len(calls):
                calls.append({"id": part["id"], "type": part["type"], "function": dict(part["function"])})
            else:
                calls[part["index"]]["function"]["arguments"] += part["function"]["arguments"]
        reason = choice["finish_reason"]
    message = {"role": "assistant", "content": "".join(content)} if not calls else {
        "role": "assistant", "content": "".join(content) or None, "tool_calls": calls}
    yield shapes.chat_completion(ident, model, message, reason, shapes.chat_logprobs(run.records), run.report())


def chat_chunks(run: Generation, model: str, reader: CallReader, include_usage: bool = False,
                continuous: bool = False) -> Iterator[Dict[str, Any]]:
    """The first chunk carries the role (and an empty content unless the answer may be a call), then one per
    delta (with the logprobs of the tokens since the last one), the last the finish_reason; with include_usage
    a chunk without choices carries run.report(), and with continuous every chunk before it carries
    run.report_so_far() and, while a long prompt is read, a chunk without choices follows each of its chunks
    with `prompt_progress` (llama.cpp's server's name: {"processed", "total"}, tokens to run)."""
    ident = shapes.new_id("chatcmpl")
    so_far = run.report_so_far if continuous else dict
    role = {"role": "assistant"} if reader.may_call else {"role": "assistant", "content": ""}  # a call: no content
    yield dict(shapes.chat_chunk(ident, model, role), **so_far())
    pending: Optional[List[shapes.TokenLogprob]] = None if run.records is None else []

    def chunks(deltas: List[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        nonlocal pending
        for delta in deltas:
            yield dict(shapes.chat_chunk(ident, model, delta, logprobs=shapes.chat_logprobs(pending)), **so_far())
            pending = None if pending is None else []

    for piece, records in run.pieces(progress=continuous):
        if isinstance(piece, tuple):  # a chunk of the prompt read
            progress = dict(zip(("processed", "total"), piece))
            yield shapes.usage_chunk(ident, model, "chat.completion.chunk", dict(run.report_so_far(),
                                                                                 prompt_progress=progress))
            continue
        pending = None if pending is None else pending + records
        yield from chunks(reader.feed(piece))
    yield from chunks(reader.finish())
    reason = run.finish_reason()
    rest = run.unsent_records()
    yield dict(shapes.chat_chunk(ident, model, {}, "tool_calls" if reader.is_call and reason == "stop" else reason,
                                 shapes.chat_logprobs(None if pending is None else pending + rest)), **so_far())
    if include_usage:
        yield shapes.usage_chunk(ident, model, "chat.completion.chunk", run.report())


def text_response(run: Generation, model: str) -> Iterator[Optional[Dict[str, Any]]]:
    """The steps of a whole text_completion: None as each piece is generated, then the response."""
    pieces = []
    for piece, _ in run.pieces():
        pieces.append(piece)
        yield None
    yield shapes.text_completion(shapes.new_id("cmpl"), model, "".join(pieces), run.finish_reason(),
                                 shapes.text_logprobs(run.records, 0), run.report())


def last_step(steps: Iterator[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """Run `steps` (chat_response's, text_response's) to the end: the response."""
    response = None
    for response in steps:
        pass
    return response


def text_chunks(run: Generation, model: str, include_usage: bool = False) -> Iterator[Dict[str, Any]]:
    ident, offset = shapes.new_id("cmpl"), 0
    for piece, records in run.pieces():
        yield shapes.text_completion(ident, model, piece, None, shapes.text_logprobs(records, offset))
        offset += len(piece)
    yield shapes.text_completion(ident, model, "", run.finish_reason(),
                                 shapes.text_logprobs(run.unsent_records(), offset))
    if include_usage:
        yield shapes.usage_chunk(ident, model, "text_completion", run.report())
