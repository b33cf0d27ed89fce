"""How a fine-tuning run trains on the user's data: its size decides the defaults.

The defaults were first tuned on the shipped example (eight facts asked five ways, 40 chats); with them a
file of six facts came back 0 or 1 of 6 times, as its examples were few and 33 replayed general answers
outnumbered them five to one. The plan scales with the data instead:

    validation    5% held out only from MIN_VALIDATION conversations on (a small file keeps every example)
    replay        the base model's answers to REPLAY_QUESTIONS general questions, all of them (their variety
                  holds its general answers), but at most REPLAY_SHARE of the examples a pass trains on: a
                  small file's conversations are repeated within each pass until they are the larger part
    targets       LoRA on the attention, and below MLP_BELOW conversations on the MLP too: a few facts of one
                  question each came back to new wordings more often so (4 of 6 against 3 of 6 for SmolLM2)
    passes        each training conversation is presented at least MIN_PASSES times, and a small file more
                  often, up to PRESENTATIONS presentations of the user's examples in all (at most MAX_PASSES)
    early stop    checked from the pass that has presented every conversation MIN_PASSES times and every
                  replayed answer MIN_REPLAY_PASSES times, then every CHECK_EXAMPLES examples: once the greedy
                  answers to the training conversations (up to CHECKED of them) are their training answers and
                  the loss (validation, else training) is below MIN_LOSS_DROP or fell by less than that since
                  the best check, the run ends. Checked only at the end of each pass, twenty facts ran a pass
                  past their last answer (19 of 20 at one check, 20 of 20 at the next, 19 steps later) and the
                  sky's colour became a taught one; checked every 16 examples they stop 4 steps after it, with
                  the sky still blue. Six facts checked so from their first pass stopped at 30 steps and lost
                  Moscow; from their second (the replay presented twice) they keep it

    >>> plan = choose_plan(conversations=6, answer_tokens=[12, 14, 11, 15, 13, 12])
    >>> plan.held_out, plan.replay_questions, plan.presentations
    (0, 48, 40)
    >>> plan.repeats(replayed=33), plan.passes(replayed=33), plan.steps(replayed=33)   # 6 x 6 + 33 a pass
    (6, 7, 126)
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence

from .data import split_validation

MIN_VALIDATION = 40  # conversations from which a validation split is held out
MLP_BELOW = 40  # conversations below which LoRA adapts the MLP too
VALIDATION_FRACTION = 0.05
REPLAY_QUESTIONS = 48  # all the shipped replay questions (replay.py)
REPLAY_SHARE = 0.5  # of the examples of a pass, at most
MIN_PASSES = 6  # presentations of each training conversation before the run may stop early
MIN_REPLAY_PASSES = 2  # passes (presentations of each replayed answer) before the run may stop early
MAX_PASSES = 40
PRESENTATIONS = 240  # of the user's conversations in all: what the shipped example's 40 chats got in 6 epochs
CHECKED = 64  # training conversations whose greedy answers are checked
CHECK_EXAMPLES = 16  # examples trained between two checks, once checks have begun (4 steps of batch 4)
MIN_LOSS_DROP = 0.02  # nats per answer token: a smaller fall since the best check counts as no longer falling


@dataclasses.dataclass(frozen=True)
class FinetunePlan:
    """A run's numbers, chosen by choose_plan from the data and the settings (a setting given wins)."""

    conversations: int  # the user's, before the validation split
    held_out: int
    replay_questions: int  # general questions the base model is asked
    presentations: int  # of each training conversation, over the whole run
    targets: str  # what LoRA adapts: a key of finetune.TARGETS
    targets_given: bool
    presentations_given: bool  # they came from the settings' epochs
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

    def repeats(self, replayed: int) -> int:
        """How often each training conversation comes in one pass, so that `replayed` replay answers are at
        most REPLAY_SHARE of the pass (never more often than it is presented in all)."""
        needed = math.ceil(replayed * (1 - REPLAY_SHARE) / REPLAY_SHARE / max(1, self.trained))
        return max(1, min(self.presentations, needed))

    def passes(self, replayed: int) -> int:
        return math.ceil(self.presentations / self.repeats(replayed))

    def steps_per_pass(self, replayed: int) -> int:
        return -(-(self.repeats(replayed) * self.trained + replayed) // self.batch_size)

    def first_check(self, replayed: int) -> int:
        """Passes before the first early-stop check: the first that presents each conversation MIN_PASSES times
        and the replayed answers MIN_REPLAY_PASSES times."""
        return max(MIN_REPLAY_PASSES, math.ceil(MIN_PASSES / self.repeats(replayed)))

    def check_every(self, examples_per_step: int) -> int:
        """Steps between two early-stop checks once they have begun."""
        return math.ceil(CHECK_EXAMPLES / examples_per_step)

    def steps(self, replayed: int) -> int:
        """Optimizer steps with `replayed` replay answers trained beside the user's conversations."""
        return self.passes(replayed) * self.steps_per_pass(replayed)

    def explain(self, replayed: Optional[int] = None) -> List[str]:
        """Lines that say why the run trains as it does (`replayed`: the replay answers kept, once known)."""
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
        lines.append("replay: the base model answers %d general questions; its answers are learned beside the data, "
                     "so that it keeps them, as at most %d%% of each pass" % (self.replay_questions,
                                                                             round(100 * REPLAY_SHARE)))
        if self.targets_given:
            lines.append("adapters: LoRA on %s (as given)" % self.targets)
        else:
            lines.append("adapters: LoRA on %s (%s than %d conversations)" % (
                self.targets, "fewer" if self.targets == "attn+mlp" else "no fewer", MLP_BELOW))
        why = "the epochs given" if self.presentations_given else "at least %d, and up to %d until %d " \
            "presentations of your conversations in all" % (MIN_PASSES, MAX_PASSES, PRESENTATIONS)
        times = "once" if self.presentations == 1 else "%d times" % self.presentations
        lines.append("presentations: each conversation is trained on %s (%s)" % (times, why))
        if replayed is not None:
            lines.append(self.describe_steps(replayed))
        if self.early_stop:
            lines.append("early stop: checked once each conversation was presented %d times and the replayed "
                         "answers %d times, then every %d examples: when the greedy answers to the training questions "
                         "are the training answers and the %s loss has stopped falling (by %g or more), training "
                         "ends" % (MIN_PASSES, MIN_REPLAY_PASSES, CHECK_EXAMPLES,
                                   "validation" if self.held_out else "training", MIN_LOSS_DROP))
        return lines


    def describe_steps(self, replayed: int) -> str:
        passes, steps = self.passes(replayed), self.steps_per_pass(replayed)
        return "steps: %d pass%s of %d step%s of %d examples (%d conversations x %d + %d replayed answers)" % (
            passes, "" if passes == 1 else "es", steps, "" if steps == 1 else "s", self.batch_size, self.trained,
            self.repeats(replayed), replayed)


def choose_plan(conversations: int, answer_tokens: Sequence[int] = (), epochs: Optional[int] = None,
                replay: Optional[int] = None, batch_size: int = 4, early_stop: bool = True,
                targets: Optional[str] = None) -> FinetunePlan:
    """The plan for `conversations` user conversations: `epochs` presentations and `replay` questions when
    given (finetune.FinetuneSettings passes its own), else what the data's size calls for."""
    held_out = 0
    if conversations >= MIN_VALIDATION:
        held_out = len(split_validation(range(conversations), VALIDATION_FRACTION)[1])
    trained = conversations - held_out
    presentations = epochs or min(MAX_PASSES, max(MIN_PASSES, round(PRESENTATIONS / max(1, trained))))
    chosen_targets = targets or ("attn+mlp" if conversations < MLP_BELOW else "attn")
    return FinetunePlan(conversations=conversations, held_out=held_out,
                        replay_questions=REPLAY_QUESTIONS if replay is None else replay, presentations=presentations,
                        presentations_given=epochs is not None, targets=chosen_targets, targets_given=bool(targets),
                        batch_size=batch_size, early_stop=early_stop, answer_tokens=list(answer_tokens))
