"""How a fine-tuning run trains on the user's data: its size decides the defaults.

The defaults were first tuned on the shipped example (eight facts asked five ways, 40 chats); with them a
file of six facts came back 1 of 6 times, as its examples were few and 33 replayed general answers
outnumbered them. The plan scales with the data instead:

    validation    5% held out only from MIN_VALIDATION conversations on (a small file keeps every example)
    replay        at most REPLAY_SHARE replayed answers per training conversation (the base model is asked
                  up to twice as many questions, as some answers run too long to keep)
    passes        each training conversation is presented at least MIN_PASSES times, and a small file more
                  often, up to PRESENTATIONS presentations of the user's examples in all (at most MAX_PASSES)
    early stop    after each pass: once the greedy answers to the training conversations (up to CHECKED of them)
                  are their training answers and the loss (validation, else training) fell by less than
                  MIN_LOSS_DROP since the best check, the run ends

    >>> plan = choose_plan(conversations=6, answer_tokens=[12, 14, 11, 15, 13, 12])
    >>> plan.held_out, plan.replay_questions, plan.replay_cap, plan.passes
    (0, 12, 6, 40)
    >>> plan.steps(replayed=6)
    120
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

from .data import split_validation

MIN_VALIDATION = 40  # conversations from which a validation split is held out
VALIDATION_FRACTION = 0.05
REPLAY_SHARE = 1.0  # replayed answers per training conversation, at most
REPLAY_QUESTIONS = 48  # all the shipped replay questions (replay.py)
MIN_PASSES = 6
MAX_PASSES = 40
PRESENTATIONS = 240  # what the shipped example's 40 chats get in 6 passes
CHECKED = 64  # training conversations whose greedy answers are checked after each pass
MIN_LOSS_DROP = 0.02  # nats per answer token: a smaller fall since the best check counts as no longer falling


@dataclasses.dataclass(frozen=True)
class FinetunePlan:
    """A run's numbers, chosen by choose_plan from the data and the settings (a setting given wins)."""

    conversations: int  # the user's, before the validation split
    held_out: int
    replay_questions: int  # general questions the base model is asked
    replay_cap: Optional[int]  # replayed answers trained on, at most (None: all that were kept)
    passes: int  # presentations of each training conversation
    passes_given: bool  # passes came from the settings' epochs
    batch_size: int
    early_stop: bool
    answer_tokens: Sequence[int]  # of each conversation's answers, for the explanation

    @property
    def trained(self) -> int:
        return self.conversations - self.held_out

    def split(self, conversations: Sequence) -> tuple:
        """(trained on, held out) of the user's conversations."""
        if not self.held_out:
            return list(conversations), []
        return split_validation(conversations, VALIDATION_FRACTION)

    def replay_used(self, replayed: Sequence) -> list:
        """The replayed conversations trained on: the first replay_cap of those the base model answered."""
        return list(replayed[:self.replay_cap] if self.replay_cap is not None else replayed)

    def steps_per_pass(self, replayed: int) -> int:
        return -(-(self.trained + replayed) // self.batch_size)

    def steps(self, replayed: int) -> int:
        """Optimizer steps with `replayed` replay answers trained beside the user's conversations."""
        return self.passes * self.steps_per_pass(replayed)

    def explain(self, replayed: Optional[int] = None) -> List[str]:
        """Lines that say why the run trains as it does (`replayed`: the replay answers used, once known)."""
        lengths = sorted(self.answer_tokens)
        span = "%d to %d" % (lengths[0], lengths[-1]) if lengths and lengths[0] != lengths[-1] else \
            "%d" % lengths[0] if lengths else "no"
        lines = ["data: %d conversations, answers of %s tokens" % (self.conversations, span)]
        if self.held_out:
            lines.append("validation: %d held out (%d%%, as there are at least %d)"
                         % (self.held_out, round(100 * VALIDATION_FRACTION), MIN_VALIDATION))
        else:
            lines.append("validation: none held out (fewer than %d conversations: each one is trained on)"
                         % MIN_VALIDATION)
        if self.replay_cap is None:
            share = "all the answers that end within bounds"
        else:
            share = "at most %d (%g per training conversation, so they do not outweigh yours)" % (
                self.replay_cap, REPLAY_SHARE)
        lines.append("replay: the base model answers %d general questions; %s are learned beside the data, so "
                     "that it keeps them" % (self.replay_questions, share))
        why = "the epochs given" if self.passes_given else "at least %d, and up to %d passes until %d presentations " \
            "of your conversations in all" % (MIN_PASSES, MAX_PASSES, PRESENTATIONS)
        steps = "" if replayed is None else ": %d steps of %d examples (%d + %d replayed a pass)" % (
            self.steps(replayed), self.batch_size, self.trained, replayed)
        times = "once" if self.passes == 1 else "%d times" % self.passes
        lines.append("passes: each conversation is presented %s (%s)%s" % (times, why, steps))
        if self.early_stop:
            lines.append("early stop: after each pass, once the greedy answers to the training questions are the "
                         "training answers and the %s loss has stopped falling (by %g or more), training ends"
                         % ("validation" if self.held_out else "training", MIN_LOSS_DROP))
        return lines


def choose_plan(conversations: int, answer_tokens: Sequence[int] = (), epochs: Optional[int] = None,
                replay: Optional[int] = None, batch_size: int = 4, early_stop: bool = True) -> FinetunePlan:
    """The plan for `conversations` user conversations: `epochs` passes and `replay` questions when given
    (finetune.FinetuneSettings passes its own), else what the data's size calls for."""
    held_out = 0
    if conversations >= MIN_VALIDATION:
        held_out = len(split_validation(range(conversations), VALIDATION_FRACTION)[1])
    trained = conversations - held_out
    if replay is None:
        replay_cap = int(REPLAY_SHARE * trained)
        questions = min(REPLAY_QUESTIONS, 2 * replay_cap)
    else:
        questions, replay_cap = replay, None
    passes = epochs or min(MAX_PASSES, max(MIN_PASSES, round(PRESENTATIONS / max(1, trained))))
    return FinetunePlan(conversations, held_out, questions, replay_cap, passes, epochs is not None, batch_size,
                        early_stop, list(answer_tokens))
