"""ChatSession on the real SmolLM2 (context 256 for speed): KV reuse gives the logits of a full recomputation,
streaming, stop strings, max tokens, cancellation, and dropping old turns when the context is full. The session
answers the conversation it is given; each test keeps its own list of messages, as the page and the CLI do."""
from __future__ import annotations

import dataclasses
from typing import List

import numpy as np
import pytest

from pychat_wasm.chat.template import ChatTemplate, encode_chat
from pychat_wasm.errors import ContextFullError, InvalidConversationError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.forward import Model
from pychat_wasm.chat.sampler import Sampler, SamplingSettings
from pychat_wasm.chat.session import ChatSession
from pychat_wasm.chat.stop_strings import StopStringFilter
from pychat_wasm.tokenizers import load_tokenizer

GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
GOLDEN_ANSWER = "The capital of France is Paris."  # transformers and llama.cpp greedy agree
GREEDY = SamplingSettings(temperature=0.0, max_tokens=8)  # the golden answer takes 8, its end token included
CONTEXT = 256
SMALL_CONTEXT = 96  # for the tests that fill the context


class RecordingSampler(Sampler):
    """A sampler that keeps a copy of every logits vector it is given."""

    def __init__(self, settings: SamplingSettings = GREEDY):
        super().__init__(settings)
        self.seen: List[np.ndarray] = []

    def sample(self, logits, recent_tokens):
        self.seen.append(np.array(logits, dtype=np.float32))
        return super().sample(logits, recent_tokens)


@pytest.fixture(scope="module")
def parts(smollm2_path):
    """(model, tokenizer, template) with a 256-token context."""
    gguf = GGUFFile.open(str(smollm2_path))
    tokenizer = load_tokenizer(gguf)
    model = Model.from_gguf(gguf, context_length=CONTEXT)
    return model, tokenizer, ChatTemplate.from_gguf(gguf, tokenizer)


@pytest.fixture(scope="module")
def small_parts(parts, smollm2_path):
    """The same with a 96-token context, so that filling it takes few tokens."""
    return (Model.from_gguf(GGUFFile.open(str(smollm2_path)), context_length=SMALL_CONTEXT),) + parts[1:]


class Chat:
    """A session with the conversation its caller keeps: a first system message (if any), then the turns."""

    def __init__(self, parts, settings=GREEDY, system_prompt=None, stop_strings=(), sampler=None):
        model, tokenizer, template = parts
        self.session = ChatSession(model, tokenizer, template, sampler=sampler)
        self.settings, self.stop_strings = settings, list(stop_strings)
        self.messages = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def events(self, text: str):
        """The events of the answer to `text`; an answer that gets to "done" joins the conversation."""
        messages = self.messages + [user(text)]
        for event in self.session.reply(messages, self.settings, self.stop_strings):
            if event.kind == "done":
                self.messages = messages + [{"role": "assistant", "content": event.text}]
            yield event

    def kept(self, done) -> list:
        """The messages the last answer's prompt kept (its "done" event's budget says how many it dropped),
        without the answer."""
        first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        return self.messages[:first] + self.messages[first + done.budget.dropped:-1]


def new_session(parts, settings=GREEDY, **options) -> Chat:
    return Chat(parts, settings, **options)


def run_turn(chat: Chat, text: str):
    """(answer text from the streamed pieces, all events)"""
    events = list(chat.events(text))
    return "".join(e.text for e in events if e.kind == "piece"), events


def user(text):
    return {"role": "user", "content": text}


def fresh_first_logits(parts, messages) -> np.ndarray:
    """Logits for the first answer token, computed from scratch: the whole rendered prompt in one forward."""
    model, tokenizer, template = parts
    ids = encode_chat(tokenizer, template.render(messages, add_generation_prompt=True))
    return model.forward(ids, start_pos=0)


# ---- stop strings (pure logic) ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunks,stops,shown,stopped", [
    (["Hello <", "/s", "> there"], ["</s>"], ["Hello ", "", ""], True),
    (["a<", "b", "c"], ["</s>"], ["a", "<b", "c"], False),  # a false alarm releases the held text
    (["xx", "STOP"], ["STOP"], ["xx", ""], True),
    (["abc", "d"], ["cdx", "bcq"], ["a", "b"], False),  # two candidates: hold the longest possible start
    (["User:", " hi"], ["\nUser:"], ["User:", " hi"], False),
    (["one\nUs", "er: x"], ["\nUser:", "zz"], ["one", ""], True),
])
def test_stop_string_filter(chunks, stops, shown, stopped):
    f = StopStringFilter(stops)
    assert [f.feed(c) for c in chunks] == shown
    assert f.stopped == stopped
    if not stopped:
        assert "".join(shown) + f.flush() == "".join(chunks)


