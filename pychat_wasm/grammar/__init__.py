"""Output you can parse: generation constrained by a GBNF grammar or a JSON schema.

    gbnf.py         GBNF text -> rule table (llama.cpp's syntax and table)
    matcher.py      parse stacks over the table, advanced by characters and tokens
    vocab_index.py  a tokenizer's vocabulary as a trie, for masking every token at once
    constraint.py   GrammarConstraint: allowed(token) / accept(token) / is_done for one generation
    sampling.py     the lazy constrained sampling step
    json_schema.py  JSON Schema -> GBNF (json_numbers.py: integer ranges)
"""
from .gbnf import Grammar

__all__ = ["Grammar"]
