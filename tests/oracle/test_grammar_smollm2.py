"""Constrained greedy decoding with our real Model and Sampler on SmolLM2.

Two independent checks of each step: the lazy step (`sample_constrained`) must pick exactly the argmax
over the tokens the full mask allows, and the finished text must parse and validate under the schema
with the `jsonschema` package.
"""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from pychat_wasm.chat.sampler import Sampler, SamplingSettings
from pychat_wasm.grammar.constraint import GrammarConstraint
from pychat_wasm.grammar.json_schema import schema_to_gbnf
from pychat_wasm.grammar.sampling import sample_constrained
from pychat_wasm.model.forward import Model
from pychat_wasm.tokenizers import load_tokenizer

SCHEMAS = [
    ("Describe a cat as JSON.", {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "indoor": {"type": "boolean"}}, "required": ["name", "age", "indoor"], "additionalProperties": False}),
    ("Pick a colour.", {"type": "string", "enum": ["red", "green", "blue"]}),
    ("List three fruits.", {"type": "array", "items": {"type": "string", "maxLength": 12},
                            "minItems": 3, "maxItems": 3}),
    ("When was the moon landing?", {"type": "object", "properties": {"date": {"type": "string", "format": "date"}},
                                    "required": ["date"], "additionalProperties": False}),
]


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return Model.from_gguf(smollm2_path), load_tokenizer(str(smollm2_path))


@pytest.mark.slow
@pytest.mark.parametrize("question,schema", SCHEMAS, ids=[q for q, _ in SCHEMAS])
def test_greedy_json_under_a_schema_is_valid(smollm2, question, schema):
    model, tokenizer = smollm2
    prompt = tokenizer.encode("<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n" % question)
    constraint = GrammarConstraint.from_gbnf(schema_to_gbnf(schema), tokenizer)
    sampler = Sampler(SamplingSettings(temperature=0, repeat_penalty=1.0))
    history = list(prompt)
    logits = model.forward(prompt, 0)  # [vocab]
    generated = []
    while not constraint.is_done and len(generated) < 80:
        allowed = constraint.allowed_mask(logits.shape[0])  # [vocab] bool, computed before the step
        expected = int(np.argmax(np.where(allowed, logits, -np.inf)))
        token = sample_constrained(logits, lambda l: sampler.sample(l, history), constraint)
        assert token == expected
        if token in tokenizer.end_of_turn_ids:
            break
        generated.append(token)
        history.append(token)
        logits = model.forward([token], len(model.cache.ids))
    assert constraint.can_end, tokenizer.decode(generated)
    value = json.loads(tokenizer.decode(generated))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert not list(validator.iter_errors(value)), value
