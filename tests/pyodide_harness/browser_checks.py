"""Checks that run INSIDE Pyodide: each runs the engine on served fixture files and returns plain results.

tests/test_in_pyodide.py calls them by name (harness.run(name, args)) and compares what they return with
independent references computed natively (gguf-py, HF tokenizers, transformers). Nothing here judges the
engine: the checks only run it, so the oracles stay outside the browser where they can run.

A check is an `async def` registered with @check; it receives JSON keyword arguments and returns
something JSON-able (numpy arrays go through `encode_array`). `run_check` wraps each call so that an
exception comes back as its traceback, naming the check that failed. To add one: write an @check function
here, and a test in test_in_pyodide.py that runs it by name and compares its result with a native oracle.
"""
from __future__ import annotations

import base64
import json
import sys
import time
import traceback

import numpy as np

FIXTURES_URL = "fixtures/"  # set by harness_worker.js
CHECKS = {}
_cache = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


async def run_check(name: str, args_json: str) -> str:
    start = time.perf_counter()
    try:
        result = await CHECKS[name](**json.loads(args_json))
        outcome = {"ok": True, "result": result}
    except Exception:
        outcome = {"ok": False, "error": traceback.format_exc()}
    outcome["seconds"] = time.perf_counter() - start
    return json.dumps(outcome)


def encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(encoded: dict) -> np.ndarray:
    raw = base64.b64decode(encoded["float32_base64"])
    return np.frombuffer(raw, dtype=np.float32).reshape(encoded["shape"])


async def fetch_fixture(name: str) -> np.ndarray:
    """The served fixture file as a uint8 array in the wasm heap (fetched once per worker)."""
    if name not in _cache:
        from js import fetch
        response = await fetch(FIXTURES_URL + name)
        if not response.ok:
            raise FileNotFoundError("%s: HTTP %d" % (name, response.status))
        buffer = await response.arrayBuffer()
        _cache[name] = np.frombuffer(buffer.to_py(), dtype=np.uint8)
    return _cache[name]


async def open_gguf(name: str):
    from pychat_wasm.gguf_reader import GGUFFile
    return GGUFFile(await fetch_fixture(name), name=name)


async def smollm2():
    """SmolLM2's GGUFFile and tokenizer, shared by the tokenizer, template and generation checks."""
    if "smollm2" not in _cache:
        from pychat_wasm.tokenizer import load_tokenizer
        f = await open_gguf("smollm2.gguf")
        _cache["smollm2"] = f, load_tokenizer(f)
    return _cache["smollm2"]


# -- the checks --------------------------------------------------------------------------------------

@check
async def runtime_versions():
    import jinja2
    import regex
    import pychat_wasm
    return {"python": list(sys.version_info[:3]), "numpy": np.__version__, "jinja2": jinja2.__version__,
            "regex": regex.__version__, "platform": sys.platform, "pychat_wasm": pychat_wasm.__file__}


@check
async def gguf_metadata(file):
    f = await open_gguf(file)
    tensors = {name: {"shape": list(t.shape), "type_id": t.type_id, "nbytes": t.nbytes}
               for name, t in f.tensors.items()}
    values = {name: encode_array(f.tensor_bytes(name).view(np.float32).reshape(t.shape))
              for name, t in f.tensors.items() if t.type_name == "F32"}
    return {"version": f.version, "metadata": f.metadata, "tensors": tensors, "f32_values": values}


@check
async def gguf_typed_errors(file, html_file):
    """Which exception each broken input raises: an HTML page, and the GGUF file cut at several points."""
    from pychat_wasm.gguf_reader import GGUFFile
    good = await fetch_fixture(file)
    inputs = {"html page": await fetch_fixture(html_file), "empty": good[:0], "cut in counts": good[:12],
              "cut in metadata": good[:40], "cut in tensor data": good[:good.size - 7]}
    raised = {}
    for label, data in inputs.items():
        try:
            GGUFFile(data)
            raised[label] = None
        except Exception as e:
            raised[label] = [type(e).__name__, str(e)]
    return raised


@check
async def dequantize(file, tensor):
    from pychat_wasm.quants import dequantize
    f = await open_gguf(file)
    info = f.tensors[tensor]
    return encode_array(dequantize(f.tensor_bytes(tensor), info.type_id, info.shape))


@check
async def tokenize(texts):
    _, tok = await smollm2()
    encoded = [tok.encode(text) for text in texts]
    return {"ids": encoded, "decoded": [tok.decode(ids) for ids in encoded]}


@check
async def chat_template(conversations):
    from pychat_wasm.chat_template import ChatTemplate
    f, tok = await smollm2()
    template = ChatTemplate.from_gguf(f, tok)
    return [template.render(messages, add_generation_prompt=True) for messages in conversations]


@check
async def model_logits(file, tokens, policy):
    from pychat_wasm.model import Model
    model = Model.from_gguf(await open_gguf(file), policy=policy)
    return encode_array(model.forward(tokens, 0, all_logits=True))  # [n_tokens, vocab]


@check
async def smollm2_greedy(messages, max_new_tokens):
    """Render, tokenize, prefill and decode greedily until end of turn: the whole chat path in wasm."""
    from pychat_wasm.chat_template import ChatTemplate, encode_chat
    from pychat_wasm.model import Model
    f, tok = await smollm2()
    prompt_ids = encode_chat(tok, ChatTemplate.from_gguf(f, tok).render(messages, add_generation_prompt=True))
    model = Model.from_gguf(f)
    start = time.perf_counter()
    logits = model.forward(prompt_ids, 0, all_logits=True)  # [n_prompt, vocab]
    prefill_seconds = time.perf_counter() - start
    top3 = np.argsort(-logits[-1])[:3]
    first_top = [[int(i), float(logits[-1][i])] for i in top3]
    new_ids = [int(np.argmax(logits[-1]))]
    while new_ids[-1] not in tok.end_of_turn_ids and len(new_ids) < max_new_tokens:
        logits = model.forward([new_ids[-1]], len(prompt_ids) + len(new_ids) - 1, all_logits=True)  # [1, vocab]
        new_ids.append(int(np.argmax(logits[-1])))
    return {"prompt_ids": prompt_ids, "new_ids": new_ids, "text": tok.decode(new_ids),
            "first_top_logits": first_top,
            "prefill_seconds": prefill_seconds, "decode_seconds": time.perf_counter() - start - prefill_seconds}


@check
async def seeded_sampling(logits, settings, steps):
    """Token ids drawn with a fixed seed from fixed logits, feeding each draw back as history."""
    from pychat_wasm.sampler import Sampler, SamplingSettings
    rows = decode_array(logits)  # [steps, vocab]
    sampler = Sampler(SamplingSettings(**settings))
    history = []
    for step in range(steps):
        history.append(sampler.sample(rows[step % rows.shape[0]], history))
    return history
