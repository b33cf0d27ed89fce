"""The chat worker's count_tokens (the page's attachment chips, web/attachments.js) against transformers' own
tokenizer of the same file: the count of an attachment's block as the prompt carries it, special tokens parsed
and no BOS, as the chat template's rendering is tokenized."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pychat_wasm.browser import chat_worker as worker_api

BLOCKS = [
    "File: notes.txt\n```\nThe locker code is 4417.\n```",
    "File: data.csv\n```\nname,age\nAda,36\nAlan,41\n```",
    "File: émoji.md\n````\n# Übersicht 🚀\n```py\nprint('hi')\n```\n````",
    "File: chat.txt\n```\n<|im_start|>user\nhello<|im_end|>\n```",  # the template's markers count as one token each
    "",
]


@pytest.fixture(scope="module")
def loaded(smollm2_path):
    reply = json.loads(worker_api.load_model(np.fromfile(str(smollm2_path), np.uint8), smollm2_path.name))
    assert reply["ok"], reply


@pytest.mark.parametrize("text", BLOCKS)
def test_count_tokens_matches_the_hf_tokenizer(loaded, hf_smollm2_tokenizer, text):
    reply = json.loads(worker_api.count_tokens(text))
    assert reply == {"ok": True, "tokens": len(hf_smollm2_tokenizer(text, add_special_tokens=False)["input_ids"])}
