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
the user should know, e.g. old turns were dropped), and a final "done" carrying `GenerationStats` and the whole
answer. Only a turn that gets to "done" changes the session's conversation.

Who owns the conversation: the CLI lets the session keep it (`generate(text)` adds a message); the page keeps
its own and sends it whole each turn (`reply(messages)`), so nothing is kept twice. The library's raw
completions (`complete(prompt_ids)`, pychat_wasm/api/) run the same token loop with no template or conversation;
`on_sample` shows it each step's raw logits and the token drawn from them (for logprobs).

Context budget: "progress", "piece" and "done" events carry `budget`, the token ids the answer occupies in the
context: {used, context, system, history, answer, reserve, dropped, will_drop_next}. used = system + history +
answer = the rendered prompt's tokens + the tokens generated so far; `dropped` = how many of the oldest
user/assistant messages (of those given to `reply`, or since the last reset/restore) the trimming took out of
the context; `will_drop_next` = a next message as long as the last one will make it drop more: used + reserve >
context, the reserve being the room kept for an answer plus the last user message's tokens (its role header
included).

KV reuse: the session remembers which token ids the model's KV cache holds. A new prompt is rendered from the
whole conversation and only the part after the longest common prefix is run through the model, which gives
the same logits as recomputing everything.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .events import Answer, ChatEvent, GenerationStats
from .template import ChatTemplate, encode_chat
from ..errors import ContextFullError, InvalidConversationError, TokenizerError
from .sampler import Sampler, SamplingSettings
from .stop_strings import StopStringFilter

