"""What one fuzz case runs: the reader, the tokenizer, the chat template, and the worker's load + one turn.

Every step may fail with a typed error (a PychatError): that is the expected answer to a corrupt file and
ends the step. Anything else escapes to the fuzzer as a finding. The worker step runs only for files that
carry their whole tensor data (the tiny seeds); for the real models' headers the reader's answer decides.
"""
from __future__ import annotations

import json
import random

import numpy as np

from pychat_wasm.browser import chat_worker as worker_api
from pychat_wasm.chat.template import ChatTemplate
from pychat_wasm.errors import PychatError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.info import model_info
from pychat_wasm.tokenizers import load_tokenizer

from .mutators import TEXTS

ANSWER_EVENTS = 4  # a streamed answer of max_tokens=2: the role chunk, two pieces, the finish chunk


def run_case(data: bytes, rng: random.Random, policy: str, run_worker: bool) -> str:
    """Run every target on `data`; returns how it ended ("loaded" or the typed error's class name)."""
    try:
        gguf = GGUFFile(data, name="case.gguf")
        model_info(gguf)
    except PychatError as exc:
        return type(exc).__name__
    text = rng.choice(TEXTS)
    _tokenizer_and_template(gguf, rng, text)
    if not run_worker:
        return "parsed"
    return _worker_turn(data, policy, text)


def _tokenizer_and_template(gguf: GGUFFile, rng: random.Random, text: str) -> None:
    try:
        tokenizer = load_tokenizer(gguf)
        ids = tokenizer.encode(text, add_special=True, parse_special=True)
        tokenizer.decode(ids)
        n_tokens = len(gguf.metadata.get("tokenizer.ggml.tokens") or [])
        if n_tokens:
            random_ids = [rng.randrange(n_tokens) for _ in range(8)]
            tokenizer.decode(random_ids)
            decoder = tokenizer.stream_decoder()
            "".join(decoder.feed(i) for i in random_ids) + decoder.flush()
        template = ChatTemplate.from_gguf(gguf, tokenizer)
        template.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}])
    except PychatError:
        pass


def _worker_turn(data: bytes, policy: str, text: str) -> str:
    """The browser worker's path: load_model, then one turn of up to two tokens."""
    loaded = json.loads(worker_api.load_model(np.frombuffer(data, np.uint8), "case.gguf",
                                              json.dumps({"policy": policy})))
    if not loaded["ok"]:
        return _typed(loaded)
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 2, "seed": 7, "stream": True,
            "truncation": "auto"}  # as the page asks
    reply = json.loads(worker_api.begin_request("chat.completions", json.dumps(body)))
    if not reply["ok"]:
        return _typed(reply)
    # Each chunk carries at least one more piece of the answer, and the prompt fits the context (a bound with room to spare).
    max_events = ANSWER_EVENTS + loaded["info"]["context_length"] + 1
    for _ in range(max_events):
        reply = json.loads(worker_api.next_chunk())
        if not reply["ok"]:
            return _typed(reply)
        if reply.get("done"):
            return "chatted"
    raise AssertionError("a two-token turn did not end after %d events" % max_events)


def _typed(reply: dict) -> str:
    kind = reply["error"]["type"]
    if kind == "MemoryError":  # a tiny file never justifies running out of memory: report it
        raise MemoryError(reply["error"]["message"])
    return kind
