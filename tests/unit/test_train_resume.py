"""Determinism and exact resume of scratch training: the same seed gives the same bits, a run stopped at a
checkpoint and resumed ends where an uninterrupted one does, a checkpoint of another run or a damaged file
is refused, and the batch of a micro-batch depends on nothing but the seed."""
from __future__ import annotations

import collections
import io
import json

import numpy as np
import pytest

from pychat_wasm.errors import CheckpointError
from pychat_wasm.train.checkpoint import checkpoint_bytes, read_checkpoint, restore, save_checkpoint
from pychat_wasm.train.data import TrainingData, builtin_corpus
from pychat_wasm.train.run import LENGTH_GROUP
from pychat_wasm.train.scratch import ScratchRun, TrainSettings

STEPS = 12


@pytest.fixture(scope="module")
def corpus():
    return builtin_corpus()


def new_run(corpus, seed=0, grad_accum=1, steps=STEPS):
    return ScratchRun.create(TrainSettings(preset="quick", steps=steps, seed=seed, grad_accum=grad_accum), corpus)


def train(run, until=None):
    while not run.finished and (until is None or run.step_count < until):
        run.step()
    return run


def losses(run):
    return [r["loss"] for r in run.log if "loss" in r]


def without_timing(log):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in log]


def assert_same_params(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.fixture(scope="module")
def uninterrupted(corpus):
    """grad_accum -> a run trained STEPS steps without stopping."""
    return {accum: train(new_run(corpus, grad_accum=accum)) for accum in (1, 2)}


def test_both_phases_are_trained(uninterrupted):
    run = uninterrupted[1]
    assert [(p.name, p.steps) for p in run.phases] == [("pretrain", 2), ("chat", 10)]
    assert len(losses(run)) == STEPS and all(np.isfinite(losses(run)))


def test_same_seed_same_bits_other_seed_differs(corpus, uninterrupted):
    again = train(new_run(corpus))
    assert_same_params(again.params, uninterrupted[1].params)
    assert losses(again) == losses(uninterrupted[1])
    other = train(new_run(corpus, seed=1))
    assert losses(other) != losses(again)
    assert not np.array_equal(other.params["token_embd.weight"], again.params["token_embd.weight"])


@pytest.mark.parametrize("accum, stop", [(1, 5), (1, 2), (2, 5)])  # 2: the first step of the chat phase
def test_resume_from_a_checkpoint_gives_the_uninterrupted_bits(corpus, uninterrupted, accum, stop):
    first = train(new_run(corpus, grad_accum=accum), until=stop)
    assert first.step_count == stop
    blob = checkpoint_bytes(first)
    del first  # nothing but the checkpoint's bytes and the data carries over
    checkpoint = read_checkpoint(blob)
    assert checkpoint.kind == "scratch" and checkpoint.step == stop
    resumed = ScratchRun.from_checkpoint(checkpoint.extra, checkpoint.params, corpus)
    restore(resumed, checkpoint)
    assert resumed.step_count == stop and resumed.settings.grad_accum == accum
    train(resumed)
    reference = uninterrupted[accum]
    assert resumed.step_count == reference.step_count == STEPS
    assert_same_params(resumed.params, reference.params)
    assert_same_params(resumed.optimizer.m, reference.optimizer.m)
    assert_same_params(resumed.optimizer.v, reference.optimizer.v)
    assert resumed.optimizer.steps == reference.optimizer.steps
    assert losses(resumed) == losses(reference)
    assert without_timing(resumed.log) == without_timing(reference.log)  # validation records too
    assert resumed.gguf_writer().to_bytes() == reference.gguf_writer().to_bytes()


def test_save_checkpoint_to_a_file(corpus, tmp_path):
    run = train(new_run(corpus), until=3)
    path = str(tmp_path / "m.ckpt.npz")
    save_checkpoint(run, path)
    assert not (tmp_path / "m.ckpt.npz.tmp").exists()
    checkpoint = read_checkpoint(path)
    assert checkpoint.step == 3 and checkpoint.fingerprint == run.fingerprint()
    assert_same_params(checkpoint.params, run.params)
    with pytest.raises(CheckpointError, match="cannot read .*missing.npz"):
        read_checkpoint(str(tmp_path / "missing.npz"))


# ---- refusals ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_blob(corpus):
    return checkpoint_bytes(train(new_run(corpus), until=4))


def resume(blob, data):
    checkpoint = read_checkpoint(blob)
    run = ScratchRun.from_checkpoint(checkpoint.extra, checkpoint.params, data)
    restore(run, checkpoint)
    return run


def test_the_good_checkpoint_resumes(checkpoint_blob, corpus):
    assert resume(checkpoint_blob, corpus).step_count == 4


@pytest.mark.parametrize("change", ["one document less", "one answer changed", "other data"])
def test_a_checkpoint_of_other_data_is_refused(checkpoint_blob, corpus, change):
    documents, conversations = list(corpus.documents), [list(c) for c in corpus.conversations]
    if change == "one document less":
        del documents[7]
    elif change == "one answer changed":
        conversations[3][-1] = dict(conversations[3][-1], content=conversations[3][-1]["content"] + "!")
    else:
        documents, conversations = ["Cats purr."] * 30, []
    with pytest.raises(CheckpointError, match="made with other data or settings"):
        resume(checkpoint_blob, TrainingData(documents, conversations))


def test_a_checkpoint_of_other_settings_or_kind_is_refused(checkpoint_blob, corpus):
    checkpoint = read_checkpoint(checkpoint_blob)
    longer = new_run(corpus, steps=STEPS + 1)
    with pytest.raises(CheckpointError, match="other data or settings"):
        restore(longer, checkpoint)
    with pytest.raises(CheckpointError, match="from a finetune run, not a scratch run"):
        restore(new_run(corpus), checkpoint._replace(kind="finetune"))
    with pytest.raises(CheckpointError, match="at step 99 of a 12-step run"):
        restore(new_run(corpus), checkpoint._replace(step=99))
    with pytest.raises(CheckpointError, match="does not say which run"):
        ScratchRun.from_checkpoint({"adapters": "x"}, checkpoint.params, corpus)


def test_a_finetune_kind_written_into_the_file_is_refused(corpus):
    run = new_run(corpus)
    run.kind = "finetune"
    checkpoint = read_checkpoint(checkpoint_bytes(run))
    assert checkpoint.kind == "finetune"
    with pytest.raises(CheckpointError, match="from a finetune run"):
        restore(new_run(corpus), checkpoint)


def npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def meta(value):
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)


