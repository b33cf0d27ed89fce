"""Output you can parse: generation constrained by a GBNF grammar or a JSON schema (issue 21).

    gbnf.py            GBNF text -> rule table, as llama.cpp's parser builds it (elements.py: element types;
                       left_recursion.py: the check that refuses left recursion)
    matcher.py         parse stacks over the table, advanced by characters and tokens (UTF-8 split across tokens)
    vocab_index.py     a tokenizer's vocabulary as a trie, for masking every token at once
    constraint.py      GrammarConstraint: allowed(token) / allowed_mask() / accept(token) / is_done
    sampling.py        sample_constrained: the lazy step (the sampler's choice unless the grammar refuses it)
    json_schema.py     JSON Schema -> GBNF (json_patterns.py: `pattern`; json_numbers.py: integer ranges)

    >>> from pychat_wasm.grammar import Grammar, Matcher
    >>> m = Matcher(Grammar.parse('root ::= "yes" | "no"'))
    >>> m.allows_end(m.accept_text(m.initial, "no"))
    True
"""
from .constraint import GrammarConstraint
from .gbnf import Grammar
from .json_schema import json_object_gbnf, schema_to_gbnf
from .matcher import Matcher
from .sampling import sample_constrained

__all__ = ["Grammar", "GrammarConstraint", "Matcher", "json_object_gbnf", "sample_constrained", "schema_to_gbnf"]
