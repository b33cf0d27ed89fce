"""A model trained from scratch, exported to GGUF, run by four engines that must agree with each other.

The run is `pychat-wasm train --preset quick --steps 150` in miniature: ScratchRun on the built-in corpus,
stepped to the end, exported with run.gguf_writer(type). The exported file is then read by
    - pychat_wasm's inference engine (Model, ChatSession, the GGUF's own tokenizer),
    - transformers' GGUF loader (LlamaForCausalLM and the tokenizer it converts from the file),
    - llama.cpp through node-llama-cpp (tests/support/llama_cpp_greedy.mjs),
and compared with the trainer's own forward pass on the parameters it holds:
    logits (F32 file): every pair within 1e-5          tokenization: the same ids everywhere
    greedy answers to training questions: the same ids from ChatSession, transformers' generate, llama.cpp
    F16 / Q8_0 files: the matrices hold exactly the bytes gguf-py's reference quantizer makes of the trained
                      weights; ours and transformers within 1e-5 on the same file, and of the trainer's forward
                      on the weights gguf-py dequantizes from it; F32 and llama.cpp (which also rounds the
                      activations) within what rounding the weights costs
    metadata (gguf-py's GGUFReader): what llama.cpp needs to load the file as a llama with a GPT-2 tokenizer
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from llama_cpp_oracle import llama_cpp_results

from pychat_wasm.chat.template import CHATML_TEMPLATE, encode_chat
from pychat_wasm.model.forward import Model
from pychat_wasm.tokenizers import load_tokenizer
from pychat_wasm.train import transformer
from pychat_wasm.train.checkpoint import read_checkpoint, restore
from pychat_wasm.train.data import builtin_corpus
from pychat_wasm.train.evaluate import GREEDY, greedy_answer, session_from_gguf_bytes
from pychat_wasm.train.export import FILE_TYPES
from pychat_wasm.train.scratch import ScratchRun, TrainSettings

REPO = Path(__file__).resolve().parents[2]
SETTINGS = TrainSettings(preset="quick", steps=150)
TYPES = ("F32", "F16", "Q8_0")
LOGIT_TOLERANCE = 1e-5  # float32 engines on the same weights (measured: at most 4.1e-6, llama.cpp on the F16 file)
QUANTIZATION_TOLERANCE = {"F16": 0.03, "Q8_0": 0.3}  # max abs logit change from rounding the weights
TIE = 1e-4  # a greedy step whose two best logits are closer than this may go either way in another engine
N_QUESTIONS = 3

# Text the tokenizers must agree on: chat markup with special tokens, words the BPE never saw, unicode
# (accents, CJK, emoji, a combining mark), runs of spaces and newlines, digits, contractions, nothing at all.
TOKENIZER_TEXTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n",
    "Zyzzyva quux flibbertigibbet antidisestablishmentarianism",
    "naïve café — 日本語のテキスト 🎉🦀 e\u0301 Ωμέγα",
    "  leading spaces,\ttabs\tand\n\n\nnewlines   trailing  ",
    "1234567 + 89 = 1234656; 3.14159",
    "I'm sure they'll say it's John's, don't you think?",
    "<|endoftext|>glued<|im_end|>text<|im_start|>",
    "",
]

# The child trains with one BLAS thread: on a busy 2-core machine OpenBLAS's own threads made the 150 steps
# take 40-70 s instead of 6 s, and torch (imported by other tests) competes for the same cores.
_TRAIN_CHILD = textwrap.dedent("""
    import sys
    from pychat_wasm.train.checkpoint import save_checkpoint
    from pychat_wasm.train.data import builtin_corpus
    from pychat_wasm.train.scratch import ScratchRun, TrainSettings
    run = ScratchRun.create(TrainSettings(preset=%r, steps=%d), builtin_corpus())
    while not run.finished:
        run.step()
    save_checkpoint(run, sys.argv[1])
