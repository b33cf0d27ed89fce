"""How well a trained model answers: greedy answers through the real chat engine, compared with the data.

The model under test is the exported GGUF itself, run by ChatSession exactly as `pychat-wasm chat` runs
it, so the score covers export, tokenizer, chat template and inference, not only the training weights.

    >>> session = session_from_gguf_bytes(trainer_gguf_bytes)                   # doctest: +SKIP
    >>> answer_report(session, [[{"role": "user", "content": "Hi?"},
    ...                          {"role": "assistant", "content": "Hello."}]]).exact   # doctest: +SKIP
    1
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from ..gguf.reader import GGUFFile
from ..chat.sampler import SamplingSettings
from ..chat.session import ChatSession

GREEDY = SamplingSettings(temperature=0.0, repeat_penalty=1.0, max_tokens=96)


class AnswerReport(NamedTuple):
    exact: int
    total: int
    misses: List[Tuple[str, str, str]]  # (question, expected answer, answer given)

    @property
    def rate(self) -> float:
        return self.exact / self.total if self.total else 0.0


def session_from_gguf_bytes(data: Any, name: str = "trained.gguf", policy: str = "float32") -> ChatSession:
    gguf = GGUFFile(np.frombuffer(data, dtype=np.uint8), name=name)
    return ChatSession.from_gguf(gguf, policy=policy)


def greedy_answer(session: ChatSession, history: Sequence[Dict[str, str]], question: str) -> str:
    """The session's greedy answer to `question` after the messages in `history`."""
    messages = list(history) + [{"role": "user", "content": question}]
    return "".join(e.text for e in session.reply(messages, GREEDY) if e.kind == "piece").strip()


def answer_report(session: ChatSession, conversations: Sequence[List[Dict[str, str]]]) -> AnswerReport:
    """How many conversations' last assistant answers the model reproduces exactly (after stripping)."""
    misses = []
    exact = 0
    for messages in conversations:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        question_at = max(i for i in range(last) if messages[i]["role"] == "user")
        expected = messages[last]["content"].strip()
        got = greedy_answer(session, messages[:question_at], messages[question_at]["content"])
        if got == expected:
            exact += 1
        else:
            misses.append((messages[question_at]["content"], expected, got))
    return AnswerReport(exact, len(conversations), misses)


def keyword_report(session: ChatSession, items: Sequence[Dict[str, str]]) -> AnswerReport:
    """How many greedy answers to {"question", "expect"} items contain their expected words (any case)."""
    misses = []
    for item in items:
        got = greedy_answer(session, [], item["question"])
        if item["expect"].lower() not in got.lower():
            misses.append((item["question"], item["expect"], got))
    return AnswerReport(len(items) - len(misses), len(items), misses)
