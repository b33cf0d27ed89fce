"""The fine-tuning plan (pychat_wasm/train/finetune_plan.py): defaults that follow the size of the user's data.

    - choose_plan: no validation split below MIN_VALIDATION conversations, 5% from there on; replay questions
      and the answers trained on capped relative to the training conversations; at least MIN_PASSES passes,
      more for a small file up to MAX_PASSES; given epochs and replay win;
    - a run on the tiny chat model (tests/support/tiny_models.py, random weights: it knows none of the answers)
      with three question/answer pairs and more replayed conversations than the cap: no example held out, the
      replay capped, and the run stops early, not before MIN_PASSES passes, once its answers come back; the
      exported model then gives every training answer exactly through the chat engine (evaluate.answer_report
      against the data itself);
    - `pychat-wasm finetune` prints the plan first.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import write_tiny_model

from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.train.data import TrainingData
from pychat_wasm.train.evaluate import answer_report, session_from_gguf_bytes
from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings
from pychat_wasm.train.finetune_plan import (MAX_PASSES, MIN_PASSES, MIN_VALIDATION, PRESENTATIONS,
                                             REPLAY_QUESTIONS, REPLAY_SHARE, choose_plan)

REPO = Path(__file__).resolve().parents[2]
# tiny_models writes no tokenizer.ggml.pre: the tokenizer says so and uses GPT-2's
pytestmark = pytest.mark.filterwarnings("ignore:unknown pre-tokenizer:UserWarning")

TAUGHT = [[{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Ana."}],
          [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Oslo."}],
          [{"role": "user", "content": "When?"}, {"role": "assistant", "content": "May."}]]
REPLAYED = [[{"role": "user", "content": "Q%d?" % i}, {"role": "assistant", "content": "A%d." % i}] for i in range(8)]


@pytest.fixture(scope="module")
def text_base(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("plan") / "text.gguf", "llama", chat=True)


def test_a_small_file_keeps_every_example_and_gets_more_passes():
    plan = choose_plan(6, [12] * 6)
    assert plan.held_out == 0 and plan.trained == 6
    assert plan.replay_cap == int(6 * REPLAY_SHARE) and plan.replay_questions == min(REPLAY_QUESTIONS, 2 * plan.replay_cap)
    assert plan.passes == MAX_PASSES == min(MAX_PASSES, round(PRESENTATIONS / 6))
    assert plan.steps(replayed=6) == MAX_PASSES * 3  # 12 examples a pass in batches of 4


def test_validation_begins_at_the_threshold_and_passes_never_go_below_the_minimum():
    assert choose_plan(MIN_VALIDATION - 1).held_out == 0
    assert choose_plan(MIN_VALIDATION).held_out == 2  # every 20th: 5%
    large = choose_plan(1000)
    assert large.held_out == 50 and large.passes == MIN_PASSES
    assert large.replay_questions == REPLAY_QUESTIONS and large.replay_cap == 950


def test_given_epochs_and_replay_win():
    plan = choose_plan(6, epochs=3, replay=10, early_stop=False)
    assert (plan.passes, plan.replay_questions, plan.replay_cap, plan.early_stop) == (3, 10, None, False)
    assert plan.replay_used(REPLAYED) == REPLAYED


def test_three_pairs_are_learned_exactly_and_the_run_stops_early(text_base):
    settings = FinetuneSettings(rank=8, targets="attn+mlp", lr=1e-2, seq_len=48, batch_size=2)
    run = FinetuneRun(settings, GGUFFile.open(str(text_base)), TrainingData([], TAUGHT), replay=REPLAYED)
    assert run.held_out.conversations == [] and run.trained_on.conversations == TAUGHT
    assert run.replay_used == REPLAYED[:3]  # one replayed answer per training conversation
    assert len(run.phases[0].examples) == 6 and run.steps_per_pass == 3
    planned = run.total_steps
    assert planned == MAX_PASSES * 3
    while not run.finished:
        run.step()
    assert run.stopped_early and MIN_PASSES * 3 < run.step_count < planned and run.total_steps == run.step_count
    checks = [entry["check"] for entry in run.log if "check" in entry]
    assert checks[0]["step"] == MIN_PASSES * 3 and checks[-1]["exact"] == checks[-1]["checked"] == 3
    session = session_from_gguf_bytes(run.gguf_writer().to_bytes())
    assert answer_report(session, TAUGHT).exact == 3


def test_the_command_prints_the_plan_first(text_base, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join('{"messages": [{"role": "user", "content": "%s"}, {"role": "assistant", "content": '
                            '"%s"}]}\n' % (c[0]["content"], c[1]["content"]) for c in TAUGHT))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "pychat_wasm.cli", "finetune", str(text_base), "--data", str(data),
                           "--out", str(tmp_path / "tuned.gguf"), "--epochs", "1", "--seq-len", "48", "--replay", "0"],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert lines[0].startswith("data: 3 conversations, answers of ")
    assert lines[1].startswith("validation: none held out")
    assert lines[3].startswith("passes: each conversation is presented once (the epochs given)")
