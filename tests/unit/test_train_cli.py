"""`pychat-wasm train`: a short run writes a model that loads and chats, its log and its loss chart; Ctrl-C
stops at a checkpoint that `--resume` continues to exactly the model an uninterrupted run writes; user
mistakes end with one line "error: ..." and exit code 1."""
from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import gguf
import pytest

from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.train.checkpoint import save_checkpoint
from pychat_wasm.train.data import builtin_corpus
from pychat_wasm.train.scratch import ScratchRun, TrainSettings

REPO = Path(__file__).resolve().parents[2]
RUSTGPT = REPO / "examples" / "rustgpt_small"
CLI = [sys.executable, "-m", "pychat_wasm.cli"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# One BLAS thread: the matrices are tiny, and threads that spin-wait make two trainings at once (and a busy CI
# machine) several times slower. Float32 sums depend on the thread count, so every run here uses the same one.
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run(*args, timeout=300):
    return subprocess.run(CLI + [str(a) for a in args], cwd=str(REPO), env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def tensors(path):
    """name -> (type, shape, raw bytes) of every tensor, as gguf-py reads the file."""
    return {t.name: (t.tensor_type.name, [int(d) for d in t.shape], t.data.tobytes())
            for t in gguf.GGUFReader(str(path)).tensors}


def step_records(log_path):
    return [r for r in json.loads(log_path.read_text()) if "loss" in r]


@pytest.mark.slow
def test_train_on_rustgpt_data_writes_model_log_chart_and_chats(tmp_path):
    out = tmp_path / "m.gguf"
    result = run("train", "--out", out, "--preset", "quick", "--steps", 40, "--pretrain-data",
                 RUSTGPT / "pretraining_data.json", "--chat-data", RUSTGPT / "chat_training_data.json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "data: 25 documents, 50 chats" in result.stderr
    assert re.search(r"chat +\[#{20}\] +40/40", result.stderr)  # the last progress line, not a terminal
    assert "pychat-wasm chat %s" % out in result.stderr

    model = GGUFFile.open(str(out))
    assert model.metadata["general.architecture"] == "llama"
    assert model.metadata["tokenizer.ggml.model"] == "gpt2"
    assert "<|im_start|>" in model.metadata["tokenizer.chat_template"]
    reader = gguf.GGUFReader(str(out))
    assert len(reader.tensors) == len(model.tensors) and "token_embd.weight" in {t.name for t in reader.tensors}

    records = step_records(tmp_path / "m.log.json")
    assert [r["step"] for r in records] == list(range(1, 41))
    assert [r["phase"] for r in records] == ["pretrain"] * 8 + ["chat"] * 32
    assert all(math.isfinite(r["loss"]) and r["tokens"] > 0 and r["lr"] > 0 for r in records)
    validations = [r["validation"] for r in json.loads((tmp_path / "m.log.json").read_text()) if "loss" not in r]
    assert [(v["phase"], v["step"]) for v in validations] == [("pretrain", 8), ("chat", 40)]
    assert (tmp_path / "m.loss.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not (tmp_path / "m.ckpt.npz").exists()  # a finished run leaves no checkpoint behind

    answer = run("chat", out, "--prompt", "What color is the barn?", "--temperature", "0", "-n", 5)
    assert answer.returncode == 0, answer.stderr
    assert "Traceback" not in answer.stderr
    generated = re.search(r"\| (\d+) tokens, [\d.]+ tok/s", answer.stderr)
    assert generated and 0 <= int(generated.group(1)) <= 5, answer.stderr


class Training:
    """`pychat-wasm train` in a subprocess whose stderr is read line by line as it comes."""

    def __init__(self, *args):
        self.process = subprocess.Popen(CLI + ["train"] + [str(a) for a in args], cwd=str(REPO), env=ENV,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern, timeout):
        """The first line (from now) that matches; fails if the process ends or the time runs out first."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                pytest.fail("no line matching %r within %d s; stderr so far:\n%s"
                            % (pattern, timeout, "".join(self.lines)))
            if line is None:
                pytest.fail("training ended before printing %r:\n%s" % (pattern, "".join(self.lines)))
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def finish(self, timeout=600):
        code = self.process.wait(timeout=timeout)
        while True:
            line = self._queue.get(timeout=30)
            if line is None:
                return code, "".join(self.lines)
            self.lines.append(line)


@pytest.fixture
def start_training():
    """Training(*args), ended at teardown if a failed test leaves it running."""
    started = []
    yield lambda *args: started.append(Training(*args)) or started[-1]
    for training in started:
        if training.process.poll() is None:
            training.process.kill()
            training.process.wait()


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_resume_gives_the_uninterrupted_model(tmp_path, start_training):
    steps = 100  # pretraining is the first 20 of them
    interrupted, uninterrupted = tmp_path / "interrupted", tmp_path / "uninterrupted"
    interrupted.mkdir()
    uninterrupted.mkdir()
    args = ["--preset", "quick", "--steps", steps, "--checkpoint-every", 1000]
    reference = start_training("--out", uninterrupted / "m.gguf", *args)  # at the same time: they do not interact
    training = start_training("--out", interrupted / "m.gguf", *args)
    training.wait_for(r"^pretrain validation loss", timeout=300)  # printed after the last pretraining step
    training.process.send_signal(signal.SIGINT)
    code, stderr = training.finish()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    stopped = re.search(r"stopped at step (\d+) of %d; the checkpoint is (\S+): continue with the same command "
                        r"and --resume (\S+)" % steps, stderr)
    assert stopped, stderr
    checkpoint = interrupted / "m.ckpt.npz"
    assert 20 <= int(stopped.group(1)) < steps and stopped.group(2) == stopped.group(3) == str(checkpoint)
    assert checkpoint.exists() and not (interrupted / "m.gguf").exists()
    assert len(step_records(interrupted / "m.log.json")) == int(stopped.group(1))  # log and chart so far
    assert (interrupted / "m.loss.png").read_bytes()[:8] == PNG_SIGNATURE

    resumed = run("train", "--out", interrupted / "m.gguf", *args, "--resume", checkpoint)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step %s of %d" % (stopped.group(1), steps) in resumed.stderr
    assert "trained %d steps" % (steps - int(stopped.group(1))) in resumed.stderr

    code, stderr = reference.finish()
    assert code == 0, stderr
    expected = tensors(uninterrupted / "m.gguf")
    assert len(expected) > 10
    assert tensors(interrupted / "m.gguf") == expected
    assert (interrupted / "m.gguf").read_bytes() == (uninterrupted / "m.gguf").read_bytes()
    resumed_log, reference_log = step_records(interrupted / "m.log.json"), step_records(uninterrupted / "m.log.json")
    assert [r["loss"] for r in resumed_log] == [r["loss"] for r in reference_log]
    assert len(reference_log) == steps


@pytest.fixture(scope="module")
def foreign_checkpoint(tmp_path_factory):
    """A checkpoint of a short run on the shipped corpus."""
    path = tmp_path_factory.mktemp("checkpoint") / "other.ckpt.npz"
    run_ = ScratchRun.create(TrainSettings(preset="quick", steps=4), builtin_corpus())
    run_.step()
    save_checkpoint(run_, str(path))
    return path


def write(path, contents):
    path.write_bytes(contents)
    return path


ERRORS = {
    "missing data file": (lambda d: ["--pretrain-data", d / "missing.json"], "cannot read %(dir)s/missing.json"),
    "bad data file": (lambda d: ["--chat-data", write(d / "bad.json", b"[1, 2")],
                      "bad.json looks like JSON but does not parse"),
    "data without an answer": (lambda d: ["--chat-data", write(d / "q.jsonl", b'{"messages": [{"role": "user", '
                                                                              b'"content": "hi"}]}')],
                               "q.jsonl, line 1: a conversation without an assistant message"),
    "data file is a directory": (lambda d: ["--pretrain-data", d], "cannot read %(dir)s"),
    "deeply nested json": (lambda d: ["--pretrain-data", write(d / "deep.json", b"[" * 100000 + b"]" * 100000)],
                           "deep.json looks like JSON but does not parse nests JSON too deeply to read"),
    "zero steps": (lambda d: ["--steps", 0], "steps must be at least 1, got 0"),
    "zero checkpoint interval": (lambda d: ["--checkpoint-every", 0], "--checkpoint-every must be at least 1"),
    "resume a text file": (lambda d: ["--resume", write(d / "notes.txt", b"hello")],
                           "notes.txt is not a pychat-wasm checkpoint"),
    "resume a gguf file": (lambda d: ["--resume", write(d / "x.gguf", b"GGUF\x03\x00\x00\x00" + bytes(100))],
                           "x.gguf is not a pychat-wasm checkpoint"),
    "resume a missing checkpoint": (lambda d: ["--resume", d / "gone.ckpt.npz"], "cannot read"),
    "out is a directory": (lambda d: ["--out", d], "--out must be a file name such as my.gguf, not a directory"),
    "out in a missing directory": (lambda d: ["--out", d / "nowhere" / "m.gguf"], "does not exist"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_are_one_clean_line(tmp_path, name):
    options, message = ERRORS[name]
    args = options(tmp_path)
    if "--out" not in args:
        args = ["--out", tmp_path / "m.gguf"] + args
    result = run("train", "--preset", "quick", *args)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message % {"dir": tmp_path} in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.gguf").exists()


def test_resume_with_other_data_is_refused(tmp_path, foreign_checkpoint):
    result = run("train", "--out", tmp_path / "m.gguf", "--resume", foreign_checkpoint,
                 "--pretrain-data", RUSTGPT / "pretraining_data.json")
    assert result.returncode == 1
    assert result.stderr == ("error: this checkpoint was made with other data or settings: resume with the same data "
                             "files and options as the run that wrote it\n")


def test_resume_of_a_finetune_checkpoint_is_refused(tmp_path):
    run_ = ScratchRun.create(TrainSettings(preset="quick", steps=2), builtin_corpus())
    run_.kind = "finetune"
    save_checkpoint(run_, str(tmp_path / "ft.ckpt.npz"))
    result = run("train", "--out", tmp_path / "m.gguf", "--resume", tmp_path / "ft.ckpt.npz")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "ft.ckpt.npz was written by a finetune run, not by pychat-wasm train" in result.stderr