# ---- answers, streaming, KV reuse --------------------------------------------------------------------------


def test_greedy_answer_streams_the_golden_text(parts):
    model, tokenizer, template = parts
    sampler = RecordingSampler()
    session = new_session(parts, sampler=sampler)
    text, events = run_turn(session, GOLDEN_QUESTION)
    assert text == GOLDEN_ANSWER
    kinds = [e.kind for e in events]
    assert kinds[0] == "progress" and kinds[-1] == "done" and kinds.count("piece") == 7
    stats = events[-1].stats
    assert stats.stop_reason == "eos" and stats.prompt_tokens == 42 and stats.generated_tokens == 8
    assert events[-1].text == GOLDEN_ANSWER and events[-1].budget.dropped == 0
    # First-position logits against the reference values transformers and llama.cpp agree on.
    first = sampler.seen[0]
    assert int(np.argmax(first)) == 504 and abs(first[504] - 29.78) < 0.05 and abs(first[38634] - 28.30) < 0.05


def test_second_turn_reuses_the_cache_and_matches_a_full_recomputation(parts):
    sampler = RecordingSampler()
    session = new_session(parts, sampler=sampler, system_prompt="You are a concise geography teacher.")
    run_turn(session, GOLDEN_QUESTION)
    sampler.seen.clear()
    _, events = run_turn(session, "And what is the capital of Germany?")
    stats = events[-1].stats
    incremental = sampler.seen[0]
    prompt_len = stats.reused_tokens + stats.prompt_tokens
    assert stats.reused_tokens > 40 and stats.prompt_tokens < 25  # only the new turn went through the model
    fresh = fresh_first_logits(parts, session.messages[:-1])
    np.testing.assert_allclose(incremental, fresh, atol=1e-4, rtol=0)
    assert prompt_len == len(encode_chat(parts[1], parts[2].render(session.messages[:-1])))
    assert session.session.model.cache.ids[:prompt_len] == encode_chat(parts[1], parts[2].render(
        session.messages[:-1], add_generation_prompt=True))  # the cache holds the prompt's ids, then the answer's


def test_restored_conversation_continues_like_a_fresh_one(parts):
    sampler = RecordingSampler()
    session = new_session(parts, sampler=sampler)
    run_turn(session, "Name a colour.")  # fills the cache with a conversation we then replace
    history = [{"role": "system", "content": "Answer briefly."},
               {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}]
    session.messages = list(history)
    sampler.seen.clear()
    _, events = run_turn(session, "And 3 + 3?")
    assert events[-1].budget.dropped == 0
    np.testing.assert_allclose(sampler.seen[0], fresh_first_logits(parts, history + [
        {"role": "user", "content": "And 3 + 3?"}]), atol=1e-4, rtol=0)


def test_same_seed_same_answer(parts):
    settings = SamplingSettings(temperature=1.0, seed=7, max_tokens=8)
    first, _ = run_turn(new_session(parts, settings), "Tell me a story.")
    second, _ = run_turn(new_session(parts, settings), "Tell me a story.")
    assert first == second and first


# ---- stopping ---------------------------------------------------------------------------------------------


def test_stop_string_spanning_tokens_never_leaks(parts):
    session = new_session(parts, stop_strings=["France is P"])
    text, events = run_turn(session, GOLDEN_QUESTION)
    assert text == "The capital of "
    assert all("France" not in e.text for e in events)
    assert events[-1].stats.stop_reason == "stop_string"
    assert events[-1].text == "The capital of "


def test_partial_stop_string_is_released_when_it_does_not_complete(parts):
    text, events = run_turn(new_session(parts, stop_strings=["Paris!"]), GOLDEN_QUESTION)
    assert text == GOLDEN_ANSWER and events[-1].stats.stop_reason == "eos"
    pieces = [e.text for e in events if e.kind == "piece"]
    assert pieces[-2:] == [" ", "Paris."]  # "Paris" was held back until "." showed it was no stop string


def test_max_tokens(parts):
    text, events = run_turn(new_session(parts, SamplingSettings(temperature=0.0, max_tokens=3)), GOLDEN_QUESTION)
    assert text == "The capital of"
    assert events[-1].stats.stop_reason == "length" and events[-1].stats.generated_tokens == 3


def test_cancel_between_tokens_keeps_the_session_usable(parts):
    sampler = RecordingSampler()
    session = new_session(parts, sampler=sampler)
    pieces = []
    for event in session.events(GOLDEN_QUESTION):
        if event.kind == "piece":
            pieces.append(event.text)
            session.session.cancel()
        if event.kind == "done":
            assert event.stats.stop_reason == "cancelled"
    assert pieces == ["The"]
    assert session.messages[-1] == {"role": "assistant", "content": "The"}
    sampler.seen.clear()
    run_turn(session, "Thanks!")
    np.testing.assert_allclose(sampler.seen[0], fresh_first_logits(parts, session.messages[:-1]), atol=1e-4, rtol=0)


