"""Checks that run INSIDE Pyodide: each runs the engine on served fixture files and returns plain results.

tests/browser/test_in_pyodide.py calls them by name (harness.run(name, args)) and compares what they return with
independent references computed natively (gguf-py, HF tokenizers, transformers). Nothing here judges the
engine: the checks only run it, so the oracles stay outside the browser where they can run.

A check is an `async def` registered with @check; it receives JSON keyword arguments and returns
something JSON-able (numpy arrays go through `encode_array`). `run_check` wraps each call so that an
exception comes back as its traceback, naming the check that failed. To add one: write an @check function
here, and a test in test_in_pyodide.py that runs it by name and compares its result with a native oracle.
"""
from __future__ import annotations

import base64
import hashlib
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
    from pychat_wasm.gguf.reader import GGUFFile
    return GGUFFile(await fetch_fixture(name), name=name)


async def smollm2():
    """SmolLM2's GGUFFile and tokenizer, shared by the tokenizer, template and generation checks."""
    if "smollm2" not in _cache:
        from pychat_wasm.tokenizers import load_tokenizer
        f = await open_gguf("smollm2.gguf")
        _cache["smollm2"] = f, load_tokenizer(f)
    return _cache["smollm2"]


# -- the checks --------------------------------------------------------------------------------------

@check
async def runtime_versions():
    import importlib.metadata
    import importlib.util
    import jinja2
    import markupsafe
    import pychat_wasm
    return {"python": list(sys.version_info[:3]), "numpy": np.__version__, "jinja2": jinja2.__version__,
            "markupsafe": importlib.metadata.version("markupsafe"),
            "markupsafe_escape": markupsafe._escape_inner.__module__,
            "regex_installed": importlib.util.find_spec("regex") is not None,
            "platform": sys.platform, "pychat_wasm": pychat_wasm.__file__}


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
    from pychat_wasm.gguf.reader import GGUFFile
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
async def fit_check_of_header(file, n_bytes, options):
    """worker_api.check_fit as the page calls it: the first n_bytes of the file and the whole file's size."""
    from pychat_wasm.browser.chat_worker import check_fit
    data = await fetch_fixture(file)
    return json.loads(check_fit(data[:n_bytes], int(data.size), json.dumps(options)))


@check
async def dequantize(file, tensor):
    from pychat_wasm.gguf.quants import dequantize
    f = await open_gguf(file)
    info = f.tensors[tensor]
    return encode_array(dequantize(f.tensor_bytes(tensor), info.type_id, info.shape))


@check
async def tokenize(texts):
    _, tok = await smollm2()
    encoded = [tok.encode(text) for text in texts]
    return {"ids": encoded, "decoded": [tok.decode(ids) for ids in encoded]}


def span_digest(compiled, texts) -> str:
    """sha256 over each text's match spans of a pattern with `spans(text)` (ours here, `regex`'s natively)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(json.dumps(list(compiled.spans(text))).encode())
    return digest.hexdigest()


@check
async def pre_token_digests(patterns, texts):
    """Per pattern, the digest of its matches over `texts`, found by the engine's regex-free splitter."""
    from pychat_wasm.tokenizers.unicode_regex import compile_unicode_regex
    return [span_digest(compile_unicode_regex(p), texts) for p in patterns]


@check
async def unicode_class_spans(patterns):
    """Per pattern, its match spans over every code point, and over all but the surrogates (built here: too
    big to send)."""
    from pychat_wasm.tokenizers.unicode_regex import compile_unicode_regex
    every_code_point = "".join(map(chr, range(sys.maxunicode + 1)))
    no_surrogates = every_code_point[:0xD800] + every_code_point[0xE000:]  # matched with the stand-ins
    return [[list(compile_unicode_regex(p).spans(text)) for text in (every_code_point, no_surrogates)]
            for p in patterns]


@check
async def tokenize_file(file, texts):
    """Ids of each text in the tokenizer of a served GGUF file, add_special and parse_special off."""
    from pychat_wasm.tokenizers import load_tokenizer
    tokenizer = load_tokenizer(await open_gguf(file))
    _cache.pop(file)  # vocabulary files are large and each is used once
    return [tokenizer.encode(text, add_special=False, parse_special=False) for text in texts]


@check
async def chat_template(conversations):
    from pychat_wasm.chat.template import ChatTemplate
    f, tok = await smollm2()
    template = ChatTemplate.from_gguf(f, tok)
    return [template.render(messages, add_generation_prompt=True) for messages in conversations]


