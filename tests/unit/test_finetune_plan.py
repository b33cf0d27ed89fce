"""The fine-tuning plan (pychat_wasm/train/finetune_plan.py): defaults that follow the size of the user's data.

    - choose_plan: no validation split below MIN_VALIDATION conversations, 5% from there on; the replayed
      answers at most REPLAY_SHARE of a pass (a small file's conversations repeat within it); at least
      MIN_PASSES presentations, more for a small file up to MAX_PASSES; given epochs and replay win;
    - a run on the tiny chat model (tests/support/tiny_models.py, random weights: it knows none of the answers)
      with three question/answer pairs and more replayed conversations than them: no example held out, the
      pairs repeated to outweigh the replay, and the run checks its answers first at the end of the pass that
      presents each pair MIN_PASSES times and the replay MIN_REPLAY_PASSES times, then every CHECK_EXAMPLES
      examples, and stops early once its
      answers come back; the
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
from pychat_wasm.train.finetune_plan import (CHECK_EXAMPLES, MAX_PASSES, MIN_PASSES, MIN_REPLAY_PASSES, MIN_VALIDATION,
                                             MLP_BELOW, PRESENTATIONS, REPLAY_QUESTIONS, REPLAY_SHARE, choose_plan)

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


def test_a_small_file_keeps_every_example_gets_more_presentations_and_outweighs_the_replay():
    plan = choose_plan(6, [12] * 6)
    assert plan.held_out == 0 and plan.trained == 6 and plan.replay_questions == REPLAY_QUESTIONS
    assert plan.targets == "attn+mlp" and choose_plan(MLP_BELOW).targets == "attn"
    assert plan.presentations == MAX_PASSES == min(MAX_PASSES, round(PRESENTATIONS / 6))
    repeats = plan.repeats(replayed=33)
    assert 33 <= REPLAY_SHARE / (1 - REPLAY_SHARE) * 6 * repeats and repeats == 6  # the fewest that outweigh it
    assert plan.passes(33) == 7 and plan.passes(33) * repeats >= MAX_PASSES  # 7 passes of 6 x 6 + 33 examples
    assert plan.steps(replayed=33) == 7 * 18  # 69 examples a pass in batches of 4
    # 6 x 6 a pass presents each conversation 6 times in one pass, but the replayed answers only once
    assert plan.first_check(33) == MIN_REPLAY_PASSES == 2 and plan.check_every(4) == CHECK_EXAMPLES // 4
    twenty = choose_plan(20)  # 2 x 20 + 33 a pass: the third pass presents each conversation 6 times
    assert (twenty.repeats(33), twenty.first_check(33), twenty.check_every(2)) == (2, 3, CHECK_EXAMPLES // 2)


def test_validation_begins_at_the_threshold_and_presentations_never_go_below_the_minimum():
    assert choose_plan(MIN_VALIDATION - 1).held_out == 0
    assert choose_plan(MIN_VALIDATION).held_out == 2  # every 20th: 5%
    example = choose_plan(MIN_VALIDATION)  # the shipped example: as before the plan, 6 passes over 38 + 33
    assert (example.presentations, example.repeats(33), example.steps(33)) == (MIN_PASSES, 1, MIN_PASSES * 18)
    large = choose_plan(1000)
    assert large.held_out == 50 and large.presentations == MIN_PASSES and large.repeats(33) == 1


def test_given_epochs_and_replay_win():
    plan = choose_plan(6, epochs=3, replay=10, early_stop=False)
    assert (plan.presentations, plan.replay_questions, plan.early_stop) == (3, 10, False)
    assert plan.repeats(10) * plan.passes(10) >= 3


def test_three_pairs_are_learned_exactly_and_the_run_stops_early(text_base):
    settings = FinetuneSettings(rank=8, targets="attn+mlp", lr=1e-2, seq_len=48, batch_size=2)
    run = FinetuneRun(settings, GGUFFile.open(str(text_base)), TrainingData([], TAUGHT), replay=REPLAYED)
    assert run.held_out.conversations == [] and run.trained_on.conversations == TAUGHT
    # 8 replayed answers, at most half of a pass: the 3 conversations come 3 times each in a pass
    assert run.repeats == 3 and len(run.phases[0].examples) == 3 * 3 + 8 and run.steps_per_pass == 9
    planned = run.total_steps
    assert planned == 14 * 9  # 40 presentations: 14 passes
    while not run.finished:
        run.step()
    assert run.stopped_early and run.step_count < planned and run.total_steps == run.step_count
    checks = [entry["check"] for entry in run.log if "check" in entry]
    assert checks[0]["step"] == 2 * 9  # the first pass to present each conversation MIN_PASSES times (and the
    # replayed answers MIN_REPLAY_PASSES times)
    assert run.check_every == CHECK_EXAMPLES // 2  # then every CHECK_EXAMPLES examples of batches of 2
    checked_at = sorted({c["step"] for c in checks})  # the log holds each check in its step's record too
    assert checked_at == list(range(2 * 9, run.step_count + 1, run.check_every))
    assert checks[-1]["exact"] == checks[-1]["checked"] == 3
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
    assert lines[3] == "adapters: LoRA on attn+mlp (fewer than %d conversations)" % MLP_BELOW
    assert lines[4].startswith("presentations: each conversation is trained on once (the epochs given)")
    assert lines[6].startswith("steps: 1 pass of 1 step of 4 examples (3 conversations x 1 + 0 replayed answers)")