""")

pytestmark = pytest.mark.slow  # every test needs the trained model; all of them together take about 40 s


# ----------------------------------------------------------------------------------------------
# Fixtures: the trained run, its three exports, the reference engines


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> ScratchRun:
    """The quick preset trained for 150 steps (in a child process, see _TRAIN_CHILD), resumed from its final
    checkpoint: the same parameters, tokenizer and data split as the run that trained them."""
    checkpoint_path = tmp_path_factory.mktemp("trained") / "quick.ckpt.npz"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    code = _TRAIN_CHILD % (SETTINGS.preset, SETTINGS.steps)
    subprocess.run([sys.executable, "-c", code, str(checkpoint_path)], check=True, cwd=str(REPO), env=env,
                   timeout=300)
    checkpoint = read_checkpoint(str(checkpoint_path))
    trained = ScratchRun.from_checkpoint(checkpoint.extra, checkpoint.params, builtin_corpus())
    restore(trained, checkpoint)
    assert trained.finished and trained.step_count == SETTINGS.steps
    losses = [record["loss"] for record in trained.log if "loss" in record]
    assert len(losses) == SETTINGS.steps and losses[-1] < losses[0] - 1.0  # it did learn something
    return trained


@pytest.fixture(scope="module")
def exports(run, tmp_path_factory) -> dict:
    """type -> path of the run's GGUF export in that type (all in one directory, for transformers)."""
    directory = tmp_path_factory.mktemp("exports")
    paths = {}
    for ggml_type in TYPES:
        paths[ggml_type] = directory / ("trained-%s.gguf" % ggml_type)
        run.gguf_writer(ggml_type).write(paths[ggml_type])
    return paths


@pytest.fixture(scope="module")
def hf_models(exports) -> dict:
    """type -> transformers' model loaded from the export of that type, float32."""
    import transformers

    models = {}
    for ggml_type, path in exports.items():
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                  dtype=torch.float32)
        models[ggml_type] = model.eval()
    return models


@pytest.fixture(scope="module")
def questions(run) -> list:
    """The first user message of the first training conversations."""
    return [c[0]["content"] for c in run.trained_on.conversations[:N_QUESTIONS]]


@pytest.fixture(scope="module")
def sequences(run, exports) -> dict:
    """name -> token ids the logits are compared on."""
    tokenizer = load_tokenizer(exports["F32"])
    conversation = run.trained_on.conversations[0]
    chat = encode_chat(tokenizer, run.template.render(conversation, add_generation_prompt=False))
    rng = np.random.default_rng(1)
    return {"chat": chat, "random": rng.integers(0, run.config.vocab_size, 96).tolist(), "one": [1]}


@pytest.fixture(scope="module")
def ours_greedy(exports, questions) -> list:
    """(prompt ids, generated ids with the end-of-turn token that stopped them) of ChatSession's greedy answers."""
    session = session_from_gguf_bytes(exports["F32"].read_bytes())
    model = Model.from_gguf(str(exports["F32"]), policy="float32")
    answers = []
    for question in questions:
        text = greedy_answer(session, [], question)
        prompt = encode_chat(session.tokenizer, session.template.render(
            [{"role": "user", "content": question}], add_generation_prompt=True))
        cached = session.model.cache.ids  # the ids whose keys and values the KV cache holds
        assert cached[:len(prompt)] == prompt
        generated = cached[len(prompt):]  # every sampled token but the end of turn is fed back
        assert text == session.tokenizer.decode(generated).strip()
        if len(generated) < GREEDY.max_tokens:  # stopped by an end-of-turn token: the argmax after the rest
            end = int(np.argmax(model.forward(prompt + generated, 0)))
            assert end in session.end_ids
            generated = generated + [end]
        answers.append((prompt, generated))
    return answers


def _llama_cpp(path: Path, jobs: list, vocab_size: int) -> list:
    return llama_cpp_results(path, jobs, timeout=120, vocab_size=vocab_size)


