"""The fuzzer (fuzz/): a bounded run finds nothing, and its oracle does catch each kind of finding.

The long run is `fuzz/long_run.sh` (README, "Robustness: loading and fuzzing"); CI runs a fixed seed here.
"""
from __future__ import annotations

import json
import random
import tracemalloc

import pytest

from fuzz import fuzz_gguf
from fuzz.template_bombs import generate_template
from pychat_wasm.chat.template import ChatTemplate
from pychat_wasm.chat.template_sandbox import MAX_TEXT
from pychat_wasm.errors import TemplateError

CI_SEED = 20261202
CI_CASES = 800  # 15 s on an idle core, under a minute on a busy one
CI_DEADLINE = 5.0  # CPU seconds: a hang detector that a busy CI machine cannot trip (the long run uses 1 s)


def test_a_bounded_run_finds_no_untyped_error_hang_or_excess_allocation(tmp_path):
    summary = fuzz_gguf.fuzz(CI_CASES, seed=CI_SEED, deadline=CI_DEADLINE, out=tmp_path)
    assert summary["findings"] == {}, (summary, [p.read_text()[:3000] for p in tmp_path.glob("*.txt")])
    # The cases reach every stage: the reader refuses some, the model checks others, and some chat (duplicate
    # names, which once reached the model check, are now the reader's to refuse).
    outcomes = summary["outcomes"]
    assert outcomes.get("chatted", 0) > 50 and outcomes.get("InvalidModelError", 0) > 10
    assert outcomes.get("CorruptHeaderError", 0) > 100 and outcomes.get("TemplateError", 0) > 5
    # The structure-aware mutators reach the reader's refusals of what llama.cpp refuses.
    for refusal in ("NestedArrayError", "DuplicateKeyError", "DuplicateTensorError", "OverlappingTensorsError"):
        assert outcomes.get(refusal, 0) > 0, (refusal, outcomes)


@pytest.mark.parametrize("index", range(40))
def test_a_generated_template_bomb_fails_typed_or_renders_within_bounds(index):
    """template_bombs.py: every width-, count- and fill-taking filter and method just below its bound."""
    source = generate_template(random.Random(index))
    tracemalloc.start()
    try:
        try:
            text = ChatTemplate(source).render([{"role": "user", "content": "Hi"}])
            assert len(text) <= MAX_TEXT
        except TemplateError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, source


def _untyped(*args):
    return {}["no such key"]


def _runaway(*args):
    while True:
        pass


def _hoard(*args):
    hoard = bytearray(200 * 2 ** 20)
    return "hoarded %d bytes" % len(hoard)


def _out_of_memory(*args):
    raise MemoryError("numpy asked for 3 TiB")


@pytest.mark.parametrize("target, kind", [
    (_untyped, "untyped KeyError at tests/unit/test_fuzz.py"), (_runaway, "hang at tests/unit/test_fuzz.py"),
    (_hoard, "allocation over bound"), (_out_of_memory, "memory at tests/unit/test_fuzz.py"),
])
def test_the_oracle_reports_each_kind_of_finding_with_a_reproducer(monkeypatch, tmp_path, target, kind):
    monkeypatch.setattr(fuzz_gguf, "run_case", target)
    summary = fuzz_gguf.fuzz(fuzz_gguf.TRACE_EVERY, seed=1, deadline=0.3, out=tmp_path)
    assert any(found.startswith(kind) for found in summary["findings"]), summary
    reproducers = list(tmp_path.glob("*.gguf"))
    assert reproducers and all(r.with_suffix(".txt").exists() for r in reproducers)
    assert json.loads((tmp_path / "summary.json").read_text())["findings"] == summary["findings"]
    for found, count in summary["findings"].items():  # every case of a kind listed, to replay after a fix
        assert len(summary["indexes"][found]) == min(count, fuzz_gguf.MAX_INDEXES)
        assert summary["indexes"][found][0] == summary["first"][found]


def test_a_case_is_the_same_bytes_every_time(tmp_path):
    seeds = fuzz_gguf.build_seeds(tmp_path)
    first = [fuzz_gguf.make_case(seeds, 7, i)[1] for i in range(20)]
    assert first == [fuzz_gguf.make_case(seeds, 7, i)[1] for i in range(20)]
    assert len(set(first)) == 20


def test_a_run_can_go_on_where_a_stopped_one_ended(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(fuzz_gguf, "run_one", lambda seeds, seed, index, deadline: (ran.append(index), "ok", None, b"")[1:])
    summary = fuzz_gguf.fuzz(7, seed=1, out=tmp_path, chunk=3, start=618_000)
    assert sorted(ran) == list(range(618_000, 618_007))
    assert summary["cases"] == 7 and summary["start"] == 618_000


def test_a_deadline_that_lands_as_the_case_ends_is_a_finding_not_a_dead_worker(monkeypatch, tmp_path):
    """The CPU timer may fire just as a case returns, while it is being disarmed: that is the case's hang,
    reported as one (once it escaped run_one, killed the pool's worker and its chunk was lost)."""
    real_setitimer = fuzz_gguf.signal.setitimer

    def fires_on_disarm(which, seconds, *rest):
        real_setitimer(which, 0)
        if seconds == 0:
            raise fuzz_gguf.CaseTimeout("case ran out of CPU time")

    seeds = fuzz_gguf.build_seeds(tmp_path)
    monkeypatch.setattr(fuzz_gguf, "run_case", lambda *args: "parsed")
    monkeypatch.setattr(fuzz_gguf.signal, "setitimer", fires_on_disarm)
    outcome, finding, _ = fuzz_gguf.run_one(seeds, 0, 1, 1.0)
    assert outcome == "finding" and finding.kind.startswith("hang at")
