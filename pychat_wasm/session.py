"""A multi-turn chat on one model: prompt rendering, KV-cache reuse, streaming, stopping, context trimming.

The session is driven by a generator, so a browser worker can run it one token at a time without threads:

    session = ChatSession.from_gguf(GGUFFile.open("SmolLM2-135M-Instruct.Q4_1.gguf"))
    for event in session.generate("What is the capital of France?"):
        if event.kind == "piece":
            print(event.text, end="")
        elif event.kind == "notice":
            print("[%s]" % event.text)
        elif event.kind == "done":
            print("\\n%.1f tok/s" % event.stats.generation_tps)

Event kinds: "progress" (prompt tokens processed so far), "piece" (answer text, in order), "notice" (something
the user should know, e.g. old turns were dropped), and a final "done" carrying `GenerationStats`.

Context budget: "progress", "piece" and "done" events carry `budget`, the token ids the answer occupies in the
context: {used, context, system, history, answer, reserve, dropped, will_drop_next}. used = system + history +
answer = the rendered prompt's tokens + the tokens generated so far; `dropped` = how many of the oldest
user/assistant messages (since the last reset/restore) the trimming took out of the context; `will_drop_next`
= a next message as long as the last one will make it drop more: used + reserve > context, the reserve being
the room kept for an answer plus the last user message's tokens (its role header included).

KV reuse: the session remembers which token ids the model's KV cache holds. A new prompt is rendered from the
whole conversation and only the part after the longest common prefix is run through the model, which gives
the same logits as recomputing everything.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .chat_template import ChatTemplate, encode_chat
from .errors import ContextFullError, InvalidConversationError, PychatError, TokenizerError
from .sampler import Sampler, SamplingSettings
from .stop_strings import StopStringFilter

PROMPT_CHUNK = 32  # prompt tokens per forward call: cancellation and progress are checked between chunks
MAX_CHARS_PER_TOKEN = 64  # a rendered prompt longer than this times the context cannot fit, whatever the vocabulary


@dataclass
class GenerationStats:
    """Counts and timings of one answer."""

    prompt_tokens: int = 0  # prompt tokens run through the model (new ones only)
    reused_tokens: int = 0  # prompt tokens whose keys/values were already in the cache
    prompt_seconds: float = 0.0
    generated_tokens: int = 0  # tokens sampled, the closing end-of-turn token included
    generation_seconds: float = 0.0
    stop_reason: str = ""  # "eos" | "stop_string" | "length" | "cancelled" | "context_full"
    seed: Optional[int] = None

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people: '42 prompt tokens, 310.5 tok/s | 8 tokens, 35.1 tok/s'."""
        return "%d prompt tokens, %.1f tok/s | %d tokens, %.1f tok/s" % (
            self.prompt_tokens, self.prompt_tps, self.generated_tokens, self.generation_tps)

    def as_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), prompt_tps=self.prompt_tps, generation_tps=self.generation_tps)


@dataclass
class ChatEvent:
    """One step of `ChatSession.generate`; `as_dict()` gives plain data for postMessage/JSON."""

    kind: str  # "progress" | "piece" | "notice" | "done"
    text: str = ""
    progress: Tuple[int, int] = (0, 0)  # (prompt tokens processed, prompt tokens to process)
    stats: Optional[GenerationStats] = None
    budget: Optional[Dict[str, Any]] = None  # see "Context budget" in the module docstring

    def as_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "progress": list(self.progress),
                "stats": self.stats.as_dict() if self.stats else None, "budget": self.budget}


@dataclass
class _Answer:
    """The answer being generated: shown text and bookkeeping for the stats."""

    text: List[str] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    prompt_tokens: int = 0  # the whole rendered prompt, reused tokens included
    system_tokens: int = 0  # its leading part that comes before the first user/assistant message
    message_tokens: int = 0  # its trailing part that the user's message added