@pytest.fixture(scope="module")
def llama_cpp_f32(run, exports, ours_greedy, sequences) -> dict:
    """llama.cpp on the F32 export: tokenization of TOKENIZER_TEXTS, greedy continuations of the prompts of
    ours_greedy (with their teacher-forced logits), and the logits of `sequences`."""
    n_gen = GREEDY.max_tokens
    jobs = [{"text": text} for text in TOKENIZER_TEXTS]
    jobs += [{"ids": prompt, "n_gen": n_gen, "logits": True} for prompt, _ in ours_greedy]
    jobs += [{"ids": ids, "logits": True} for ids in sequences.values()]
    results = _llama_cpp(exports["F32"], jobs, run.config.vocab_size)
    n_texts, n_prompts = len(TOKENIZER_TEXTS), len(ours_greedy)
    return {"tokens": [r["tokens"] for r in results[:n_texts]],
            "greedy": [r["generated"] for r in results[n_texts:n_texts + n_prompts]],
            "prompt_logits": [np.array(r["logits"], np.float64) for r in results[n_texts:n_texts + n_prompts]],
            "logits": {name: np.array(r["logits"], np.float64)
                       for name, r in zip(sequences, results[n_texts + n_prompts:])}}


# ----------------------------------------------------------------------------------------------
# Helpers


def hf_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()  # [T, vocab]


def trainer_logits(run, params, ids) -> np.ndarray:
    logits = transformer.forward(run.config, params, np.array(ids)[None])
    return logits[0]


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def top2_gaps(logits: np.ndarray) -> np.ndarray:
    """Best minus second-best logit of each row."""
    top = np.sort(logits, axis=-1)
    return top[:, -1] - top[:, -2]


def assert_same_greedy(what: str, ours: list, theirs: list, gaps: np.ndarray) -> None:
    """The two greedy sequences must be equal, except that after a near-tie (our two best logits within TIE,
    more than the engines' measured float32 differences allow to call) they may part: then they must agree
    up to that step. gaps[i]: our top-2 gap at generated step i."""
    if ours == theirs:
        return
    part = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    gap = gaps[part] if part < len(gaps) else float("inf")
    assert gap < TIE, ("%s: greedy answers part at step %d of %d/%d where our top-2 gap is %.3g (no tie)\n"
                       "ours   %s\ntheirs %s" % (what, part, len(ours), len(theirs), gap, ours, theirs))
    print("%s: greedy answers part at a near-tie (gap %.2g) after %d equal tokens" % (what, gap, part))


# ----------------------------------------------------------------------------------------------
# 1-2. Logits and tokenizer of the F32 export


def test_f32_logits_agree_across_trainer_inference_and_transformers(run, exports, hf_models, sequences):
    ours_model = Model.from_gguf(str(exports["F32"]), policy="float32")
    report = []
    for name, ids in sequences.items():
        ours = ours_model.forward(ids, 0, all_logits=True)
        hf = hf_logits(hf_models["F32"], ids)
        trainer = trainer_logits(run, run.params, ids)
        diffs = {"ours-hf": max_diff(ours, hf), "ours-trainer": max_diff(ours, trainer),
                 "hf-trainer": max_diff(hf, trainer)}
        report.append("%s (%d tokens): %s" % (name, len(ids), diffs))
        assert max(diffs.values()) < LOGIT_TOLERANCE, report[-1]
        assert np.abs(trainer).max() > 1.0  # logits of a trained model, not of near-zero weights
    print("\n".join(report))


def test_transformers_tokenizer_from_the_export_gives_our_ids(exports):
    import transformers

    path = exports["F32"]
    hf = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = load_tokenizer(path)
    for text in TOKENIZER_TEXTS:
        ids = ours.encode(text, add_special=False, parse_special=True)
        assert hf.encode(text, add_special_tokens=False) == ids, text
        assert hf.encode(text) == ids, text  # add_bos_token is false: nothing is added
        assert ours.decode(ids) == text
    assert hf.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert hf.eos_token == "<|im_end|>"


# ----------------------------------------------------------------------------------------------
# 3-4. Greedy answers: ChatSession, transformers, llama.cpp