@check
async def robustness(templates):
    """The error each hostile chat template raises, and the NaN/inf blocks found in three Q4_1 blocks."""
    from pychat_wasm.chat.template import ChatTemplate
    from pychat_wasm.model.check import count_nonfinite
    raised = []
    for source in templates:
        try:
            ChatTemplate(source).render([{"role": "user", "content": "Hi"}])
            raised.append(None)
        except Exception as e:
            raised.append(type(e).__name__)
    blocks = np.zeros(3 * 20, np.uint8)  # Q4_1 block: d f16, m f16, 16 bytes of codes
    blocks[20:22] = np.frombuffer(np.array([np.nan], np.float16).tobytes(), np.uint8)  # block 1: d
    blocks[42:44] = np.frombuffer(np.array([np.inf], np.float16).tobytes(), np.uint8)  # block 2: m
    return {"raised": raised, "nonfinite_blocks": count_nonfinite(blocks, 3)}


@check
async def model_logits(file, tokens, policy):
    from pychat_wasm.model.forward import Model
    model = Model.from_gguf(await open_gguf(file), policy=policy)
    return encode_array(model.forward(tokens, 0, all_logits=True))  # [n_tokens, vocab]


@check
async def lora_logits(file, adapter, tokens, scale):
    """The chat worker loads `file`, applies the LoRA adapter `adapter` and removes it again: the logits with
    and without it, and the worker's replies."""
    from pychat_wasm.browser import chat_worker
    loaded = json.loads(chat_worker.load_model(await fetch_fixture(file), file, json.dumps({"policy": "float32"})))
    applied = json.loads(chat_worker.apply_lora(await fetch_fixture(adapter), adapter, scale))
    model = chat_worker._worker.session.model
    adapted = model.forward(tokens, 0, all_logits=True)  # [n_tokens, vocab]
    removed = json.loads(chat_worker.remove_lora(adapter))
    base = model.forward(tokens, 0, all_logits=True)
    return {"loaded": loaded["ok"], "applied": applied, "removed": removed, "adapted": encode_array(adapted),
            "base": encode_array(base)}


@check
async def smollm2_greedy(messages, max_new_tokens):
    """Render, tokenize, prefill and decode greedily until end of turn: the whole chat path in wasm."""
    from pychat_wasm.chat.template import ChatTemplate, encode_chat
    from pychat_wasm.model.forward import Model
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
async def library_api(messages):
    """pychat_wasm.LLM in wasm: a greedy chat answer, whole and streamed, with its token counts."""
    from pychat_wasm import LLM
    f, _ = await smollm2()
    llm = LLM(f, context_length=256)
    reply = llm.create_chat_completion(messages, temperature=0)
    chunks = list(llm.create_chat_completion(messages, temperature=0, stream=True))
    return {"text": reply["choices"][0]["message"]["content"], "usage": reply["usage"],
            "streamed": "".join(c["choices"][0]["delta"].get("content", "") for c in chunks),
            "finish_reasons": [c["choices"][0]["finish_reason"] for c in chunks]}


@check
async def speculative_greedy(messages, max_tokens):
    """A greedy chat answer of pychat_wasm.LLM in wasm with speculation (its default) and without: the token ids
    sampled, the timings and the weight policy of each."""
    from pychat_wasm import LLM
    f, _ = await smollm2()
    llm = LLM(f, context_length=512)
    lookup = llm.session.speculative
    answers = {}
    for name, speculative in (("with", lookup), ("without", None)):
        llm.session.speculative = speculative
        ids = []
        llm.session.on_sample = lambda logits, token: ids.append(int(token))
        reply = llm.create_chat_completion(messages, temperature=0, max_tokens=max_tokens)
        answers[name] = {"ids": ids, "text": reply["choices"][0]["message"]["content"], "timings": reply["timings"],
                         "policy": llm.session.model.policy, "default_on": lookup is not None}
    return answers


@check
async def seeded_sampling(logits, settings, steps):
    """Token ids drawn with a fixed seed from fixed logits, feeding each draw back as history."""
    from pychat_wasm.chat.sampler import Sampler, SamplingSettings
    rows = decode_array(logits)  # [steps, vocab]
    sampler = Sampler(SamplingSettings(**settings))
    history = []
    for step in range(steps):
        history.append(sampler.sample(rows[step % rows.shape[0]], history))
    return history


# -- the trainer (pychat_wasm.train, gguf_writer, quantize) ----------------------------------------------

