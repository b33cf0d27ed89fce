"""Answers to conversations on one model: prompt rendering, KV-cache reuse, streaming, stopping, context trimming.

The caller owns the conversation (the page, the CLI, replay, evaluation: each keeps its own list of messages)
and sends it whole with every turn; the session keeps only the model's KV cache (`model.cache.ids`: which
token ids it holds) and the sampler's random stream. A turn is a generator, so a browser worker can run it one
token at a time without threads:

    session = ChatSession.from_gguf(GGUFFile.open("SmolLM2-135M-Instruct.Q4_1.gguf"))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    for event in session.reply(messages, SamplingSettings(temperature=0)):
        if event.kind == "piece":
            print(event.text, end="")
        elif event.kind == "done":
            messages.append({"role": "assistant", "content": event.text})
            print("\\n%.1f tok/s" % event.stats.generation_tps)

A conversation: an optional first "system" message (the system prompt; without it the template's default
applies), then user and assistant messages ending with the user's (the library API may also pass assistant
messages with `tool_calls` and "tool" results, for a template that renders them: api/tool_messages.py).
Event kinds: "progress" (prompt tokens processed so far), "piece" (answer text, in order), and a final
"done" carrying `GenerationStats` (its stop_reason "context_full" when the context ran out), the whole answer
and the budget (its `dropped`: the oldest turns left out).

The library's raw completions (`complete(prompt_ids, settings, stop_strings)`, pychat_wasm/api/) run the same
token loop with no template or conversation; `on_sample` shows it each step's raw logits and the token drawn
from them (for logprobs).

Context budget: "progress", "piece" and "done" events carry a `ContextBudget` (events.py), the token ids the
answer occupies in the context: used = system + history + answer = the rendered prompt's tokens + the tokens
generated so far; `dropped` = how many of the oldest user/assistant messages of the conversation the trimming
left out of the prompt; `will_drop_next` = a next message as long as the last one will make it drop more:
used + reserve > context, the reserve being the room kept for an answer plus the last user message's tokens
(its role header included).

Speculation (on unless `speculative` is None: LLM(speculative=False), `chat --no-speculative`, the page's
load option "speculative": false): the loop gets its logits from passes over each token and a draft copied
from the prompt (speculative.py); the tokens are the same. Whether a draft runs depends on the tokens only,
never on timing, so the workers of a split model make the same passes.

KV reuse: a new prompt is rendered from the whole conversation and only the part after the longest common
prefix with the cache's ids is run through the model, which gives the same logits as recomputing everything.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .events import Answer, ChatEvent, ContextBudget, GenerationStats
from .load import plan_load
from .template import ChatTemplate, encode_chat
from ..errors import ContextFullError, InvalidConversationError, TokenizerError
from .sampler import Sampler, SamplingSettings
from .speculative import PromptLookup, token_feed
from .stop_strings import StopStringFilter

PROMPT_CHUNK = 32  # prompt tokens per forward call: cancellation and progress are checked between chunks
MAX_CHARS_PER_TOKEN = 64  # a rendered prompt longer than this times the context cannot fit, whatever the vocabulary


class ChatSession:
    """Answers conversations with one model. It owns the model's KV cache: do not run the model elsewhere
    meanwhile."""

    def __init__(self, model: Any, tokenizer: Any, template: ChatTemplate, sampler: Optional[Sampler] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.sampler = sampler or Sampler()
        self.context_length = int(model.config.context_length)
        self.end_ids = set(tokenizer.end_of_turn_ids) | {tokenizer.eos_id}
        self._cancel = False
        self.on_sample: Optional[Callable[[Any, int], None]] = None  # called with (raw logits [vocab], token id)
        self.speculative: Optional[PromptLookup] = PromptLookup()  # drafts per pass (speculative.py); None: off

    @classmethod
    def from_plan(cls, plan: Any, collective: Any = None) -> "ChatSession":
        """The model a LoadPlan (model/load_plan.py) describes, with its tokenizer and chat template."""
        from ..model.forward import Model

        return cls(Model.from_plan(plan, collective), plan.tokenizer, plan.template)

    @classmethod
    def from_gguf(cls, gguf_file: Any, policy: str = "auto", context_length: Optional[int] = None) -> "ChatSession":
        """Plan the load of an open GGUFFile (checks, tokenizer, template, weight policy) and build it."""
        return cls.from_plan(plan_load(gguf_file, context_length=context_length, policy=policy))

    def cancel(self) -> None:
        """Ask the running turn to stop after the current token (safe to call from a signal handler)."""
        self._cancel = True

    # ---- one answer -----------------------------------------------------------------------------------------

    def reply(self, messages: Sequence[Dict[str, str]], settings: SamplingSettings = SamplingSettings(),
              stop_strings: Sequence[str] = (), tools: Optional[list] = None) -> Iterator[ChatEvent]:
        """Answer `messages` (see the module docstring) with `settings`, ending the answer before the first of
        `stop_strings`; streams events. tools: the functions the template renders itself (api/tools.py), or
        None. A malformed conversation raises InvalidConversationError here, before anything runs; a turn that
        fails (e.g. ContextFullError at its first event) leaves the session as it was."""
        messages = _checked_messages(messages)
        if not messages or messages[-1]["role"] not in ("user", "tool"):
            raise InvalidConversationError("a conversation to answer ends with a user message (or a tool result)")
        return self._answer(messages, settings, list(stop_strings), tools)

    def complete(self, prompt_ids: Sequence[int], settings: SamplingSettings = SamplingSettings(),
                 stop_strings: Sequence[str] = ()) -> Iterator[ChatEvent]:
        """Continue raw token ids, with no template (the library's create_completion). Events as for `reply`,
        without budgets."""
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise TokenizerError("the prompt encodes to no tokens")
        if len(prompt_ids) >= self.context_length:
            raise ContextFullError("the prompt has %d tokens and the context holds %d"
                                   % (len(prompt_ids), self.context_length))
        self._cancel = False
        self.sampler.use(settings)
        answer = Answer(prompt_tokens=len(prompt_ids))
        answer.stats.seed = self.sampler.seed
        yield from self._run(prompt_ids, answer, settings, list(stop_strings))
        yield ChatEvent("done", text="".join(answer.text), stats=answer.stats)

    def _answer(self, messages: List[Dict[str, str]], settings: SamplingSettings,
                stop_strings: List[str], tools: Optional[list]) -> Iterator[ChatEvent]:
        self._cancel = False
        room = _answer_room(settings, self.context_length)
        prompt_ids, kept, dropped = self._fit_prompt(messages, room, tools)
        self.sampler.use(settings)
        answer = Answer(prompt_tokens=len(prompt_ids), system_tokens=self._system_tokens(kept, prompt_ids, tools),
                        message_tokens=len(prompt_ids) - len(self._encode(kept[:-1], tools=tools)), dropped=dropped)
        answer.stats.seed = self.sampler.seed
        for event in self._run(prompt_ids, answer, settings, stop_strings):
            event.budget = self._answer_budget(answer, room)
            yield event
        yield ChatEvent("done", text="".join(answer.text), stats=answer.stats,
                        budget=self._answer_budget(answer, room))

    # ---- context budget -------------------------------------------------------------------------------------

    def budget(self, messages: Sequence[Dict[str, str]], settings: SamplingSettings = SamplingSettings()
               ) -> ContextBudget:
        """The budget `messages` (any conversation, without trimming) take before an answer with `settings`;
        the session is unchanged."""
        messages = _checked_messages(messages)
        ids = self._encode(messages)
        return self._make_budget(len(ids), self._system_tokens(messages, ids), 0, 0, 0,
                                 _answer_room(settings, self.context_length))

    def _answer_budget(self, answer: Answer, room: int) -> ContextBudget:
        return self._make_budget(answer.prompt_tokens, answer.system_tokens, answer.stats.generated_tokens,
                                 answer.message_tokens, answer.dropped, room)

    def _make_budget(self, prompt: int, system: int, answer: int, next_message: int, dropped: int,
                     room: int) -> ContextBudget:
        used = prompt + answer
        reserve = room + next_message
        return ContextBudget(used=used, context=self.context_length, system=system, history=prompt - system,
                             answer=answer, reserve=reserve, dropped=dropped,
                             will_drop_next=used + reserve > self.context_length)

    def _system_tokens(self, messages: List[Dict[str, str]], prompt_ids: List[int],
                       tools: Optional[list] = None) -> int:
        """How many leading ids of the prompt of `messages` come before the first user/assistant message: the
        system prompt and the template's preamble (the prefix shared with the conversation cut down to the
        system part)."""
        first_turn = 1 if _has_system(messages) else 0
        if not messages[first_turn:]:
            return len(prompt_ids)
        head = messages[:first_turn] + [{"role": "user", "content": ""}]
        return _common_prefix_length(self._encode(head, tools=tools), prompt_ids)

    def _encode(self, messages: List[Dict[str, str]], add_generation_prompt: bool = False,
                tools: Optional[list] = None) -> List[int]:
        """The token ids of `messages` rendered with the chat template (none for no messages)."""
        if not messages:
            return []
        text = self.template.render(messages, add_generation_prompt=add_generation_prompt, tools=tools)
        if len(text) > MAX_CHARS_PER_TOKEN * self.context_length:  # cannot fit: do not spend time tokenizing it
            raise ContextFullError("the prompt has %d characters, far more than the context of %d tokens holds"
                                   % (len(text), self.context_length))
        return encode_chat(self.tokenizer, text)

    def _fit_prompt(self, messages: List[Dict[str, str]], room: int, tools: Optional[list] = None
                    ) -> Tuple[List[int], List[Dict[str, str]], int]:
        """The prompt of `messages` after dropping the fewest oldest whole turns (a user message and what
        follows it up to the next one) for the prompt to leave `room` tokens for an answer; the system
        prompt and the last user message always stay. Returns (ids, the messages kept, how many were dropped).

        Fewer messages never make a longer prompt, so the cut is found by bisection: a few encodings, however
        long the conversation."""
        first_turn = 1 if _has_system(messages) else 0
        turns = messages[first_turn:]
        cuts = [0] + [i for i, m in enumerate(turns) if m["role"] == "user" and i > 0]  # where a kept part may start
        encoded: Dict[int, Optional[List[int]]] = {}

        def prompt(cut: int) -> Optional[List[int]]:  # the ids when turns[:cut] are dropped; None: far too long
            if cut not in encoded:
                try:
                    encoded[cut] = self._encode(messages[:first_turn] + turns[cut:], True, tools)
                except ContextFullError:
                    encoded[cut] = None
            return encoded[cut]

        def fits(cut: int) -> bool:
            ids = prompt(cut)
            return ids is not None and len(ids) + room <= self.context_length

        low, high = 0, len(cuts) - 1  # the first fitting cut is in cuts[low..high] (the last one, if none fits)
        while low < high:
            middle = (low + high) // 2
            if fits(cuts[middle]):
                high = middle
            else:
                low = middle + 1
        cut = cuts[low]
        ids = prompt(cut)
        if ids is None:
            self._encode(messages[:first_turn] + turns[cut:], tools=tools)  # raises the ContextFullError that says why
        if not ids:
            raise TokenizerError("the prompt encodes to no tokens: this model's vocabulary cannot write the text")
        if len(ids) >= self.context_length:
            raise ContextFullError("the message is too long: the prompt has %d tokens and the context holds %d"
                                   % (len(ids), self.context_length))
        return ids, messages[:first_turn] + turns[cut:], cut

    def _run(self, prompt_ids: List[int], answer: Answer, settings: SamplingSettings,
             stop_strings: List[str]) -> Iterator[ChatEvent]:
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
        feed = token_feed(self.model, self.speculative)
        try:
            yield from self._generate(logits, feed, answer, settings, stop_strings)
        finally:
            feed.finish()  # the cache holds the answer's tokens, not unchecked draft ones
            stats.draft_tokens, stats.draft_accepted = feed.drafted, feed.accepted
        stats.generation_seconds = time.perf_counter() - start

    def _generate(self, logits: Any, feed: Any, answer: Answer, settings: SamplingSettings,
                  stop_strings: List[str]) -> Iterator[ChatEvent]:
        """Sample, stream and feed back tokens from the prompt's last logits until a stop."""
        stats = answer.stats
        decoder = self.tokenizer.stream_decoder()
        stops = StopStringFilter(stop_strings)
        self.sampler.begin_answer()
        while True:
            if self._cancel:
                stats.stop_reason = "cancelled"
                break
            if stats.generated_tokens >= settings.max_tokens:
                stats.stop_reason = "length"
                break
            token = self.sampler.sample(logits, feed.history)
            if self.on_sample is not None:
                self.on_sample(logits, token)
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
            if self.sampler.must_end:  # a grammar that is complete: no forward for a token that can only end
                stats.stop_reason = "grammar_end"
                break
            if len(feed.history) >= self.context_length:
                stats.stop_reason = "context_full"
                break
            logits = feed.next_logits(token, settings.max_tokens - stats.generated_tokens)  # [vocab]
        if not stops.stopped:
            tail = stops.feed(decoder.flush()) + stops.flush()
            if tail:
                answer.text.append(tail)
                yield ChatEvent("piece", tail)

    def _process_prompt(self, prompt_ids: List[int], stats: GenerationStats):
        """Run the prompt tokens the cache does not hold yet, in chunks; yields (logits, done, total)."""
        reuse = _common_prefix_length(self.model.cache.ids, prompt_ids)
        reuse = min(reuse, len(prompt_ids) - 1)  # run at least one token: its logits pick the first answer token
        stats.reused_tokens = reuse
        new_ids = prompt_ids[reuse:]
        stats.prompt_tokens = len(new_ids)
        for begin in range(0, len(new_ids), PROMPT_CHUNK):
            end = min(begin + PROMPT_CHUNK, len(new_ids))
            # the model drops the cached ids from reuse + begin on; only the last chunk's logits are read
            logits = self.model.forward(new_ids[begin:end], start_pos=reuse + begin, logits=end == len(new_ids))
            yield logits, end, len(new_ids)