def test_greedy_answers_match_transformers_generate(exports, hf_models, ours_greedy):
    end_ids = sorted(session_from_gguf_bytes(exports["F32"].read_bytes()).end_ids)
    model = Model.from_gguf(str(exports["F32"]), policy="float32")
    for prompt, generated in ours_greedy:
        with torch.no_grad():
            out = hf_models["F32"].generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                                            do_sample=False, max_new_tokens=GREEDY.max_tokens,
                                            eos_token_id=end_ids, pad_token_id=end_ids[-1])
        theirs = out[0, len(prompt):].tolist()
        logits = model.forward(prompt + generated[:-1], 0, all_logits=True)[len(prompt) - 1:]
        assert_same_greedy("transformers", generated, theirs, top2_gaps(logits))


def test_llama_cpp_greedy_answers_and_logits_match_ours(exports, ours_greedy, llama_cpp_f32):
    model = Model.from_gguf(str(exports["F32"]), policy="float32")
    report = []
    for (prompt, generated), theirs, their_logits in zip(ours_greedy, llama_cpp_f32["greedy"],
                                                         llama_cpp_f32["prompt_logits"]):
        ours_logits = model.forward(prompt, 0, all_logits=True)
        report.append(max_diff(ours_logits, their_logits))
        assert report[-1] < LOGIT_TOLERANCE
        logits = model.forward(prompt + generated[:-1], 0, all_logits=True)[len(prompt) - 1:]
        assert_same_greedy("llama.cpp", generated, theirs, top2_gaps(logits))
    print("llama.cpp vs ours, prompt logits: %s" % report)


def test_llama_cpp_logits_match_ours(exports, sequences, llama_cpp_f32):
    model = Model.from_gguf(str(exports["F32"]), policy="float32")
    report = {}
    for name, ids in sequences.items():
        theirs = llama_cpp_f32["logits"][name]
        assert not np.isnan(theirs).any()  # every token's logit came back
        report[name] = max_diff(model.forward(ids, 0, all_logits=True), theirs)
    print("llama.cpp vs ours: %s" % report)
    assert max(report.values()) < LOGIT_TOLERANCE, report


def test_llama_cpp_tokenizes_like_us(exports, llama_cpp_f32):
    ours = load_tokenizer(exports["F32"])
    for text, theirs in zip(TOKENIZER_TEXTS, llama_cpp_f32["tokens"]):
        assert theirs == ours.encode(text, add_special=False, parse_special=True), text


# ----------------------------------------------------------------------------------------------
# 5. F16 and Q8_0 exports