def encode_typed(a: np.ndarray) -> dict:
    """An array of any dtype, bit for bit: {"dtype": numpy's dtype string ("<f8", ...), "shape", "base64"}."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_typed(encoded: dict) -> np.ndarray:
    raw = base64.b64decode(encoded["base64"])
    return np.frombuffer(raw, dtype=np.dtype(encoded["dtype"])).reshape(encoded["shape"]).copy()


def encode_bytes(data) -> dict:
    """Bytes as base64 with their sha256 and length (what the test compares first)."""
    import hashlib
    data = bytes(data)
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "base64": base64.b64encode(data).decode("ascii")}


@check
async def train_package_data():
    """The trainer's shipped data files as installed from the wheel, and the corpora read from them."""
    import hashlib
    import os
    from pychat_wasm.train.data import DATA_DIR, builtin_corpus
    files = {name: hashlib.sha256(open(os.path.join(DATA_DIR, name), "rb").read()).hexdigest()
             for name in sorted(os.listdir(DATA_DIR))}
    corpus = builtin_corpus()
    return {"data_dir": DATA_DIR, "files": files, "documents": len(corpus.documents),
            "conversations": len(corpus.conversations),
            "corpus_sha256": hashlib.sha256(json.dumps(corpus).encode()).hexdigest()}


@check
async def train_gradients(config, seed, dtype, batch, lora, rope_tables=None):
    """Loss and every gradient of the trainable llama: init_params(seed) in `dtype`, LoRA adapters given
    (encode_typed arrays, cast to `dtype`), a batch {"ids", "targets", "mask"} of nested lists.

    Also returns the RoPE tables this runtime computes (float32 cos/sin: libm's here). `rope_tables`
    [cos, sin] (encode_typed), if given, replace them for this computation, so that the gradient arithmetic
    can be compared on its own."""
    from pychat_wasm.train import transformer
    cfg = transformer.llama_config(**config)
    params = transformer.init_params(cfg, seed, dtype=np.dtype(dtype).type)
    init_digests = {name: _sha256(value) for name, value in params.items()}
    for name, encoded in lora["adapters"].items():
        params[name] = decode_typed(encoded).astype(dtype)
    ids, targets = np.array(batch["ids"], np.int64), np.array(batch["targets"], np.int64)
    mask = np.array(batch["mask"], dtype)
    own_tables = transformer._rope_tables(cfg, np.arange(ids.shape[1]))
    original = transformer._rope_tables
    if rope_tables is not None:
        given = tuple(decode_typed(t) for t in rope_tables)
        transformer._rope_tables = lambda cfg, positions: tuple(t[positions] for t in given)
    try:
        start = time.perf_counter()
        loss, grads = transformer.loss_and_grads(cfg, params, ids, targets, mask, lora["scale"])
        seconds = time.perf_counter() - start
    finally:
        transformer._rope_tables = original
    return {"loss": loss, "grads": {name: encode_typed(g) for name, g in grads.items()},
            "grad_dtypes": {name: g.dtype.str for name, g in grads.items()}, "init_digests": init_digests,
            "rope_tables": [encode_typed(t) for t in own_tables],
            "seconds": seconds, "matmul_is_einsum": _matmul_is_einsum()}


def _sha256(a: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _matmul_is_einsum() -> bool:
    from pychat_wasm.model import products
    return bool(products.NO_BLAS)


@check
async def large_matmul(n, k, m, seed):
    """products.matmul and matmul_transposed (the trainer's and the engine's) on a product of more than
    2^31 index triples (an output head at a long batch): their results' digests, from inputs that native
    numpy can rebuild."""
    from pychat_wasm.model import products
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, (n, k)).astype(np.float32)
    b = rng.integers(-2, 3, (k, m)).astype(np.float32)
    return {"einsum": _matmul_is_einsum(), "sha256": _sha256(products.matmul(a, b)),
            "sha256_transposed": _sha256(products.matmul_transposed(a, np.ascontiguousarray(b.T)))}


@check
async def bpe_train(texts, vocab_size, min_frequency):
    from pychat_wasm.train.bpe import train_bpe
    start = time.perf_counter()
    vocab = train_bpe(texts, vocab_size, min_frequency=min_frequency)
    return dict(vocab._asdict(), seconds=time.perf_counter() - start)


def write_gguf_spec(spec: dict) -> bytes:
    """The bytes of the GGUF file `spec` describes: {"arch", "alignment", "metadata": [[method, key, value] or
    [method, key, values, element type name]], "tensors": [[name, encode_typed float32, ggml type]]}. The test
    writes the same spec natively with this very function (it is plain engine calls)."""
    from pychat_wasm.gguf.writer import GGUFWriter, ValueType
    writer = GGUFWriter(spec["arch"], alignment=spec["alignment"])
    for entry in spec["metadata"]:
        method, key, value = entry[:3]
        if method == "add_array":
            writer.add_array(key, value, ValueType[entry[3]])
        else:
            getattr(writer, method)(key, value)
    for name, encoded, ggml_type in spec["tensors"]:
        writer.add_tensor(name, decode_typed(encoded), ggml_type)
    return writer.to_bytes()


@check
async def gguf_write(spec_json):
    """A GGUF file written by pychat_wasm.gguf.writer from a JSON spec (JSON text: 64-bit integers stay exact)."""
    return encode_bytes(write_gguf_spec(json.loads(spec_json)))


