"""Grammar speed: set-up time of a 20-property schema, and generation speed constrained vs unconstrained.

1. JSON Schema -> GBNF -> rule table -> matcher -> constraint for a 20-property object (target < 50 ms
   natively; the tokenizer's vocabulary trie is built once per tokenizer and timed separately).
2. Greedy decoding of the same prompt with SmolLM2, n tokens without a grammar and n tokens under a JSON
   schema (the lazy step: the top token is checked, the mask computed only when it is refused); prints
   tokens/s of both and the ratio constrained / unconstrained (target >= 0.85), plus how many steps
   needed a mask and the mean mask time. The two runs alternate `--repeat` times and the best of each
   counts, so that a busy machine slows both alike.

    $ python bench/bench_grammar.py [--tokens 32] [--repeat 2]

Needs the models (scripts/setup.sh). Not a test: figures depend on the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import SMOLLM2  # noqa: E402

from pychat_wasm.chat.sampler import Sampler, SamplingSettings  # noqa: E402
from pychat_wasm.grammar.constraint import GrammarConstraint  # noqa: E402
from pychat_wasm.grammar.json_schema import schema_to_gbnf  # noqa: E402
from pychat_wasm.grammar.sampling import sample_constrained  # noqa: E402
from pychat_wasm.grammar.vocab_index import vocab_index  # noqa: E402
from pychat_wasm.model.forward import Model  # noqa: E402
from pychat_wasm.tokenizers import load_tokenizer  # noqa: E402

TYPES = [{"type": "string", "maxLength": 40}, {"type": "integer", "minimum": 0, "maximum": 1000},
         {"type": "boolean"}, {"type": "string", "enum": ["low", "mid", "high"]},
         {"type": "array", "items": {"type": "number"}, "maxItems": 4}]
SCHEMA_20 = {"type": "object", "properties": {"field_%d" % i: TYPES[i % len(TYPES)] for i in range(20)},
             "required": ["field_%d" % i for i in range(0, 20, 2)], "additionalProperties": False}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "city": {"type": "string"},
                                           "hobbies": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "city", "hobbies"], "additionalProperties": False}
QUESTION = "Describe a person as JSON with name, age, city and hobbies."  # bench_browser_grammar.py's too
PROMPT = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n" % QUESTION


def generate(model, prompt, n, sampler, constraint=None):
    """Greedy tokens/s over n steps after the prompt (the prompt's forward pass not counted)."""
    history = list(prompt)
    logits = model.forward(prompt, 0)
    start = time.perf_counter()
    steps = 0
    for _ in range(n):
        if constraint is None:
            token = sampler.sample(logits, history)
        else:
            token = sample_constrained(logits, lambda l: sampler.sample(l, history), constraint)
            if constraint.is_done:
                break
        history.append(token)
        logits = model.forward([token], len(model.cache.ids))
        steps += 1
    return steps / (time.perf_counter() - start), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tokenizer = load_tokenizer(str(SMOLLM2))
    start = time.perf_counter()
    vocab_index(tokenizer)
    print("vocabulary trie (once per tokenizer): %.0f ms" % ((time.perf_counter() - start) * 1e3))
    start = time.perf_counter()
    constraint = GrammarConstraint.from_gbnf(schema_to_gbnf(SCHEMA_20), tokenizer)
    setup = time.perf_counter() - start
    print("20-property schema set-up: %.1f ms (target < 50 ms, ratio %.2f)" % (setup * 1e3, setup / 0.05))
    start = time.perf_counter()
    constraint.allowed_mask()
    print("first mask of that grammar: %.1f ms" % ((time.perf_counter() - start) * 1e3))

    model = Model.from_gguf(SMOLLM2)
    prompt = tokenizer.encode(PROMPT)
    sampler = Sampler(SamplingSettings(temperature=0, repeat_penalty=1.0))
    gbnf = schema_to_gbnf(PERSON)
    free = bound = 0.0
    for _ in range(args.repeat):
        speed, n_free = generate(model, prompt, args.tokens, sampler)
        free = max(free, speed)
        constraint = GrammarConstraint.from_gbnf(gbnf, tokenizer)
        masks = []
        allowed_mask = constraint.allowed_mask

        def timed_mask(size=None, allowed_mask=allowed_mask, masks=masks):
            t = time.perf_counter()
            result = allowed_mask(size)
            masks.append(time.perf_counter() - t)
            return result
        constraint.allowed_mask = timed_mask
        speed, n_bound = generate(model, prompt, args.tokens, sampler, constraint)
        bound = max(bound, speed)
    print("unconstrained: %.2f tokens/s (%d tokens)" % (free, n_free))
    print("JSON schema:   %.2f tokens/s (%d tokens, %d masked steps, mean mask %.1f ms)"
          % (bound, n_bound, len(masks), 1e3 * sum(masks) / max(len(masks), 1)))
    print("ratio constrained / unconstrained: %.2f (target >= 0.85)" % (bound / free))


if __name__ == "__main__":
    main()