class ChatSession:
    """A conversation with one model. It owns the model's KV cache: do not run the model elsewhere meanwhile."""

    def __init__(self, model: Any, tokenizer: Any, template: ChatTemplate, system_prompt: Optional[str] = None,
                 settings: SamplingSettings = SamplingSettings(), stop_strings: Sequence[str] = (),
                 sampler: Optional[Sampler] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.settings = settings
        self.stop_strings = list(stop_strings)
        self.sampler = sampler or Sampler(settings)
        self.context_length = int(model.config.context_length)
        self.end_ids = set(tokenizer.end_of_turn_ids) | {tokenizer.eos_id}
        self.messages: List[Dict[str, str]] = []
        self.cached_ids: List[int] = []  # token ids whose keys/values the model's cache holds, in order
        self.dropped = 0  # oldest user/assistant messages trimmed out since the last reset/restore
        self._budget: Optional[Dict[str, Any]] = None  # of the last answer, until the conversation changes
        self._cancel = False
        self.reset()

    @classmethod
    def from_gguf(cls, gguf_file: Any, policy: str = "auto", context_length: Optional[int] = None,
                  **session_options: Any) -> "ChatSession":
        """Load model, tokenizer and chat template from an open GGUFFile."""
        from .model import Model
        from .tokenizer import load_tokenizer

        tokenizer = load_tokenizer(gguf_file)
        model = Model.from_gguf(gguf_file, policy=policy, context_length=context_length)
        return cls(model, tokenizer, ChatTemplate.from_gguf(gguf_file, tokenizer), **session_options)

    # ---- conversation state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays; its cached keys/values are reused)."""
        self.messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        self.dropped = 0
        self._budget = None

    def restore(self, messages: Sequence[Dict[str, str]]) -> None:
        """Continue a saved conversation (e.g. after a page reload); a first "system" message is its system
        prompt, otherwise the template's default applies. The cache keeps whatever prefix still matches."""
        for message in messages:
            if message.get("role") not in ("system", "user", "assistant") or not isinstance(
                    message.get("content"), str):
                raise InvalidConversationError("a restored message needs role system/user/assistant and text "
                                               "content: %r" % (message,))
        self.messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        has_system = bool(self.messages) and self.messages[0]["role"] == "system"
        self.system_prompt = self.messages[0]["content"] if has_system else None
        self.dropped = 0
        self._budget = None

    def use_settings(self, settings: SamplingSettings) -> None:
        """Sample the next answers with `settings` (a new seed sequence starts with them)."""
        self.settings = settings
        self.sampler = Sampler(settings)

    def cancel(self) -> None:
        """Ask the running `generate` to stop after the current token (safe to call from a signal handler)."""
        self._cancel = True

    # ---- one answer -----------------------------------------------------------------------------------------

    def generate(self, user_text: str) -> Iterator[ChatEvent]:
        """Add a user message and stream the assistant's answer as events (see the module docstring)."""
        self._cancel = False
        self.messages.append({"role": "user", "content": user_text})
        try:
            prompt_ids, dropped = self._fit_prompt()
        except PychatError:
            self.messages.pop()
            raise
        if dropped:
            yield ChatEvent("notice", "The context is full: dropped the %d oldest message%s (the system prompt "
                                      "is kept)." % (dropped, "s" if dropped > 1 else ""))
        self.dropped += dropped
        answer = _Answer(prompt_tokens=len(prompt_ids), system_tokens=self._system_tokens(prompt_ids),
                         message_tokens=len(prompt_ids) - len(self._encode(self.messages[:-1])))
        answer.stats.seed = self.sampler.seed
        try:
            for event in self._run(prompt_ids, answer):
                if event.kind != "notice":
                    event.budget = self._answer_budget(answer)
                yield event
        finally:
            self.messages.append({"role": "assistant", "content": "".join(answer.text)})
        yield ChatEvent("done", stats=answer.stats, budget=self._answer_budget(answer))

    # ---- context budget -------------------------------------------------------------------------------------

    def budget(self) -> Dict[str, Any]:
        """The context budget now: that of the last answer, or, before any answer since the conversation was
        set, of the conversation rendered as it stands (nothing generated yet)."""
        if self._budget is not None:
            return dict(self._budget)
        ids = self._encode(self.messages)
        return self._make_budget(len(ids), self._system_tokens(ids), 0, 0)

    def _answer_budget(self, answer: _Answer) -> Dict[str, Any]:
        self._budget = self._make_budget(answer.prompt_tokens, answer.system_tokens, answer.stats.generated_tokens,
                                         answer.message_tokens)
        return self._budget

    def _make_budget(self, prompt: int, system: int, answer: int, next_message: int) -> Dict[str, Any]:
        used = prompt + answer
        reserve = self._answer_room() + next_message
        return {"used": used, "context": self.context_length, "system": system, "history": prompt - system,
                "answer": answer, "reserve": reserve, "dropped": self.dropped,
                "will_drop_next": used + reserve > self.context_length}

    def _system_tokens(self, prompt_ids: List[int]) -> int:
        """How many leading prompt ids come before the first user/assistant message: the system prompt and the
        template's preamble (found as the prefix shared with the conversation cut down to the system part)."""
        first_turn = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        if not self.messages[first_turn:]:
            return len(prompt_ids)
        head = self.messages[:first_turn] + [{"role": "user", "content": ""}]
        return _common_prefix_length(self._encode(head), prompt_ids)

    def _answer_room(self) -> int:
        """Tokens a prompt must leave free for the answer: a quarter of the context, or max_tokens if smaller."""
        return min(self.settings.max_tokens, self.context_length // 4)

    def _encode(self, messages: List[Dict[str, str]], add_generation_prompt: bool = False) -> List[int]:
        """The token ids of `messages` rendered with the chat template (none for no messages)."""
        if not messages:
            return []
        text = self.template.render(messages, add_generation_prompt=add_generation_prompt)
        if len(text) > MAX_CHARS_PER_TOKEN * self.context_length:  # cannot fit: do not spend time tokenizing it
            raise ContextFullError("the prompt has %d characters, far more than the context of %d tokens holds"
                                   % (len(text), self.context_length))
        return encode_chat(self.tokenizer, text)

    def _fit_prompt(self) -> Tuple[List[int], int]:
        """The prompt ids, after dropping the oldest user/assistant messages until the prompt leaves room for
        an answer (`_answer_room`). Returns (ids, messages dropped)."""
        room = self._answer_room()
        first_turn = 1 if self.messages[0]["role"] == "system" else 0
        dropped = 0
        ids = self._encode(self.messages, add_generation_prompt=True)
        while len(ids) + room > self.context_length and len(self.messages) - first_turn > 1:
            del self.messages[first_turn]  # oldest user message, then its answer, ...
            if len(self.messages) - first_turn > 1 and self.messages[first_turn]["role"] == "assistant":
                del self.messages[first_turn]
                dropped += 1
            dropped += 1
            ids = self._encode(self.messages, add_generation_prompt=True)
        if not ids:
            raise TokenizerError("the prompt encodes to no tokens: this model's vocabulary cannot write the text")
        if len(ids) >= self.context_length:
            raise ContextFullError("the message is too long: the prompt has %d tokens and the context holds %d"
                                   % (len(ids), self.context_length))
        return ids, dropped

    def _run(self, prompt_ids: List[int], answer: _Answer) -> Iterator[ChatEvent]:
        """Process the new part of the prompt, then sample, stream and feed back tokens until a stop."""
        stats = answer.stats
        start = time.perf_counter()
        logits = None
        for logits, done, total in self._process_prompt(prompt_ids, stats):
            yield ChatEvent("progress", progress=(done, total))
            stats.prompt_seconds = time.perf_counter() - start
            if self._cancel and done < total:
                stats.stop_reason = "cancelled"
                return

        start = time.perf_counter()
        decoder = self.tokenizer.stream_decoder()
        stops = StopStringFilter(self.stop_strings)
        while True:
            if self._cancel:
                stats.stop_reason = "cancelled"
                break
            if stats.generated_tokens >= self.settings.max_tokens:
                stats.stop_reason = "length"
                break
            token = self.sampler.sample(logits, self.cached_ids)
            stats.generated_tokens += 1
            if token in self.end_ids:
                stats.stop_reason = "eos"
                break
            piece = stops.feed(decoder.feed(token))
            if piece:
                answer.text.append(piece)
                yield ChatEvent("piece", piece)
            if stops.stopped:
                stats.stop_reason = "stop_string"
                break
            if len(self.cached_ids) >= self.context_length:
                stats.stop_reason = "context_full"
                yield ChatEvent("notice", "The context is full: the answer was cut short. The next message "
                                          "will drop the oldest turns.")
                break
            logits = self._forward([token])
        if not stops.stopped:
            tail = stops.feed(decoder.flush()) + stops.flush()
            if tail:
                answer.text.append(tail)
                yield ChatEvent("piece", tail)
        stats.generation_seconds = time.perf_counter() - start

    def _process_prompt(self, prompt_ids: List[int], stats: GenerationStats):
        """Run the prompt tokens the cache does not hold yet, in chunks; yields (logits, done, total)."""
        reuse = _common_prefix_length(self.cached_ids[: self.model.n_past], prompt_ids)
        reuse = min(reuse, len(prompt_ids) - 1)  # run at least one token: its logits pick the first answer token
        del self.cached_ids[reuse:]
        stats.reused_tokens = reuse
        new_ids = prompt_ids[reuse:]
        stats.prompt_tokens = len(new_ids)
        for begin in range(0, len(new_ids), PROMPT_CHUNK):
            logits = self._forward(new_ids[begin: begin + PROMPT_CHUNK])
            yield logits, min(begin + PROMPT_CHUNK, len(new_ids)), len(new_ids)

    def _forward(self, ids: List[int]):
        """Run `ids` after the cached tokens; the cache bookkeeping changes only once the model has finished."""
        logits = self.model.forward(ids, start_pos=len(self.cached_ids))  # [vocab] for the last token
        self.cached_ids.extend(ids)
        return logits


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids two sequences share.

    >>> _common_prefix_length([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
