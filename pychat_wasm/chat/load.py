"""A chat's load plan: the model's (model/load_plan.py: checks, shards, weight policy), then the tokenizer
and the chat template a conversation needs, all from one open GGUF file and checked once.

    >>> plan = plan_load(GGUFFile.open("SmolLM2-135M-Instruct.Q4_1.gguf"), context_length=2048)  # doctest: +SKIP
    >>> session = ChatSession.from_plan(plan)                                                   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..gguf.reader import GGUFFile
from ..model.fit_check import MODEL_HEAP
from ..model.load_plan import LoadPlan, plan_model
from ..tokenizers import load_tokenizer
from .template import ChatTemplate


def plan_load(gguf: GGUFFile, context_length: Optional[int] = None, policy: str = "auto",
              memory_limit: int = MODEL_HEAP, workers: int = 1, rank: int = 0) -> LoadPlan:
    """plan_model, and the tokenizer and chat template a chat needs (TokenizerError, TemplateError)."""
    return with_chat(plan_model(gguf, context_length, policy, memory_limit, workers, rank))


def with_chat(plan: LoadPlan) -> LoadPlan:
    """A model's plan with the tokenizer and chat template of its file."""
    tokenizer = load_tokenizer(plan.gguf)
    return dataclasses.replace(plan, tokenizer=tokenizer, template=ChatTemplate.from_gguf(plan.gguf, tokenizer))
