"""Output you can parse, for the library API: `response_format` (OpenAI's) and `grammar` (a GBNF text, as
llama.cpp's server takes it) become one GrammarConstraint, and ConstrainedSampler puts it in the token loop.

    response_format={"type": "text"}                       no constraint (as leaving it out)
    response_format={"type": "json_object"}                any JSON object
    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {...}, "strict": True}}
    grammar='root ::= "yes" | "no"'                         the GBNF grammar

A schema or grammar the converter or parser refuses is an InvalidRequestError naming the argument
(response_format or grammar), with the GrammarError's message. Generation ends at the end-of-turn token,
which the grammar allows only where its text is complete, or at max_tokens (finish_reason "length": the
output may then be incomplete).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..errors import GrammarError, InvalidRequestError
from ..grammar import GrammarConstraint, json_object_gbnf, sample_constrained, schema_to_gbnf

RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")


def response_format_gbnf(response_format: Any) -> Optional[str]:
    """The GBNF text a response_format asks for (None: free text)."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in RESPONSE_FORMAT_TYPES:
        raise InvalidRequestError("response_format must be an object whose type is one of %s, not %r"
                                  % (", ".join(RESPONSE_FORMAT_TYPES), response_format), "response_format")
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object_gbnf()
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise InvalidRequestError("response_format: type json_schema needs json_schema: {name, schema: {...}}",
                                  "response_format")
    try:
        return schema_to_gbnf(spec["schema"])
    except GrammarError as exc:
        raise InvalidRequestError("response_format: the JSON schema cannot constrain output: %s" % exc,
                                  "response_format") from None


def api_constraint(response_format: Any, grammar: Any, tokenizer: Any) -> Optional[GrammarConstraint]:
    """The call's constraint, or None. Giving both a grammar and a JSON response_format is refused."""
    gbnf = response_format_gbnf(response_format)
    if grammar is None:
        if gbnf is None:
            return None
        return GrammarConstraint.from_gbnf(gbnf, tokenizer)  # the converter's output parses
    if not isinstance(grammar, str):
        raise InvalidRequestError("grammar must be a GBNF text, not %s" % type(grammar).__name__, "grammar")
    if gbnf is not None:
        raise InvalidRequestError("give either grammar or a JSON response_format, not both", "grammar")
    try:
        return GrammarConstraint.from_gbnf(grammar, tokenizer)
    except GrammarError as exc:
        raise InvalidRequestError("grammar: %s" % exc, "grammar") from None


class ConstrainedSampler:
    """A chat Sampler whose choices the constraint allows (grammar/sampling.py's lazy step). Once the grammar
    can only end (`must_end`), the session ends the answer after the token that completed it, without running
    the model on it; a grammar complete before any token makes the first choice the end-of-turn token."""

    def __init__(self, sampler: Any, constraint: GrammarConstraint, end_id: int):
        self.sampler, self.constraint, self.end_id = sampler, constraint, end_id

    @property
    def settings(self) -> Any:
        return self.sampler.settings

    @property
    def seed(self) -> int:
        return self.sampler.seed

    def use(self, settings: Any) -> None:
        self.sampler.use(settings)

    def begin_answer(self) -> None:
        self.sampler.begin_answer()

    @property
    def must_end(self) -> bool:
        return self.constraint.is_done

    def sample(self, logits: np.ndarray, recent_tokens: Sequence[int]) -> int:
        if self.constraint.is_done:
            return self.end_id
        answer = self.sampler.answer_tokens  # the penalties' count: the kept token only, not a refused one
        count = len(answer)

        def choose(candidates: np.ndarray) -> int:
            del answer[count:]
            return self.sampler.sample(candidates, recent_tokens)

        return sample_constrained(logits, choose, self.constraint)