def _stored_tensors(path: Path) -> dict:
    """name -> (raw bytes as gguf-py reads them, the values gguf-py dequantizes them to in numpy's shape)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    return {t.name: (np.asarray(t.data), np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(
        tuple(int(d) for d in reversed(t.shape)))) for t in GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("ggml_type", ["F16", "Q8_0"])
def test_quantized_exports_hold_the_nearest_values_and_run_alike(run, exports, hf_models, sequences,
                                                                 ggml_type):
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    path = exports[ggml_type]
    tensors = _stored_tensors(path)
    assert set(tensors) == set(run.params)
    for name, trained in run.params.items():
        raw, values = tensors[name]
        if trained.ndim == 1:  # norms stay F32
            np.testing.assert_array_equal(values, trained)
        else:  # the bytes of gguf-py's quantizer, which is bit-exact with ggml's reference (ggml-quants.c)
            reference = quantize(trained, GGMLQuantizationType[ggml_type])
            assert np.array_equal(raw.view(np.uint8).ravel(), reference.view(np.uint8).ravel()), name
    stored = {name: values for name, (_, values) in tensors.items()}

    ours_model = Model.from_gguf(str(path), policy="float32")
    f32_model = Model.from_gguf(str(exports["F32"]), policy="float32")
    llama_cpp = _llama_cpp(path, [{"ids": ids, "logits": True} for ids in sequences.values()], run.config.vocab_size)
    report = []
    for (name, ids), their in zip(sequences.items(), llama_cpp):
        ours = ours_model.forward(ids, 0, all_logits=True)
        hf = hf_logits(hf_models[ggml_type], ids)
        trainer = trainer_logits(run, stored, ids)  # the trainer's forward on the stored weights
        diffs = {"ours-hf": max_diff(ours, hf), "ours-trainer": max_diff(ours, trainer),
                 "vs-F32": max_diff(ours, f32_model.forward(ids, 0, all_logits=True)),
                 "llama.cpp": max_diff(ours, np.array(their["logits"], np.float64))}
        report.append("%s %s: %s" % (ggml_type, name, diffs))
        assert diffs["ours-hf"] < LOGIT_TOLERANCE and diffs["ours-trainer"] < LOGIT_TOLERANCE, report[-1]
        # What rounding the weights does to the logits, F16 and Q8_0 against F32 (measured on the random ids:
        # 0.006 and 0.07, logits up to about 6). llama.cpp on the same file rounds the activations too (to F16,
        # or to Q8_0 blocks for Q8_0 weights): it differs from us by as much again (measured 0.005 and 0.14).
        assert diffs["vs-F32"] < QUANTIZATION_TOLERANCE[ggml_type], report[-1]
        assert diffs["llama.cpp"] < 2 * QUANTIZATION_TOLERANCE[ggml_type], report[-1]
    print("\n".join(report))


# ----------------------------------------------------------------------------------------------
# 6. Metadata


@pytest.mark.parametrize("ggml_type", TYPES)
def test_export_metadata_and_tensor_types_are_what_llama_cpp_reads(run, exports, ggml_type):
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

    reader = GGUFReader(str(exports[ggml_type]))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    value_types = {name: field.types[0] for name, field in reader.fields.items()}
    cfg = run.config
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == run.settings.name
    assert fields["general.file_type"] == FILE_TYPES[ggml_type]
    expected = {"context_length": cfg.trained_context_length, "embedding_length": cfg.dim,
                "block_count": cfg.n_layers, "feed_forward_length": cfg.ffn_dim,
                "attention.head_count": cfg.n_heads, "attention.head_count_kv": cfg.n_kv_heads,
                "rope.dimension_count": cfg.head_dim, "vocab_size": cfg.vocab_size}
    for key, value in expected.items():
        assert fields["llama." + key] == value, key
        assert value_types["llama." + key] == GGUFValueType.UINT32, key
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.rms_eps, rel=1e-6)
    assert fields["llama.rope.freq_base"] == pytest.approx(cfg.rope_base)
    assert (cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim) == (64, 4, 2, 192)  # the quick preset

    vocabulary = run.vocabulary
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.tokens"] == list(vocabulary.tokens)
    assert len(vocabulary.tokens) == cfg.vocab_size
    assert fields["tokenizer.ggml.token_type"] == list(vocabulary.token_types)
    assert value_types["tokenizer.ggml.token_type"] == GGUFValueType.ARRAY
    assert reader.fields["tokenizer.ggml.token_type"].types[1] == GGUFValueType.INT32
    assert fields["tokenizer.ggml.merges"] == list(vocabulary.merges) and len(vocabulary.merges) > 100
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens[fields["tokenizer.ggml.bos_token_id"]] == "<|im_start|>"
    assert tokens[fields["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert tokens[fields["tokenizer.ggml.padding_token_id"]] == "<|im_end|>"
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        assert value_types["tokenizer.ggml." + key] == GGUFValueType.UINT32, key
    assert value_types["tokenizer.ggml.add_bos_token"] == GGUFValueType.BOOL
    assert not fields["tokenizer.ggml.add_bos_token"]
    assert fields["tokenizer.chat_template"] == CHATML_TEMPLATE

    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: the embedding is the output head
    assert set(tensors) == set(run.params)
    for name, t in tensors.items():
        shape = tuple(int(d) for d in reversed(t.shape))
        assert shape == run.params[name].shape, name
        if len(shape) == 1:
            want = GGMLQuantizationType.F32  # norms stay F32
        elif ggml_type == "Q8_0":
            want = GGMLQuantizationType.Q8_0 if shape[1] % 32 == 0 else GGMLQuantizationType.F32
        else:
            want = GGMLQuantizationType[ggml_type]
        assert t.tensor_type == want, name
    if ggml_type == "Q8_0":  # every matrix of the quick preset has rows that are a multiple of 32 long
        assert sum(t.tensor_type == GGMLQuantizationType.Q8_0 for t in tensors.values()) == 1 + 7 * cfg.n_layers
