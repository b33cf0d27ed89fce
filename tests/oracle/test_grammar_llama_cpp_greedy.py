"""Greedy decoding under a grammar: llama.cpp (node-llama-cpp) on SmolLM2, replayed through our constraint.

The same prompt ids and the same GBNF text go to llama.cpp: its grammars/json.gbnf, and grammars our
JSON-schema converter wrote (so llama.cpp's parser also vouches for the GBNF we emit). llama.cpp decodes
greedily under the grammar; then its ids are fed to our Model in one pass, and at every step
- our grammar allows llama.cpp's token (the end token included, only where our grammar may end), and
- that token is our best allowed token, up to the engines' numerical difference: llama.cpp quantizes
  activations to 8 bits for Q4_1 products, so near-ties may order differently (measured: after
  '{"name": "F', llama.cpp has 'el' 21.94 > 'ro' 21.86, we have 'ro' 22.24 > 'el' 22.11);
and where the two agree exactly, our lazy `sample_constrained` picks that very token.
"""
from __future__ import annotations

import pytest
from llama_cpp_oracle import llama_cpp_results
from llama_cpp_grammar_cases import source_dir

from pychat_wasm.chat.sampler import Sampler, SamplingSettings
from pychat_wasm.grammar.constraint import GrammarConstraint
from pychat_wasm.grammar.json_schema import schema_to_gbnf
from pychat_wasm.grammar.sampling import sample_constrained
from pychat_wasm.model.forward import Model
from pychat_wasm.tokenizers import load_tokenizer

N_GEN = 48  # the third answer ends with <|im_end|> after 41 tokens
CAT = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                                        "colors": {"type": "array", "items": {"enum": ["black", "white", "orange"]}}},
       "required": ["name", "age", "colors"], "additionalProperties": False}
WHEN = {"type": "object", "properties": {"event": {"type": "string", "maxLength": 30},
                                         "date": {"type": "string", "format": "date"}},
        "required": ["event", "date"], "additionalProperties": False}


def jobs(tokenizer):
    def prompt(question):
        return tokenizer.encode("<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n" % question)
    json_gbnf = (source_dir() / "grammars" / "json.gbnf").read_text(encoding="utf-8")
    return [{"ids": prompt("Describe a cat as JSON."), "grammar": json_gbnf, "n_gen": N_GEN},
            {"ids": prompt("Describe a cat as JSON."), "grammar": schema_to_gbnf(CAT), "n_gen": N_GEN},
            {"ids": prompt("When did Apollo 11 land on the moon?"), "grammar": schema_to_gbnf(WHEN), "n_gen": N_GEN}]


def llama_cpp_greedy(model_path, requests):
    return [result["generated"] for result in llama_cpp_results(model_path, requests, context_size=512)]


LOGIT_TIE = 0.5  # how far below our best allowed logit llama.cpp's choice may be (engine rounding)


@pytest.mark.slow
def test_greedy_under_grammars_matches_llama_cpp(smollm2_path):
    tokenizer = load_tokenizer(str(smollm2_path))
    requests = jobs(tokenizer)
    theirs = llama_cpp_greedy(smollm2_path, requests)
    model = Model.from_gguf(smollm2_path)
    sampler = Sampler(SamplingSettings(temperature=0, repeat_penalty=1.0))
    exact = ended = 0
    for job, generated in zip(requests, theirs):
        assert len(generated) > 5
        rows = model.forward(job["ids"] + generated[:-1], 0, all_logits=True)[len(job["ids"]) - 1:]  # [n, vocab]
        constraint = GrammarConstraint.from_gbnf(job["grammar"], tokenizer)
        for step, (token, logits) in enumerate(zip(generated, rows)):
            mask = constraint.allowed_mask(logits.shape[0])  # [vocab] bool
            assert mask[token], (step, tokenizer.decode(generated[:step + 1]))
            best = float(logits[mask].max())
            assert best - logits[token] < LOGIT_TIE, (step, tokenizer.decode(generated[:step + 1]))
            if logits[token] == best:
                exact += 1
                assert sample_constrained(logits, lambda l: sampler.sample(l, []), constraint) == token
            else:
                constraint.accept(token)
        if generated[-1] in tokenizer.end_of_turn_ids:
            ended += 1
            assert constraint.is_done
    assert ended >= 1
    assert exact >= 0.9 * sum(len(g) for g in theirs)
