"""LoRA adapters through the doors: `pychat-wasm finetune --lora-out`, `pychat-wasm chat --lora/--lora-scale`,
`LLM(..., lora=[...])` and the browser worker's apply_lora / remove_lora.

The base is tiny_models' llama with a chat vocabulary, so conversations encode and turns run. What an adapter
computes is checked against PEFT and llama.cpp in tests/oracle/test_lora_adapter.py; here the reference for
"applied" is the merged export of the same run, which transformers and llama.cpp check in test_finetune.py, and
gguf-py reads the adapter file.
"""
from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

from pychat_wasm import LLM
from pychat_wasm.browser import chat_worker as worker_api
from pychat_wasm.cli.main import main
from pychat_wasm.errors import AdapterMismatchError, InvalidSettingError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.model.forward import Model
from pychat_wasm.model.lora import open_adapters

from tiny_models import write_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:unknown pre-tokenizer:UserWarning")
TOKENS = [1, 40, 41, 87, 200, 7]
LOGIT_TOL = 1e-4
TRAIN_FLAGS = ["--epochs", "2", "--batch", "2", "--seq-len", "48", "--replay", "0", "--lr", "0.05"]


def chats(n: int):
    return [[{"role": "user", "content": "%d+%d?" % (i, i)},
             {"role": "assistant", "content": "It is %d." % (2 * i)}] for i in range(n)]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    """One `finetune` run writing both the merged model and the adapter; the base and another base."""
    folder = tmp_path_factory.mktemp("lora_doors")
    paths = {"base": write_tiny_model(folder / "base.gguf", "llama", chat=True),
             "other": write_tiny_model(folder / "other.gguf", "llama", seed=1, chat=True),
             "data": folder / "chats.jsonl", "merged": folder / "tuned.gguf", "adapter": folder / "tuned.lora.gguf"}
    paths["data"].write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats(4)))
    code = main(["finetune", str(paths["base"]), "--data", str(paths["data"]), "--out", str(paths["merged"]),
                 "--lora-out", str(paths["adapter"])] + TRAIN_FLAGS)
    assert code == 0
    return paths


def logits(model: Model) -> np.ndarray:
    return model.forward(TOKENS, 0, all_logits=True)


def test_finetune_writes_the_adapter_beside_the_merged_model(tuned):
    reader = gguf.GGUFReader(str(tuned["adapter"]))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    names = {t.name for t in reader.tensors}
    assert len(names) == 2 * 2 * 7  # A and B, 2 layers, attention's 4 and the MLP's 3 matrices (the targets
    #                                 train/finetune_plan.py chooses for a file of a few conversations)
    assert "blk.1.attn_output.weight.lora_b" in names
    with_adapter = LLM(tuned["base"], lora=[tuned["adapter"]], policy="float32")
    merged = Model.from_gguf(str(tuned["merged"]), policy="float32")
    base = Model.from_gguf(str(tuned["base"]), policy="float32")
    adapted = logits(with_adapter.session.model)
    assert np.abs(adapted - logits(merged)).max() < LOGIT_TOL
    assert np.abs(adapted - logits(base)).max() > 100 * LOGIT_TOL  # the training moved them
    half = LLM(tuned["base"], lora=[(tuned["adapter"], 0.5)], policy="float32")
    assert np.abs(logits(half.session.model) - adapted).max() > 100 * LOGIT_TOL


def test_finetune_can_write_the_adapter_alone(tuned, tmp_path, capsys):
    out = tmp_path / "alone.lora.gguf"
    code = main(["finetune", str(tuned["base"]), "--data", str(tuned["data"]), "--lora-out", str(out)]
                + TRAIN_FLAGS)
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.lora.gguf", "alone.lora.log.json",
                                                          "alone.lora.loss.png"]
    assert "wrote %s (" % out in err and "pychat-wasm chat %s --lora %s" % (tuned["base"], out) in err
    alone, both = ({t.name: t.data.tobytes() for t in gguf.GGUFReader(str(p)).tensors} for p in (out, tuned["adapter"]))
    assert alone == both  # the same seed and data: the same adapter