def _answer_room(settings: SamplingSettings, context_length: int) -> int:
    """Tokens a prompt must leave free for the answer: a quarter of the context, or max_tokens if smaller."""
    return min(settings.max_tokens, context_length // 4)


def _has_system(messages: Sequence[Dict[str, str]]) -> bool:
    return bool(messages) and messages[0]["role"] == "system"


def _checked_messages(messages: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """A copy of `messages` as plain dicts; InvalidConversationError for anything but {"role", "content": text}
    with the role system (first only), user or assistant, and the tool roles the template renders itself
    (api/tools.py decides): an assistant message may carry `tool_calls` (its content then may be None), a
    "tool" message (a function's result) its `tool_call_id`."""
    copies = []
    for i, message in enumerate(messages):
        fields = message if isinstance(message, dict) else {}
        role, content = fields.get("role"), fields.get("content")
        calls = fields.get("tool_calls") if role == "assistant" else None
        if role not in ("system", "user", "assistant", "tool") or (role == "system" and i > 0) or not (
                isinstance(content, str) or (isinstance(calls, list) and content is None)):
            raise InvalidConversationError("a message needs the role system (first only), user, assistant or tool, "
                                           "and text content: %r" % (message,))
        copies.append({key: fields[key] for key in ("role", "content", "tool_calls", "tool_call_id")
                       if key in fields})
    return copies


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
