"""Replay: the base model's own answers to general questions, learned beside the user's conversations.

A few epochs on a handful of facts move a small model's other answers too: after the shipped example alone,
SmolLM2-135M called St. Petersburg Russia's capital and HCl the formula of water. Training also on what the
base model itself answers to general questions (rehearsal with targets the model generated) holds those
answers where they were. The questions are data/replay_questions.json; they share none with the evaluation
files, so the general questions `finetune` checks afterwards are held out.

    >>> replay = ReplayAnswers(replay_plan(gguf), count=48)         # doctest: +SKIP
    >>> while not replay.finished: replay.answer_next()            # doctest: +SKIP
    >>> replay.conversations[0]                                     # doctest: +SKIP
    [{'role': 'user', 'content': 'What is the capital of Egypt?'},
     {'role': 'assistant', 'content': 'The capital of Egypt is Cairo.'}]
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, List, Optional

from ..errors import InvalidSettingError
from ..gguf.reader import GGUFFile
from ..chat.sampler import SamplingSettings
from ..chat.session import ChatSession
from ..chat.load import with_chat
from ..model.load_plan import LoadPlan, plan_model
from .data import DATA_DIR, Conversation

REPLAY_QUESTIONS = os.path.join(DATA_DIR, "replay_questions.json")
# Answers that run longer are left out: a greedy small model that has not stopped by then mostly rambles,
# and a cut answer would teach it to stop mid-sentence.
MAX_ANSWER_TOKENS = 48
GREEDY = SamplingSettings(temperature=0.0, repeat_penalty=1.0, max_tokens=MAX_ANSWER_TOKENS)
CONTEXT_TOKENS = 256  # a question and its answer; keeps the KV cache small next to the weights


def replay_plan(gguf: GGUFFile, check: Callable[[LoadPlan], None] = lambda plan: None) -> LoadPlan:
    """The base model's load plan with float32 weights (as the trainer holds them): replay runs it at
    CONTEXT_TOKENS of context, and fine-tuning reads the base model's config, tokenizer and template from it.
    `check` sees the model's plan before the tokenizer and template are read (fine-tuning refuses there an
    architecture it cannot train)."""
    plan = plan_model(gguf, policy="float32")
    check(plan)
    return with_chat(plan)


def replay_questions() -> List[str]:
    with open(REPLAY_QUESTIONS, encoding="utf-8") as fh:
        return json.load(fh)


class ReplayAnswers:
    """Asks the base model (planned by replay_plan) the first `count` replay questions, one per `answer_next`,
    greedily, and keeps each answer that ends by itself."""

    def __init__(self, plan: LoadPlan, count: int):
        questions = replay_questions()
        if not 0 <= count <= len(questions):
            raise InvalidSettingError("replay takes 0 to %d questions, got %r" % (len(questions), count))
        self.plan = plan
        self.questions = questions[:count]
        self.answered = 0
        self.conversations: List[Conversation] = []
        self._session: Optional[ChatSession] = None

    @property
    def finished(self) -> bool:
        return self.answered >= len(self.questions)

    def answer_next(self) -> None:
        if self._session is None:
            self._session = ChatSession.from_plan(self.plan.shortened(CONTEXT_TOKENS))
        question = self.questions[self.answered]
        pieces, stop_reason = [], ""
        for event in self._session.reply([{"role": "user", "content": question}], GREEDY):
            if event.kind == "piece":
                pieces.append(event.text)
            elif event.kind == "done":
                stop_reason = event.stats.stop_reason
        answer = "".join(pieces).strip()
        if stop_reason == "eos" and answer:
            self.conversations.append([{"role": "user", "content": question},
                                       {"role": "assistant", "content": answer}])
        self.answered += 1
        if self.finished:
            self._session = None  # its weights go before training allocates its own copy

    def answer_all(self, on_answer: Optional[Callable[[int, int], Any]] = None) -> List[Conversation]:
        """Answer the remaining questions, calling on_answer(answered, total) after each; the kept answers."""
        while not self.finished:
            self.answer_next()
            if on_answer is not None:
                on_answer(self.answered, len(self.questions))
        return self.conversations