def test_cancel_during_the_prompt(parts):
    session = new_session(parts)
    events = []
    for event in session.events(GOLDEN_QUESTION):
        events.append(event)
        session.session.cancel()
    assert [e.kind for e in events] == ["progress", "done"]
    assert events[-1].stats.stop_reason == "cancelled" and events[-1].stats.generated_tokens == 0


# ---- a full context ---------------------------------------------------------------------------------------


def long_message(i: int) -> str:
    return "Message %d. Remember: apple, river, mountain, candle, violin." % i


def test_full_context_drops_oldest_turns_but_keeps_the_system_prompt(small_parts):
    model, tokenizer, template = small_parts
    session = new_session(small_parts, SamplingSettings(temperature=0.0, max_tokens=4), system_prompt="Be brief.")
    dropped = []
    for i in range(5):
        _, events = run_turn(session, long_message(i))
        dropped.append(events[-1].budget.dropped)
        kept = session.kept(events[-1])
        ids = encode_chat(tokenizer, template.render(kept, add_generation_prompt=True))
        stats = events[-1].stats
        assert len(ids) == stats.reused_tokens + stats.prompt_tokens  # the prompt that was run: the kept messages
        assert len(ids) + 4 <= SMALL_CONTEXT  # it left room for the answer
    assert dropped[-1] > 0 and all(e.budget.dropped == dropped[-1] for e in events)  # every event of the turn says so
    assert kept[0] == {"role": "system", "content": "Be brief."}
    users = [m["content"] for m in kept if m["role"] == "user"]
    assert users[-1] == long_message(4) and long_message(0) not in users
    roles = [m["role"] for m in kept[1:]] + ["assistant"]
    assert roles == ["user", "assistant"] * (len(roles) // 2)  # whole turns were dropped


def test_a_message_longer_than_the_context_is_refused(parts):
    session = new_session(parts, system_prompt="Be brief.")
    with pytest.raises(ContextFullError, match="too long"):
        list(session.events("word " * 400))
    assert session.messages == [{"role": "system", "content": "Be brief."}]
    text, _ = run_turn(session, GOLDEN_QUESTION)
    assert text


def test_answer_that_reaches_the_end_of_the_context_stops_and_says_why(small_parts):
    system = "You are a patient counting assistant. You always count exactly as asked, one number per line, " \
             "and you never skip a number or stop early."
    session = new_session(small_parts, SamplingSettings(temperature=0.0, max_tokens=500, repeat_penalty=1.0),
                          system_prompt=system)
    _, events = run_turn(session, "Count from 1 to 100, one number per line.")
    assert events[-1].stats.stop_reason == "context_full"
    stats = events[-1].stats
    assert stats.reused_tokens + stats.prompt_tokens > SMALL_CONTEXT * 3 // 5  # little room left: the test stays short
    assert len(session.session.model.cache.ids) == SMALL_CONTEXT


def test_budget_after_a_trim_is_what_the_session_holds(small_parts):
    """The reported budget equals the kept messages re-rendered and encoded, plus the generated tokens, and the
    KV cache's length; `dropped` counts exactly the messages no longer rendered; the warning comes true."""
    model, tokenizer, template = small_parts
    session = new_session(small_parts, SamplingSettings(temperature=0.0, max_tokens=4), system_prompt="Be brief.")
    warned, warnings = False, 0
    for i in range(5):
        _, events = run_turn(session, long_message(i))
        dropped_now = events[-1].budget.dropped > 0
        assert dropped_now or not warned  # a warning at the last answer means this message dropped turns
        done = events[-1]
        budget, stats = done.budget, done.stats
        kept = session.kept(done)  # the system prompt, then all but the oldest `budget.dropped` messages
        assert kept[1:] == session.messages[1 + budget.dropped:-1] and kept[1]["role"] == "user"
        prompt = encode_chat(tokenizer, template.render(kept))
        assert budget.used == len(prompt) + stats.generated_tokens
        fed_back = stats.generated_tokens - (1 if stats.stop_reason == "eos" else 0)  # an end token is not run
        assert budget.used == len(model.cache.ids) + stats.generated_tokens - fed_back
        system_only = encode_chat(tokenizer, template.render(kept[:1], add_generation_prompt=False))
        assert budget.system >= len(system_only)
        assert budget.system + budget.history == len(prompt) and budget.answer == stats.generated_tokens
        before_message = encode_chat(tokenizer, template.render(kept[:-1], add_generation_prompt=False))
        assert budget.context == SMALL_CONTEXT and budget.reserve == 4 + len(prompt) - len(before_message)
        assert budget.will_drop_next == (budget.used + budget.reserve > SMALL_CONTEXT)
        assert done.as_dict()["budget"] == dataclasses.asdict(budget)  # what the page gets
        pieces = [e.budget.answer for e in events if e.kind == "piece"]
        assert pieces == sorted(pieces) and all(e.budget.used <= SMALL_CONTEXT for e in events if e.budget)
        warned = budget.will_drop_next
        warnings += warned
    assert budget.dropped >= 2 and warnings
    shorter = session.messages[:1] + session.messages[-4:]  # a conversation as it stands, before an answer
    idle = session.session.budget(shorter, session.settings)
    assert idle.dropped == 0 and idle.answer == 0
    assert idle.used == len(encode_chat(tokenizer, template.render(shorter, add_generation_prompt=False)))


# ---- a conversation the page owns (reply) -----------------------------------------------------------------


def test_a_fixed_seed_continues_one_stream_turn_after_turn(parts):
    """Settings come with every turn; the same fixed seed continues its random stream, so a seeded conversation
    is one reproducible stream; another seed in between starts a new one."""
    settings = SamplingSettings(temperature=1.0, seed=11, max_tokens=12)
    answers = []
    for _ in range(2):
        chat = new_session(parts, settings)
        answers.append([run_turn(chat, q)[0] for q in ("Tell me a story.", "Another one.")])
    assert answers[0] == answers[1]
    restarted = new_session(parts, settings)  # a new seed sequence each turn would answer the second one so:
    run_turn(restarted, "Tell me a story.")
    list(restarted.session.reply([user("Hi")], SamplingSettings(temperature=1.0, seed=12, max_tokens=1)))
    assert run_turn(restarted, "Another one.")[0] != answers[0][1]


def test_reply_answers_the_conversation_it_is_given_and_a_failure_changes_nothing(parts):
    session = new_session(parts).session
    history = [{"role": "system", "content": "Answer briefly."}, user("What is 2 + 2?"),
               {"role": "assistant", "content": "4."}, user(GOLDEN_QUESTION)]
    events = list(session.reply(history, GREEDY))
    assert events[-1].kind == "done" and events[-1].text == "".join(e.text for e in events if e.kind == "piece")
    prompt = encode_chat(parts[1], parts[2].render(history, add_generation_prompt=True))
    assert session.model.cache.ids[:len(prompt)] == prompt and events[-1].budget.dropped == 0
    before = list(session.model.cache.ids)
    with pytest.raises(ContextFullError):
        list(session.reply([user("word " * 400)], GREEDY))
    assert session.model.cache.ids == before
    for bad in ([], [{"role": "assistant", "content": "Hi"}], [user("a"), {"role": "system", "content": "late"}],
                [{"role": "user", "content": None}]):
        with pytest.raises(InvalidConversationError):
            session.reply(bad, GREEDY)
    assert session.model.cache.ids == before
    again = list(session.reply(history, GREEDY))  # the same conversation: the whole prompt is in the cache
    assert again[-1].text == events[-1].text and again[-1].stats.reused_tokens == len(prompt) - 1


def test_the_trim_drops_the_fewest_oldest_turns_that_make_room(small_parts):
    """The bisection finds what dropping one turn after another would: checked against that, for conversations
    of every length up to twelve turns, with the budget's `dropped` counting from the conversation given."""
    model, tokenizer, template = small_parts
    settings = SamplingSettings(temperature=0.0, max_tokens=4)
    session = new_session(small_parts, settings).session
    system = [{"role": "system", "content": "Be brief."}]
    room = 4  # max_tokens, less than a quarter of the context
    turns = []
    for i in range(12):
        turns.append(user(long_message(i) if i % 3 else "Hi %d" % i))
        dropped = 0  # one turn after another, as the session did before
        while (len(encode_chat(tokenizer, template.render(system + turns[dropped:], add_generation_prompt=True)))
               + room > SMALL_CONTEXT and dropped < len(turns) - 1):
            dropped += 2
        ids, kept, cut = session._fit_prompt(system + turns, room)
        assert (cut, kept) == (dropped, system + turns[dropped:])
        turns.append({"role": "assistant", "content": "Yes %d." % i})
    events = list(session.reply(system + turns[:-1], settings))
    prompt = encode_chat(tokenizer, template.render(system + turns[dropped:-1], add_generation_prompt=True))
    assert events[-1].budget.dropped == dropped and model.cache.ids[:len(prompt)] == prompt
