"""Texts several tests share: the tokenizer corpus, the BPE probes, SmolLM2's golden answer.

One owner for each: the oracle tokenizer tests, the regex-free pre-tokenizer's tests and the in-browser tests
all feed the same texts, and the golden question is asked of the engine natively, in Pyodide and on the page.
"""
from __future__ import annotations

# Ordinary and awkward text for tokenizers: scripts, emoji sequences, white space runs, code, chat markup.
TOKENIZER_CORPUS = [
    "",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog. It's 3:45pm; I'll be there — don't wait.",
    "She'S WE'RE I'M they'VE it'd you'll",
    "我爱北京天安门。今天天气很好！",
    "東京は日本の首都です。ひらがなとカタカナ、漢字。",
    "I love 🍕 and 🦄! 👨‍👩‍👧‍👦 🇫🇷 😀😃",
    "Café naïve résumé façade Ångström über straße",
    "def f(x):\n\tif x > 10:\n\t\treturn x ** 2\n    else:\n        return None\n",
    "a  b   c    d\n\n\n  e\t\t f   ",
    "   leading spaces and trailing spaces   ",
    "1234567890 3.14159 1,000,000 2024-01-01 x86_64",
    "\r\nwindows\r\nlines\r\n",
    "\u00a0nbsp\u3000ideographic\u2009thin",
    "Привет мир! مرحبا بالعالم שלום עולם नमस्ते",
    "rare: 𓀀𓁐 ꙮ 𝔘𝔫𝔦",
    "<table><tr><td>x</td></tr></table>",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "a<|im_end|>b<end_of_turn>c<eos><bos>",
]

# Texts a tokenizer trained on a small English corpus meets for the first time (and some it knows).
BPE_PROBES = [
    "",
    "The keeper wrote the names of the ships.",
    "Hello, world! How are you today?",
    "It's 3:45pm; I'll be there -- don't wait. She'S WE'RE",
    "1234567890 3.14159 1,000,000 2024-01-01",
    "a  b   c    d\n\n\n  e\t\t f   ",
    "   leading and trailing spaces   ",
    "\r\nwindows\r\nlines\r\n",
    "def f(x):\n\tif x > 10:\n\t\treturn x ** 2\n    return None\n",
    "héllo naïve café Ångström straße",
    "我爱北京天安门。今天天气很好！",
    "I love 🍕 and 🦄! 👨‍👩‍👧‍👦 🇫🇷",
    "zygomorphic quixotry flabbergasted",
    "<|im_start|>user\nHow many ships?<|im_end|>\n<|im_start|>assistant\n",
    "ships<|endoftext|>boats<|im_end|>",
]

# SmolLM2-135M-Instruct's greedy answer to the golden question, as transformers and llama.cpp give it.
GOLDEN_QUESTION = "What is the capital of France? Answer in one sentence."
GOLDEN_ANSWER = "The capital of France is Paris."
GOLDEN_IDS = [504, 3575, 282, 4649, 314, 7042, 30, 2]  # GOLDEN_ANSWER + "<|im_end|>"

# The golden SmolLM2 chat prompt (recorded with transformers and llama.cpp), as transformers' tokenizer renders it with the
# file's chat template (apply_chat_template, add_generation_prompt=True).
GOLDEN_PROMPT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
                 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 19842, 281, 582, 6330,
                 30, 2, 198, 1, 520, 9531, 198]
# Gemma 3 270M's prompt in tests/oracle/test_model.py (transformers' logits) and test_tensor_parallel.py.
GEMMA_TOKENS = [2, 818, 5279, 529, 7001, 563, 9079, 236761, 108, 818]
