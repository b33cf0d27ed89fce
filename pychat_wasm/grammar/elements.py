"""The element types of a grammar's rule table, numbered as llama.cpp's llama_gretype (src/llama-grammar.h)."""
from typing import Tuple

END, ALT, RULE_REF, CHAR, CHAR_NOT, CHAR_RNG_UPPER, CHAR_ALT, CHAR_ANY, TOKEN, TOKEN_NOT = range(10)
Element = Tuple[int, int]  # (type, value): a code point, a rule id or a token id