PROMPT_CHUNK = 32  # prompt tokens per forward call: cancellation and progress are checked between chunks
MAX_CHARS_PER_TOKEN = 64  # a rendered prompt longer than this times the context cannot fit, whatever the vocabulary


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
        self.on_sample: Optional[Callable[[Any, int], None]] = None  # called with (raw logits [vocab], token id)
        self.reset()

    @classmethod
    def from_gguf(cls, gguf_file: Any, policy: str = "auto", context_length: Optional[int] = None,
                  **session_options: Any) -> "ChatSession":
        """Load model, tokenizer and chat template from an open GGUFFile."""
        from ..model.forward import Model
        from ..tokenizers import load_tokenizer

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
        self.messages = _checked_messages(messages)
        self.system_prompt = self.messages[0]["content"] if _has_system(self.messages) else None
        self.dropped = 0
        self._budget = None

    def use_settings(self, settings: SamplingSettings) -> None:
        """Sample the next answers with `settings`. The fixed seed in use continues its random stream, so turn
        after turn a seeded conversation is one reproducible stream (as in the CLI); another seed, or none,
        starts a new stream."""
        same_stream = settings.seed is not None and settings.seed == self.sampler.seed
        self.settings = settings
        if same_stream:
            self.sampler.settings = settings
        else:
            self.sampler = Sampler(settings)

    def cancel(self) -> None:
        """Ask the running `generate` to stop after the current token (safe to call from a signal handler)."""
        self._cancel = True

    # ---- one answer -----------------------------------------------------------------------------------------

    def generate(self, user_text: str) -> Iterator[ChatEvent]:
        """Add a user message to the session's conversation and stream the assistant's answer as events (see
        the module docstring)."""
        return self._turn(self.messages, user_text, dropped_before=self.dropped)

    def reply(self, messages: Sequence[Dict[str, str]]) -> Iterator[ChatEvent]:
        """Answer a conversation its owner keeps (the page): a first "system" message, if any, then user and
        assistant messages ending with the user's. Like restore(messages[:-1]) + generate(last message), except
        that a turn that fails leaves the session as it was."""
        messages = _checked_messages(messages)
        if not messages or messages[-1]["role"] != "user":
            raise InvalidConversationError("a conversation to answer ends with a user message")
        return self._turn(messages[:-1], messages[-1]["content"], dropped_before=0)

    def complete(self, prompt_ids: Sequence[int]) -> Iterator[ChatEvent]:
        """Continue raw token ids, with no template (the library's create_completion); the conversation stays
        as it was. Events as for `reply`, without budgets."""
        prompt_ids = list(prompt_ids)
        if not prompt_ids:
            raise TokenizerError("the prompt encodes to no tokens")
        if len(prompt_ids) >= self.context_length:
            raise ContextFullError("the prompt has %d tokens and the context holds %d"
                                   % (len(prompt_ids), self.context_length))
        self._cancel = False
        answer = Answer(prompt_tokens=len(prompt_ids))
        answer.stats.seed = self.sampler.seed
        yield from self._run(prompt_ids, answer)
        yield ChatEvent("done", text="".join(answer.text), stats=answer.stats)

    def _turn(self, history: List[Dict[str, str]], user_text: str, dropped_before: int) -> Iterator[ChatEvent]:
        """Answer `user_text` after `history`. Only a turn that ends (an end token, a stop, max tokens, Stop)
        changes the session: its messages become those the prompt kept plus the answer."""
        self._cancel = False
        prompt_ids, kept, dropped = self._fit_prompt(list(history) + [{"role": "user", "content": user_text}])
        if dropped:
            yield ChatEvent("notice", "The context is full: dropped the %d oldest message%s (the system prompt "
                                      "is kept)." % (dropped, "s" if dropped > 1 else ""))
        answer = Answer(prompt_tokens=len(prompt_ids), system_tokens=self._system_tokens(kept, prompt_ids),
                         message_tokens=len(prompt_ids) - len(self._encode(kept[:-1])),
                         dropped=dropped_before + dropped)
        answer.stats.seed = self.sampler.seed
        for event in self._run(prompt_ids, answer):
            if event.kind != "notice":
                event.budget = self._answer_budget(answer)
            yield event
        text = "".join(answer.text)
        self.messages = kept + [{"role": "assistant", "content": text}]
        self.system_prompt = kept[0]["content"] if _has_system(kept) else None
        self.dropped = answer.dropped
        yield ChatEvent("done", text=text, stats=answer.stats, budget=self._answer_budget(answer))

    # ---- context budget -------------------------------------------------------------------------------------

    def budget(self, messages: Optional[Sequence[Dict[str, str]]] = None) -> Dict[str, Any]:
        """The context budget now: that of the last answer, or, before any answer since the conversation was
        set, of the conversation rendered as it stands (nothing generated yet). Given `messages` (as for
        `reply`, without trimming), the budget they would take before an answer; the session is unchanged."""
        if messages is None and self._budget is not None:
            return dict(self._budget)
        messages = self.messages if messages is None else _checked_messages(messages)
        ids = self._encode(messages)
        dropped = self.dropped if messages is self.messages else 0
        return self._make_budget(len(ids), self._system_tokens(messages, ids), 0, 0, dropped)

    def _answer_budget(self, answer: Answer) -> Dict[str, Any]:
        self._budget = self._make_budget(answer.prompt_tokens, answer.system_tokens, answer.stats.generated_tokens,
                                         answer.message_tokens, answer.dropped)
        return self._budget

    def _make_budget(self, prompt: int, system: int, answer: int, next_message: int, dropped: int) -> Dict[str, Any]:
        used = prompt + answer
        reserve = self._answer_room() + next_message
        return {"used": used, "context": self.context_length, "system": system, "history": prompt - system,
                "answer": answer, "reserve": reserve, "dropped": dropped,
                "will_drop_next": used + reserve > self.context_length}

    def _system_tokens(self, messages: List[Dict[str, str]], prompt_ids: List[int]) -> int:
        """How many leading ids of the prompt of `messages` come before the first user/assistant message: the
        system prompt and the template's preamble (the prefix shared with the conversation cut down to the
        system part)."""
        first_turn = 1 if _has_system(messages) else 0
        if not messages[first_turn:]:
            return len(prompt_ids)
        head = messages[:first_turn] + [{"role": "user", "content": ""}]
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

    def _fit_prompt(self, messages: List[Dict[str, str]]) -> Tuple[List[int], List[Dict[str, str]], int]:
        """The prompt of `messages` after dropping the fewest oldest whole turns (a user message and what
        follows it up to the next one) for the prompt to leave room for an answer (`_answer_room`); the system
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
                    encoded[cut] = self._encode(messages[:first_turn] + turns[cut:], add_generation_prompt=True)
                except ContextFullError:
                    encoded[cut] = None
            return encoded[cut]

        def fits(cut: int) -> bool:
            ids = prompt(cut)
            return ids is not None and len(ids) + self._answer_room() <= self.context_length

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
            self._encode(messages[:first_turn] + turns[cut:])  # raises the ContextFullError that says why
        if not ids:
            raise TokenizerError("the prompt encodes to no tokens: this model's vocabulary cannot write the text")
        if len(ids) >= self.context_length:
            raise ContextFullError("the message is too long: the prompt has %d tokens and the context holds %d"
                                   % (len(ids), self.context_length))
        return ids, messages[:first_turn] + turns[cut:], cut

    def _run(self, prompt_ids: List[int], answer: Answer) -> Iterator[ChatEvent]:
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
        self.sampler.begin_answer()
        while True:
            if self._cancel:
                stats.stop_reason = "cancelled"
                break
            if stats.generated_tokens >= self.settings.max_tokens:
                stats.stop_reason = "length"
                break
            token = self.sampler.sample(logits, self.cached_ids)
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
            end = min(begin + PROMPT_CHUNK, len(new_ids))
            logits = self._forward(new_ids[begin:end], logits=end == len(new_ids))  # only the last chunk's are read
            yield logits, end, len(new_ids)

    def _forward(self, ids: List[int], logits: bool = True):
        """Run `ids` after the cached tokens; the cache bookkeeping changes only once the model has finished."""
        out = self.model.forward(ids, start_pos=len(self.cached_ids), logits=logits)  # [vocab] of the last, or None
        self.cached_ids.extend(ids)
        return out


def _has_system(messages: Sequence[Dict[str, str]]) -> bool:
    return bool(messages) and messages[0]["role"] == "system"


def _checked_messages(messages: Sequence[Dict[str, str]]) -> List[Dict[str, str]]:
    """A copy of `messages` as plain {"role", "content"} dicts; InvalidConversationError for anything else."""
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant") or (role == "system" and i > 0) or not isinstance(
                message.get("content"), str):
            raise InvalidConversationError("a message needs the role system (first only), user or assistant, and "
                                           "text content: %r" % (message,))
    return [{"role": m["role"], "content": m["content"]} for m in messages]


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
