"""The constrained sampling step: the sampler's choice if the grammar allows it, else a choice among allowed tokens.

Masking the whole vocabulary costs tens of milliseconds; checking one token costs microseconds. So, as
llama.cpp's common sampler does (common/sampling.cpp, common_sampler_sample without grammar_first), the
sampler first chooses from the full logits; only when the grammar refuses that token are the refused
tokens set to -inf and the choice made again. Under greedy decoding this is exactly greedy over the
allowed tokens: if the overall maximum is allowed it is also the maximum of the allowed ones.

    from pychat_wasm.chat.sampler import Sampler, SamplingSettings
    from pychat_wasm.grammar.constraint import GrammarConstraint
    from pychat_wasm.grammar.json_schema import schema_to_gbnf

    sampler = Sampler(SamplingSettings(temperature=0))
    constraint = GrammarConstraint.from_gbnf(schema_to_gbnf(schema), tokenizer)
    logits = model.forward(prompt_ids, 0)
    while not constraint.is_done:    # done: the grammar is complete and nothing may follow, or it ended
        token = sample_constrained(logits, lambda l: sampler.sample(l, history), constraint)
        if token in tokenizer.end_of_turn_ids:   # allowed only where the grammar may end
            break
        history.append(token)            # ...and the token's text goes to the output
        logits = model.forward([token], len(model.cache.ids))
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import GrammarError
from .constraint import GrammarConstraint


def sample_constrained(logits: np.ndarray, choose: Callable[[np.ndarray], int],
                       constraint: GrammarConstraint) -> int:
    """The next token under `constraint`, chosen by `choose(logits) -> id`; the constraint accepts it.

    `logits` is [vocab]; `choose` is called once, or twice when its first choice is refused (then with
    the refused tokens at -inf). A GrammarError when no token at all can continue the grammar.
    """
    token = int(choose(logits))
    if not constraint.allowed(token):
        mask = constraint.allowed_mask(logits.shape[0])  # [vocab] bool
        if not mask.any():
            raise GrammarError("no token of the vocabulary can continue the grammar here")
        token = int(choose(np.where(mask, logits, -np.inf)))  # [vocab]
        if not mask[token]:
            raise GrammarError("the sampler chose token %d, which the grammar refuses, from masked logits" % token)
    constraint.accept(token)
    return token
