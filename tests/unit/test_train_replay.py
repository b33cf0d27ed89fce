"""Replay (pychat_wasm/train/replay.py): the base model's own answers to general questions, learned beside the
user's conversations so that fine-tuning keeps them.

The bases are tiny_models.write_tiny_gguf's payload models, whose greedy answer to anything is known from how
they are built: the payload once and then <|im_end|> (then_stop), or the payload over and over until the
length limit. So the tests know what replay must keep without any captured output:
    - answers that end by themselves are kept, question for question; answers that run on are dropped;
    - replayed answers are training examples (never validation), encoded like the user's conversations, and
      a checkpoint carries them: the resumed run is the same run;
    - the questions share none with the evaluation files, so the general questions checked after
      fine-tuning are held out; `pychat-wasm finetune` says what it replayed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import write_tiny_gguf

from pychat_wasm.errors import InvalidSettingError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.train.checkpoint import checkpoint_bytes, read_checkpoint, restore
from pychat_wasm.train.data import DATA_DIR, TrainingData, encode_conversation
from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings
from pychat_wasm.train.finetune_plan import MIN_VALIDATION, REPLAY_QUESTIONS
from pychat_wasm.train.replay import ReplayAnswers, replay_plan, replay_questions

REPO = Path(__file__).resolve().parents[2]
EVALUATION_FILES = [Path(DATA_DIR) / "finetune_eval.json", REPO / "examples" / "finetune_small" / "own_eval.json"]
ANSWER = "Paris."


@pytest.fixture(scope="module")
def stopping_base(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("replay") / "stops.gguf", " " + ANSWER, then_stop=True)


def answer_all(replay: ReplayAnswers) -> list:
    """answer_all; the `answered` count after each answer."""
    counts = []
    replay.answer_all(lambda answered, total: counts.append(answered))
    return counts


def chats(n: int):
    return [[{"role": "user", "content": "What is %d and %d?" % (i, i)},
             {"role": "assistant", "content": "It is %d." % (2 * i)}] for i in range(n)]


def test_answers_that_end_are_kept_question_for_question(stopping_base):
    replay = ReplayAnswers(replay_plan(GGUFFile.open(str(stopping_base))), 5)
    assert answer_all(replay) == [1, 2, 3, 4, 5]
    assert replay.conversations == [[{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]
                                    for q in replay_questions()[:5]]


def test_answers_that_run_past_the_limit_are_dropped(tmp_path):
    replay = ReplayAnswers(replay_plan(GGUFFile.open(str(write_tiny_gguf(tmp_path / "runs_on.gguf", " on")))), 3)
    assert answer_all(replay) == [1, 2, 3]
    assert replay.conversations == []


def test_no_replay_asks_nothing(stopping_base):
    replay = ReplayAnswers(replay_plan(GGUFFile.open(str(stopping_base))), 0)
    assert replay.finished and answer_all(replay) == [] and replay.conversations == []


@pytest.mark.parametrize("count", [-1, len(replay_questions()) + 1])
def test_a_count_outside_the_questions_is_refused(stopping_base, count):
    with pytest.raises(InvalidSettingError, match="replay takes 0 to %d questions, got %d"
                                                  % (len(replay_questions()), count)):
        ReplayAnswers(replay_plan(GGUFFile.open(str(stopping_base))), count)
    with pytest.raises(InvalidSettingError, match="replay must be 0 or more"):
        FinetuneSettings(replay=-1)


def test_replay_questions_are_held_out_from_the_evaluation_files():
    questions = replay_questions()
    assert len(questions) == len(set(questions)) == REPLAY_QUESTIONS
    evaluated = {item["question"].strip().lower() for path in EVALUATION_FILES
                 for items in json.loads(path.read_text()).values() for item in items}
    assert len(evaluated) > 20
    assert not evaluated & {q.strip().lower() for q in questions}


def test_replayed_answers_train_beside_the_data_and_a_checkpoint_keeps_them(stopping_base):
    gguf = GGUFFile.open(str(stopping_base))
    replay = ReplayAnswers(replay_plan(gguf), 4)
    answer_all(replay)
    data = TrainingData([], chats(MIN_VALIDATION))  # 40 chats: two are held out for validation
    settings = FinetuneSettings(rank=2, batch_size=4, epochs=2, seq_len=64, lr=1e-2, replay=4)
    whole = FinetuneRun(settings, gguf, data, replay=replay.conversations)
    phase = whole.phases[0]
    assert len(phase.examples) == 38 + 4 and len(phase.validation) == 2
    assert whole.total_steps == 2 * 11
    for example, conversation in zip(phase.examples[38:], replay.conversations):
        expected = encode_conversation(whole.tokenizer, whole.template, conversation)
        assert example.ids == expected.ids and example.mask == expected.mask
    while not whole.finished:
        whole.step()

    first = FinetuneRun(settings, gguf, data, replay=replay.conversations)
    for _ in range(5):
        first.step()
    saved = read_checkpoint(checkpoint_bytes(first))
    assert saved.extra["replay"] == replay.conversations
    resumed = FinetuneRun.from_checkpoint(saved.extra, saved.params, gguf, data)
    restore(resumed, saved)
    assert resumed.replay == replay.conversations and resumed.fingerprint() == whole.fingerprint()
    while not resumed.finished:
        resumed.step()
    for name in whole.trainable:
        np.testing.assert_array_equal(resumed.params[name], whole.params[name])


@pytest.mark.slow
def test_cli_finetune_says_what_it_replayed(stopping_base, tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats(4)))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "pychat_wasm.cli", "finetune", str(stopping_base), "--data",
                             str(data), "--out", str(tmp_path / "tuned.gguf"), "--replay", "3", "--epochs", "1",
                             "--batch", "2", "--seq-len", "64"],
                            cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "replay: the base model answered 3 of 3 general questions within 48 tokens" in result.stderr
    assert "4 conversations + 3 replayed, at most 4 steps" in result.stderr  # 7 examples at batch 2


def test_the_training_worker_reports_each_replay_answer_before_the_run_starts(stopping_base):
    from pychat_wasm.browser import train_worker as worker_api

    calls = []
    text = "".join(json.dumps({"messages": c}) + "\n" for c in chats(4))
    options = {"replay": 3, "epochs": 1, "seq_len": 64, "batch_size": 2}
    reply = json.loads(worker_api.begin_finetune(np.fromfile(str(stopping_base), np.uint8), "stops.gguf",
                                                 json.dumps(options), json.dumps([{"name": "c.jsonl", "text": text}]),
                                                 lambda answered, total: calls.append((answered, total))))
    assert reply["ok"], reply
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert reply["phases"] == [{"name": "finetune", "steps": 4, "examples": 4 + 3}]