@pytest.mark.parametrize("args, message", [
    (["--lora-out", "{tmp}/a.gguf", "--full"], "--lora-out writes LoRA adapters, and --full trains every weight"),
    ([], "give --out MODEL.gguf, --lora-out ADAPTER.gguf or both"),
    (["--lora-out", "{tmp}/missing/a.gguf"], "the directory of --lora-out {tmp}/missing/a.gguf does not exist"),
])
def test_finetune_output_mistakes_are_one_line(tuned, tmp_path, capsys, args, message):
    code = main(["finetune", str(tuned["base"]), "--data", str(tuned["data"])]
                + [a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: " + message.format(tmp=tmp_path)) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_chat_applies_adapters_with_their_scales(tuned, capsys):
    def answer(*args):
        assert main(["chat", *map(str, args), "--prompt", "1+1?", "--temperature", "0", "-n", "6"]) == 0
        return capsys.readouterr().out

    merged = answer(tuned["merged"])
    assert answer(tuned["base"], "--lora", tuned["adapter"]) == merged
    assert answer(tuned["base"], "--lora", tuned["adapter"], "--lora-scale", "0.5", "--lora", tuned["adapter"],
                  "--lora-scale", "0.5") == merged  # two halves make one whole
    assert answer(tuned["base"]) != merged


def test_chat_refuses_an_adapter_for_another_base(tuned, capsys):
    assert main(["chat", str(tuned["other"]), "--lora", str(tuned["adapter"]), "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: %s was made for" % tuned["adapter"]) and "not for %s" % tuned["other"] in err
    with pytest.raises(SystemExit) as stopped:
        main(["chat", str(tuned["base"]), "--lora-scale", "2"])
    assert stopped.value.code == 2
    assert "--lora-scale sets the scale of the --lora before it" in capsys.readouterr().err


@pytest.mark.parametrize("lora, error, message", [
    ("one.gguf", InvalidSettingError, "lora must be a list"),
    ([("{adapter}", "half")], InvalidSettingError, "a LoRA scale must be a finite number, got 'half'"),
    ([("{adapter}", float("nan"))], InvalidSettingError, "a LoRA scale must be a finite number"),
    ([3], InvalidSettingError, "each lora item must be an adapter file or a \\(file, scale\\) pair"),
])
def test_llm_refuses_bad_lora_arguments(tuned, lora, error, message):
    lora = lora if isinstance(lora, str) else [tuple(v.format(adapter=tuned["adapter"]) if isinstance(v, str)
                                                     else v for v in item) if isinstance(item, tuple) else item
                                               for item in lora]
    with pytest.raises(error, match=message):
        LLM(tuned["base"], lora=lora)


def test_llm_refuses_an_adapter_for_another_base(tuned):
    with pytest.raises(AdapterMismatchError, match="was made for .* not for .*other.gguf"):
        LLM(tuned["other"], lora=[tuned["adapter"]])


# ---- the browser worker --------------------------------------------------------------------------------------


def call(function, *args):
    return json.loads(function(*args))


def worker_logits() -> np.ndarray:
    return logits(worker_api._worker.session.model)


def test_the_worker_applies_and_removes_adapters_without_reloading(tuned):
    assert call(worker_api.load_model, np.fromfile(str(tuned["base"]), np.uint8), "base.gguf",
                json.dumps({"policy": "float32"}))["ok"]
    weights = worker_api._worker.session.model._unadapted
    before = worker_logits()
    adapter = np.fromfile(str(tuned["adapter"]), np.uint8)
    reply = call(worker_api.apply_lora, adapter, "tuned.lora.gguf", 1.0)
    assert reply == {"ok": True, "adapters": [{"name": "tuned.lora.gguf", "scale": 1.0, "alpha": 16.0, "rank": 8,
                                                "tensors": 14, "base_name": "tiny-random-llama"}]}
    merged = logits(Model.from_gguf(str(tuned["merged"]), policy="float32"))
    assert np.abs(worker_logits() - merged).max() < LOGIT_TOL
    reply = call(worker_api.apply_lora, adapter, "tuned.lora.gguf", 0.5)  # the same name: a new scale
    assert [a["scale"] for a in reply["adapters"]] == [0.5]
    assert call(worker_api.remove_lora, "tuned.lora.gguf") == {"ok": True, "adapters": []}
    np.testing.assert_array_equal(worker_logits(), before)  # exactly the base again
    assert worker_api._worker.session.model._unadapted is weights  # the same weights all along


def test_the_worker_refuses_adapters_as_data(tuned):
    assert call(worker_api.load_model, np.fromfile(str(tuned["other"]), np.uint8), "other.gguf")["ok"]
    before = worker_logits()
    reply = call(worker_api.apply_lora, np.fromfile(str(tuned["adapter"]), np.uint8), "tuned.lora.gguf")
    assert not reply["ok"] and reply["error"]["type"] == "AdapterMismatchError" and reply["error"]["has_model"]
    assert reply["error"]["message"].startswith("tuned.lora.gguf was made for tiny-random-llama (sha256 ")
    reply = call(worker_api.apply_lora, np.fromfile(str(tuned["other"]), np.uint8), "other.gguf")
    assert reply["error"]["type"] == "AdapterError" and "is not a LoRA adapter" in reply["error"]["message"]
    reply = call(worker_api.remove_lora, "nothing.gguf")
    assert {key: reply["error"][key] for key in ("type", "message", "has_model", "status")} == {
        "type": "InvalidSettingError", "message": "no adapter named nothing.gguf is applied", "has_model": True,
        "status": 400}
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    assert call(worker_api.begin_request, "chat.completions", json.dumps(body))["ok"]
    reply = call(worker_api.remove_lora, "")
    assert reply["error"]["message"] == "an answer is being written: stop it before applying or removing an adapter"
    while not call(worker_api.next_chunk).get("done"):
        pass
    assert call(worker_api.remove_lora, "") == {"ok": True, "adapters": []}
    np.testing.assert_array_equal(worker_logits(), before)


def test_the_fit_check_tells_an_adapter_from_a_model(tuned):
    """The page asks check_fit what a dropped file is: an adapter answers with its header, as gguf-py reads it."""
    data = np.fromfile(str(tuned["adapter"]), np.uint8)
    reply = call(worker_api.check_fit, data[:4096], data.size, json.dumps({"name": "tuned.lora.gguf"}))
    fields = gguf.GGUFReader(str(tuned["adapter"])).fields

    def value(key):
        return fields[key].contents()

    assert reply == {"ok": True, "adapter": {
        "architecture": value("general.architecture"), "alpha": value("adapter.lora.alpha"),
        "base_name": value("general.base_model.0.name"), "base_sha256": value("pychat_wasm.base.sha256")}}
    assert "fit" in call(worker_api.check_fit, np.fromfile(str(tuned["base"]), np.uint8)[:65536],
                         tuned["base"].stat().st_size)


def test_the_training_worker_saves_the_adapter(tuned, tmp_path):
    from pychat_wasm.browser import train_worker

    options = {"epochs": 1, "replay": 0, "seq_len": 48, "batch_size": 2, "lr": 0.05}
    files = [{"name": "chats.jsonl", "text": tuned["data"].read_text()}]
    reply = call(train_worker.begin_finetune, np.fromfile(str(tuned["base"]), np.uint8), "base.gguf",
                 json.dumps(options), json.dumps(files))
    assert reply["ok"], reply
    while not call(train_worker.train_for, 5.0)["finished"]:
        pass
    data = train_worker.adapter_bytes("mine")
    (tmp_path / "mine.gguf").write_bytes(data)
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "mine.gguf")).tensors}
    run = train_worker._training.run
    assert set(stored) == {n.replace(".lora_", ".weight.lora_") for n in run.trainable}
    for name in run.trainable:
        np.testing.assert_array_equal(stored[name.replace(".lora_", ".weight.lora_")], run.params[name])
    adapter = GGUFFile(np.frombuffer(data, np.uint8), name="mine.gguf")
    assert open_adapters(GGUFFile.open(str(tuned["base"])), [(adapter, 1.0)])  # made for this base
    with pytest.raises(AdapterMismatchError):
        open_adapters(GGUFFile.open(str(tuned["other"])), [(adapter, 1.0)])