def damaged(blob, name):
    middle = len(blob) // 2
    rng = np.random.default_rng(0)
    npy = io.BytesIO()
    np.save(npy, np.zeros(3))
    return {
        "empty": b"",
        "first bytes only": blob[:4],
        "truncated to half": blob[:middle],
        "last byte missing": blob[:-1],
        "bytes flipped in the middle": blob[:middle] + bytes(255 - b for b in blob[middle:middle + 64])
        + blob[middle + 64:],
        "random bytes": rng.bytes(len(blob)),
        "random bytes after the zip magic": b"PK\x03\x04" + rng.bytes(1000),
        "a gguf file": b"GGUF\x03\x00\x00\x00" + bytes(200),
        "a single .npy array": npy.getvalue(),
        "an npz without meta": npz(**{"params/token_embd.weight": np.zeros((4, 4), np.float32)}),
        "meta that is not json": npz(meta=np.frombuffer(b"\xff{not json", dtype=np.uint8)),
        "meta that is a list": npz(meta=meta([1, 2])),
        "meta of another format": npz(meta=meta({"format": 99})),
        "meta without fields": npz(meta=meta({"format": 1})),
        "an object array": npz(meta=np.array([{"format": 1}], dtype=object)),
    }[name]


DAMAGE = ["empty", "first bytes only", "truncated to half", "last byte missing", "bytes flipped in the middle",
          "random bytes", "random bytes after the zip magic", "a gguf file", "a single .npy array",
          "an npz without meta", "meta that is not json", "meta that is a list", "meta of another format",
          "meta without fields", "an object array"]


@pytest.mark.parametrize("name", DAMAGE)
def test_a_damaged_checkpoint_is_refused(checkpoint_blob, tmp_path, name):
    blob = damaged(checkpoint_blob, name)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(blob)
    message = str(info.value)
    assert "checkpoint" in message and "pickle" not in message and "\n" not in message
    path = tmp_path / "m.ckpt.npz"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match="m.ckpt.npz"):
        read_checkpoint(str(path))


# ---- batches ---------------------------------------------------------------------------------------------------


def batch_bits(batch):
    return batch.ids.tobytes(), batch.targets.tobytes(), batch.mask.tobytes(), batch.tokens


def test_batch_is_a_pure_function_of_seed_and_micro_batch(corpus):
    reference = new_run(corpus)
    chat = reference.phases[1]
    order = [0, 1, 7, 8, 9, 40, 3, 200, 2, 41]
    early = {k: batch_bits(reference.batch(chat, k)) for k in order}
    for k in reversed(order):  # others first, far-away epochs in between
        fresh = new_run(corpus)
        for other in (500, k + 13, 0):
            fresh.batch(fresh.phases[1], other)
        assert batch_bits(fresh.batch(fresh.phases[1], k)) == early[k], k
        assert batch_bits(reference.batch(chat, k)) == early[k], k
    assert batch_bits(new_run(corpus, seed=1).batch(chat, 0)) != early[0]


@pytest.mark.parametrize("phase_index", [0, 1])
def test_every_example_once_per_epoch(corpus, phase_index):
    run = new_run(corpus)
    phase = run.phases[phase_index]
    n, size = len(phase.examples), run.loop.batch_size
    group_size = LENGTH_GROUP * size  # places of the epoch stream sorted by length together
    groups = int(np.lcm(n, group_size)) // group_size  # the fewest whole groups that hold whole epochs
    epochs = groups * group_size // n
    copies = collections.Counter(tuple(e.ids) for e in phase.examples)  # identical examples count together
    by_ids = {tuple(e.ids): e for e in phase.examples}
    seen = collections.Counter()
    for g in range(groups):  # micro-batches are cut from groups sorted by length: count whole groups
        for k in range(g * LENGTH_GROUP, (g + 1) * LENGTH_GROUP):
            batch = run.batch(phase, k)
            rows = batch_rows(batch, by_ids, run.tokenizer.eos_id)
            assert len(rows) == size
            assert batch.tokens == sum(len(ids) - 1 for ids in rows)
            for row, ids in enumerate(rows):  # the mask belongs to the target: the example's mask from token 1
                mask = by_ids[ids].mask[1:]
                assert batch.mask[row].tolist() == mask + [0.0] * (batch.mask.shape[1] - len(mask))
            seen.update(rows)
    assert seen == collections.Counter({ids: c * epochs for ids, c in copies.items()})


def batch_rows(batch, by_ids, pad):
    """The ids of the example in each row: the longest prefix of the row that is an example, the rest padding."""
    rows = []
    for row in range(batch.ids.shape[0]):
        full = [int(batch.ids[row, 0])] + batch.targets[row].tolist()
        for length in range(len(full), 1, -1):
            if tuple(full[:length]) in by_ids and all(t == pad for t in full[length:]):
                rows.append(tuple(full[:length]))
                break
        else:
            raise AssertionError("batch row %d is no example" % row)
    return rows