@check
async def scratch_run(data_json, steps, checkpoint_at, preset="quick"):
    """ScratchRun.create(TrainSettings(preset, steps), data) stepped to the end; the checkpoint after
    `checkpoint_at` steps and the exported F32 GGUF at the end."""
    from pychat_wasm.train.checkpoint import checkpoint_bytes
    from pychat_wasm.train.data import TrainingData
    from pychat_wasm.train.scratch import ScratchRun, TrainSettings
    data = json.loads(data_json)
    start = time.perf_counter()
    run = ScratchRun.create(TrainSettings(preset=preset, steps=steps), TrainingData(data["documents"],
                                                                                    data["conversations"]))
    create_seconds = time.perf_counter() - start
    records, checkpoint = [], None
    while not run.finished:
        records.append(run.step())
        if run.step_count == checkpoint_at:
            checkpoint = encode_bytes(checkpoint_bytes(run))
    export = encode_bytes(run.gguf_writer().to_bytes())
    return {"create_seconds": create_seconds, "records": records, "vocabulary": run.vocabulary._asdict(),
            "phases": [[p.name, p.steps, len(p.examples), len(p.validation)] for p in run.phases],
            "fingerprint": run.fingerprint(), "checkpoint": checkpoint, "gguf": export}


@check
async def training_worker_api(options_json, files_json, bad_files_json, slices, seconds):
    """The training worker's calls as web/train_worker.js makes them, each reply parsed from its JSON."""
    from pychat_wasm.browser import train_worker as api
    out = {"limits": json.loads(api.limits()),
           "describe": json.loads(api.describe_files(files_json)),
           "begin": json.loads(api.begin_training(options_json, files_json)),
           "train": [json.loads(api.train_for(seconds)) for _ in range(slices)]}
    out["model"] = encode_bytes(api.model_bytes())
    out["bad_describe"] = json.loads(api.describe_files(bad_files_json))
    out["bad_begin"] = json.loads(api.begin_training(options_json, bad_files_json))
    out["after_bad"] = json.loads(api.train_for(0.0))  # the run in memory goes on: one step more
    return out


@check
async def finetune_lora(file, settings, conversations, steps, batch):
    """FinetuneRun on a served GGUF model: `steps` optimizer steps on `conversations`, then the loss and the
    LoRA gradients on a fixed batch (ids, targets, mask nested lists) and the merged parameters."""
    from pychat_wasm.train import transformer
    from pychat_wasm.train.data import TrainingData
    from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings
    run = FinetuneRun(FinetuneSettings(**settings), await open_gguf(file), TrainingData([], conversations))
    initial = {name: _sha256(run.params[name]) for name in sorted(run.trainable)}
    records = [run.step() for _ in range(steps)]
    ids, targets = np.array(batch["ids"], np.int64), np.array(batch["targets"], np.int64)
    loss, grads = transformer.loss_and_grads(run.config, run.params, ids, targets,
                                             np.array(batch["mask"], np.float32), run.lora_scale, run.trainable)
    return {"records": records, "initial_adapter_digests": initial, "loss": loss,
            "examples": [list(e) for e in run.phases[0].examples],
            "adapters": {name: encode_typed(run.params[name]) for name in sorted(run.trainable)},
            "grads": {name: encode_typed(g) for name, g in grads.items()},
            "merged": {name: encode_typed(value) for name, value in run.merged_parameters().items()},
            "gguf": encode_bytes(run.gguf_writer().to_bytes())}


def ids_digest(ids) -> str:
    return hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest()


@check
async def grammar_walks(cases):
    """Under each grammar (GBNF text or JSON schema): the digest of SmolLM2's allowed ids before each of the
    given tokens, which are then accepted, and whether the grammar may end after them."""
    from pychat_wasm.grammar import Grammar, GrammarConstraint, schema_to_gbnf
    _, tok = await smollm2()
    results = []
    for case in cases:
        text = case["gbnf"] if "gbnf" in case else schema_to_gbnf(case["schema"])
        constraint = GrammarConstraint(Grammar.parse(text), tok)
        digests = []
        for token in case["ids"]:
            digests.append(ids_digest(np.flatnonzero(constraint.allowed_mask())))
            constraint.accept(token)
        results.append({"digests": digests, "can_end": constraint.can_end})
    return results


@check
async def grammar_matches(cases):
    """For each (GBNF text, texts): whether each text is a complete match."""
    from pychat_wasm.grammar import Grammar, Matcher
    results = []
    for text, samples in cases:
        matcher = Matcher(Grammar.parse(text))
        results.append([matcher.allows_end(matcher.accept_text(matcher.initial, s)) for s in samples])
    return results
