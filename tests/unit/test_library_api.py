"""pychat_wasm.LLM on the real SmolLM2 (context 256): a streamed answer is the non-streamed one, chunk by
chunk; a conversation's next turn runs only its new tokens; OpenAI's frequency/presence penalties; every bad
argument is an InvalidRequestError naming it. (Against transformers: tests/oracle/test_logprobs_and_embeddings.py.)"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest

from pychat_wasm import LLM
from pychat_wasm.chat.sampler import Sampler, SamplingSettings
from pychat_wasm.errors import ContextFullError, InvalidRequestError

GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
GOLDEN_ANSWER = "The capital of France is Paris."  # transformers and llama.cpp greedy agree
CONTEXT = 256


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(smollm2_path, context_length=CONTEXT)


def ask(text: str) -> List[dict]:
    return [{"role": "user", "content": text}]


def streamed_text(chunks) -> Tuple[str, List[dict]]:
    chunks = list(chunks)
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks), chunks


def test_a_greedy_chat_answer_has_openais_shape(llm):
    reply = llm.create_chat_completion(ask(GOLDEN_QUESTION), temperature=0)
    assert reply["object"] == "chat.completion" and reply["id"].startswith("chatcmpl-")
    assert reply["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    choice = reply["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": GOLDEN_ANSWER}
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    usage = reply["usage"]
    assert usage["completion_tokens"] == 7  # "The capital of France is Paris." without its end token
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("settings", [{"temperature": 0}, {"temperature": 1.0, "seed": 7, "max_tokens": 12}],
                         ids=["greedy", "seeded"])
def test_the_stream_concatenates_to_the_non_streamed_answer(llm, settings):
    whole = llm.create_chat_completion(ask("Name three colours."), **settings)
    text, chunks = streamed_text(llm.create_chat_completion(ask("Name three colours."), stream=True, **settings))
    assert text == whole["choices"][0]["message"]["content"] and text
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + [
        whole["choices"][0]["finish_reason"]]


def test_a_seed_repeats_its_answer_call_after_call(llm):
    first, second = (llm.create_chat_completion(ask("Tell me a word."), seed=123, max_tokens=10) for _ in range(2))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


def test_max_tokens_ends_with_length_and_a_stop_string_with_stop(llm):
    reply = llm.create_chat_completion(ask(GOLDEN_QUESTION), temperature=0, max_tokens=3)
    assert reply["choices"][0]["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 3
    reply = llm.create_chat_completion(ask(GOLDEN_QUESTION), temperature=0, stop=" France")
    assert reply["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "The capital of"},
                                   "logprobs": None, "finish_reason": "stop"}


def test_the_next_turn_runs_only_its_new_tokens(llm, monkeypatch):
    first = llm.create_chat_completion(ask(GOLDEN_QUESTION), temperature=0)
    conversation = ask(GOLDEN_QUESTION) + [first["choices"][0]["message"], {"role": "user", "content": "And Spain?"}]
    calls = []
    forward = llm.session.model.forward
    monkeypatch.setattr(llm.session.model, "forward",
                        lambda ids, start_pos, **kw: calls.append((len(ids), start_pos)) or forward(ids, start_pos,
                                                                                                    **kw))
    second = llm.create_chat_completion(conversation, temperature=0, max_tokens=4)
    held = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]  # the cache: prompt + answer
    assert calls[0][1] == held  # the first new token goes right after them
    new_prompt_tokens = second["usage"]["prompt_tokens"] - held
    assert 0 < new_prompt_tokens < 20 < held
    assert sum(n for n, _ in calls) == new_prompt_tokens + 4  # then one forward per answer token (length: all 4)


def test_a_raw_completion_continues_the_prompt_without_a_template(llm):
    reply = llm.create_completion("1, 2, 3, 4,", max_tokens=6, temperature=0)  # SmolLM2 writes " 5" as " ", "5"
    assert reply["object"] == "text_completion" and reply["choices"][0]["text"] == " 5, 6,"
    assert reply["usage"] == {"prompt_tokens": len(llm.tokenize(b"1, 2, 3, 4,")), "completion_tokens": 6,
                              "total_tokens": len(llm.tokenize(b"1, 2, 3, 4,")) + 6}
    chunks = list(llm.create_completion("1, 2, 3, 4,", max_tokens=6, temperature=0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == " 5, 6,"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_tokenize_and_detokenize_round_trip_as_bytes(llm):
    ids = llm.tokenize(b"Hello world")
    assert ids == llm.tokenize("Hello world") and llm.detokenize(ids) == b"Hello world"
    special = llm.tokenize("<|im_start|>", special=True)
    assert len(special) == 1 and llm.detokenize(special) == b"" and llm.detokenize(special, special=True) == \
        b"<|im_start|>"


def test_frequency_and_presence_penalties_follow_openais_formula():
    """logit[j] -= count[j] * frequency + (count[j] > 0) * presence, counted over the answer so far."""
    logits = np.array([3.0, 2.9, 2.0, 1.0])
    sampler = Sampler(SamplingSettings(temperature=0, repeat_penalty=1.0, frequency_penalty=0.2,
                                       presence_penalty=0.05))
    sampler.begin_answer()
    picks = [sampler.sample(logits, recent_tokens=[0, 0, 0, 1]) for _ in range(4)]
    # 0 (3.0); then 0 at 3.0-0.25=2.75 < 2.9 -> 1; then 0 2.75 vs 1 2.65 -> 0; then 0 2.55 vs 2.65 -> 1
    assert picks == [0, 1, 0, 1]
    sampler.begin_answer()  # the prompt's tokens (recent_tokens) never count, a new answer starts afresh
    assert sampler.sample(logits, recent_tokens=[0, 0, 0]) == 0


@pytest.mark.parametrize("kwargs,param", [
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
    ({"top_k": 2.5}, "top_k"), ({"seed": "x"}, "seed"), ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"presence_penalty": "a lot"}, "presence_penalty"), ({"stop": [""]}, "stop"), ({"stop": 5}, "stop"),
    ({"logprobs": "yes"}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"), ({"repeat_penalty": 0}, "repeat_penalty"),
    ({"repeat_last_n": -1}, "repeat_last_n"), ({"truncation": "middle"}, "truncation"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream=True
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options"),
    ({"stream": True, "stream_options": {"continuous_usage_stats": "yes"}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": True, "usage_every": True}}, "stream_options"),
])
def test_bad_chat_arguments_name_themselves(llm, kwargs, param):
    with pytest.raises(InvalidRequestError) as raised:
        llm.create_chat_completion(ask("Hi"), **kwargs)
    assert raised.value.param == param and str(raised.value).startswith(param)


@pytest.mark.parametrize("messages", [[], "Hi", [{"role": "robot", "content": "Hi"}], [{"role": "user"}],
                                      [{"role": "assistant", "content": "Hi"}], ["Hi"],
                                      [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
                                      ask("Hi") + [{"role": "tool", "content": "no tool_call_id"}],
                                      ask("Hi") + [{"role": "assistant", "content": None, "tool_calls": [
                                          {"id": "c1", "function": {"name": "f", "arguments": "{not json"}}]}]])
def test_bad_messages_are_refused(llm, messages):
    with pytest.raises(InvalidRequestError) as raised:
        llm.create_chat_completion(messages)
    assert raised.value.param == "messages"


def test_text_parts_are_joined_like_openais(llm):
    parts = [{"type": "text", "text": "What is the capital of France? "},
             {"type": "text", "text": "Answer in one sentence."}]
    reply = llm.create_chat_completion([{"role": "user", "content": parts}], temperature=0)
    assert reply["choices"][0]["message"]["content"] == GOLDEN_ANSWER


def test_what_does_not_fit_the_context_is_refused_naming_it(llm):
    """A prompt that does not fit, or messages the chat would trim; an answer that reaches the end of the
    context just ends there ("length"), as in llama-cpp-python."""
    with pytest.raises(ContextFullError) as raised:
        llm.create_completion("word " * 400)
    assert raised.value.param == "prompt"
    with pytest.raises(ContextFullError) as raised:
        llm.create_chat_completion(ask("word " * 300))
    assert raised.value.param == "messages"
    long_talk = ask("word " * 100) + [{"role": "assistant", "content": "Yes."}] + ask("word " * 100)
    with pytest.raises(ContextFullError) as raised:  # the chat would drop the first turn: the API never does
        llm.create_chat_completion(long_talk, max_tokens=64)
    assert raised.value.param == "messages" and "max_tokens" in str(raised.value)
    with pytest.raises(ContextFullError) as raised:
        llm.create_embedding("word " * 400)
    assert raised.value.param == "input"
    assert llm.create_chat_completion(ask(GOLDEN_QUESTION), temperature=0)["choices"][0]["message"]["content"] \
        == GOLDEN_ANSWER  # and the LLM goes on as before


@pytest.mark.parametrize("call,param", [
    (lambda llm: llm.create_completion(None), "prompt"), (lambda llm: llm.create_completion([1, -5]), "tokens"),
    (lambda llm: llm.create_completion("x", logprobs=30), "logprobs"),
    (lambda llm: llm.create_embedding(""), "input"), (lambda llm: llm.create_embedding([]), "input"),
    (lambda llm: llm.detokenize([10 ** 6]), "tokens"),
])
def test_bad_completion_and_embedding_arguments_name_themselves(llm, call, param):
    with pytest.raises(InvalidRequestError) as raised:
        call(llm)
    assert raised.value.param == param


def test_embeddings_are_unit_length_unless_asked_otherwise_and_an_embedding_resets_the_cache(llm):
    vectors = llm.create_embedding(["Paris is in France.", "Hello"])["data"]
    assert [v["index"] for v in vectors] == [0, 1]
    assert np.linalg.norm(vectors[0]["embedding"]) == pytest.approx(1.0)
    raw = llm.embed("Paris is in France.", normalize=False)
    assert np.allclose(np.asarray(raw) / np.linalg.norm(raw), vectors[0]["embedding"])
    assert llm.create_chat_completion(ask(GOLDEN_QUESTION), temperature=0)["choices"][0]["message"]["content"] \
        == GOLDEN_ANSWER


def test_truncation_auto_drops_the_oldest_turns_and_the_report_says_so(llm):
    """What the terminal's chat relies on: truncation="auto" answers a conversation the default refuses, and the
    include_usage chunk reports usage (as the non-streamed answer), timings and the context budget."""
    last = ask("word " * 99 + "How many words?")
    long_talk = ask("word " * 100) + [{"role": "assistant", "content": "Yes."}] + last  # as in the test above
    kwargs = dict(max_tokens=64, temperature=0, truncation="auto")
    whole = llm.create_chat_completion(long_talk, **kwargs)
    chunks = list(llm.create_chat_completion(long_talk, stream=True, stream_options={"include_usage": True},
                                             **kwargs))
    report = chunks[-1]
    assert report["choices"] == [] and report["object"] == "chat.completion.chunk"
    finish = whole["choices"][0]["finish_reason"]
    assert all(c["choices"] for c in chunks[:-1]) and chunks[-2]["choices"][0]["finish_reason"] == finish
    assert report["usage"] == whole["usage"] and report["context_budget"]["dropped"] == 2 == \
        whole["context_budget"]["dropped"]
    kept = llm.create_chat_completion(last, **kwargs)  # the last turn alone: what was kept
    assert whole["choices"][0]["message"] == kept["choices"][0]["message"]
    assert report["usage"]["prompt_tokens"] == kept["usage"]["prompt_tokens"]
    assert kept["context_budget"]["dropped"] == 0
    timings = report["timings"]
    assert report["context_budget"]["used"] == report["usage"]["prompt_tokens"] + timings["predicted_n"]
    assert timings["cache_n"] + timings["prompt_n"] == report["usage"]["prompt_tokens"]
    assert timings["predicted_n"] == report["usage"]["completion_tokens"] + (finish == "stop")  # the end token
    assert llm.context_budget([])["used"] == 0


def test_continuous_usage_stats_report_every_chunk_as_it_streams(llm):
    """vLLM's stream_options.continuous_usage_stats (the page's live context meter): every chunk carries the
    usage and context budget so far, the prompt as the final report counts it and the tokens sampled growing
    with the pieces; a completion, which has no context budget, refuses it."""
    usage_options = {"include_usage": True, "continuous_usage_stats": True}
    chunks = list(llm.create_chat_completion(ask(GOLDEN_QUESTION), temperature=0, max_tokens=16, stream=True,
                                             stream_options=usage_options))
    report = chunks[-1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == GOLDEN_ANSWER
    assert all(c["usage"]["prompt_tokens"] == report["usage"]["prompt_tokens"] for c in chunks)
    counts = [c["usage"]["completion_tokens"] for c in chunks[:-1] if c["choices"][0]["delta"].get("content")]
    assert counts == sorted(set(counts)) and counts[-1] == report["usage"]["completion_tokens"]
    assert [c["context_budget"]["used"] for c in chunks[1:-2]] == [report["usage"]["prompt_tokens"] + n
                                                                     for n in counts]
    assert chunks[-2]["context_budget"] == report["context_budget"]  # the finish chunk: the end token counted
    with pytest.raises(InvalidRequestError) as raised:
        llm.create_completion("Once upon", stream=True, stream_options=usage_options)
    assert raised.value.param == "stream_options"


def test_a_complete_grammar_ends_the_answer_without_running_its_last_token(llm, monkeypatch):
    """'root ::= "yes" | "no"' is complete after its word: the answer ends there, with no forward pass on the
    word's last token (a model run only to sample the end-of-turn token)."""
    ran = []
    forward = llm.session.model.forward
    monkeypatch.setattr(llm.session.model, "forward",
                        lambda ids, start_pos, **kw: ran.append(len(ids)) or forward(ids, start_pos, **kw))
    reply = llm.create_chat_completion(ask("Is the sky blue?"), temperature=0, grammar='root ::= "yes" | "no"')
    assert reply["choices"][0]["message"]["content"] in ("yes", "no")
    assert reply["choices"][0]["finish_reason"] == "stop"
    answer_tokens = reply["usage"]["completion_tokens"]
    assert answer_tokens == reply["timings"]["predicted_n"] >= 1  # no end-of-turn token was sampled
    assert sum(ran) == reply["timings"]["prompt_n"] + answer_tokens - 1
