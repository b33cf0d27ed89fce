"""A mutation fuzzer for everything a GGUF file reaches: reader, tokenizers, chat template, load, one decode step.

    python3 -m fuzz.fuzz_gguf --cases 1000000 --processes 2 --out fuzz-out    # the long run
    python3 -m fuzz.fuzz_gguf --seed 1 --case 4711                           # replay one case

Case i of seed s is fully determined by (s, i): a seed file (tiny random models of each architecture,
the real models' headers with a little of their data) and one to three mutations (mutators.py). A case
is a finding when it ends in anything but a typed error (a PychatError):

    untyped     any other exception (grouped by type and the engine line that raised it)
    memory      a MemoryError: no file this small justifies one
    hang        more than --deadline seconds of CPU time (SIGPROF)
    allocation  a traced case whose peak allocation exceeds ALLOCATION_FACTOR x file size + slack; every
                TRACE_EVERY-th tiny model case is traced (tracemalloc costs 4x), and every case runs under
                an address-space limit of 1 GiB over the worker's start, so a runaway one is a MemoryError

Each finding kind's first case is written to --out as a reproducer (.gguf and .txt with the traceback).
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import resource
import signal
import sys
import tempfile
import time
import tracemalloc
import traceback
import warnings
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

from .gguf_layout import Layout, scan
from . import targets
from .mutators import mutate
from .targets import run_case

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("float32", "int8", "quantized")
ALLOCATION_FACTOR = 16  # float32 of the most compact supported type (Q2_K) is 12x its bytes; metadata ~10x
ALLOCATION_SLACK = 64 * 2 ** 20  # temporaries (4 MB row bands) and a tiny model's KV cache at 4096 positions
REAL_MODELS = ("SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-Q4_K_M.gguf")
REAL_DATA_BYTES = 4096  # of tensor data kept after a real model's header
REAL_SHARE = 0.01  # of cases that start from a real model's header (a parse costs 0.1-0.2 s)
TRACE_EVERY = 8
TRACE_SLOWDOWN = 5  # tracemalloc records every allocation: a traced case may take this much more CPU time


class Seed(NamedTuple):
    name: str
    data: bytes
    layout: Layout
    complete: bool  # holds all its tensor data: the worker step runs


class CaseTimeout(BaseException):
    """Raised by SIGPROF: not an Exception, so no `except Exception` in the engine can swallow it."""


def build_seeds(directory: Path) -> List[Seed]:
    """Tiny models of every architecture (with and without a usable vocabulary) and the real headers."""
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from tiny_models import write_tiny_model

    seeds = []
    for arch in ("llama", "qwen2", "gemma3"):
        for chat in (True, False):
            path = write_tiny_model(directory / ("%s-%s.gguf" % (arch, chat)), arch, seed=3, chat=chat)
            data = path.read_bytes()
            seeds.append(Seed(path.name, data, scan(data), True))
    for name in REAL_MODELS:
        path = ROOT / "models" / name
        if path.exists():
            with open(path, "rb") as f:
                head = f.read(16 * 2 ** 20)
            layout = scan_header(path)
            data = head[:layout.data_offset + REAL_DATA_BYTES]
            cuts = [c for c in layout.boundaries if c <= len(data)]
            seeds.append(Seed(name, data, layout._replace(size=len(data), boundaries=cuts), False))
    return seeds


def scan_header(path: Path) -> Layout:
    with open(path, "rb") as f:
        return scan(f.read(16 * 2 ** 20))


def ready_seeds(directory: Path) -> List[Seed]:
    """build_seeds, then every seed file run once untimed: a fresh process's first case would otherwise pay
    for importing the engine's modules and compiling its tokenizers' patterns (~0.7 s of CPU), which is
    start-up, not a hang of that case."""
    seeds = build_seeds(directory)
    for warm in seeds:
        targets.run_case(warm.data, random.Random(0), "quantized", warm.complete)
    return seeds


def make_case(seeds: List[Seed], seed: int, index: int) -> Tuple[Seed, bytes, List[str], random.Random]:
    rng = random.Random("%d:%d" % (seed, index))
    complete = [s for s in seeds if s.complete]
    real = [s for s in seeds if not s.complete]
    base = rng.choice(real) if real and rng.random() < REAL_SHARE else rng.choice(complete)
    donors = [(s.data, s.layout) for s in seeds if s is not base and s.complete]
    data, names = mutate(rng, base.data, base.layout, donors)
    return base, data, names, rng


class Finding(NamedTuple):
    kind: str
    index: int
    detail: str


def classify(exc: BaseException) -> str:
    """'untyped KeyError at pychat_wasm/tokenizers/base.py:123', innermost engine frame first."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.name != "_on_sigprof"]
    engine = [f for f in frames if "pychat_wasm" in f.filename] or frames
    where = "%s:%s" % (os.path.relpath(engine[-1].filename, str(ROOT)), engine[-1].lineno or "?") if engine else "?"
    if isinstance(exc, CaseTimeout):
        return "hang at %s" % where
    if isinstance(exc, MemoryError):
        return "memory at %s" % where
    return "untyped %s at %s" % (type(exc).__name__, where)


def run_one(seeds: List[Seed], seed: int, index: int, deadline: float) -> Tuple[str, Optional[Finding], bytes]:
    base, data, names, rng = make_case(seeds, seed, index)
    policy = POLICIES[index % len(POLICIES)]
    traced = base.complete and index % TRACE_EVERY == 0
    if traced:
        tracemalloc.start()
    signal.setitimer(signal.ITIMER_PROF, deadline * (TRACE_SLOWDOWN if traced else 1))
    finding = None
    try:
        try:
            outcome = run_case(data, rng, policy, base.complete)
        finally:  # a deadline reached up to here is this case's; after it no signal comes
            signal.setitimer(signal.ITIMER_PROF, 0)
    except BaseException as exc:  # noqa: B902 - every escape is the finding we look for
        if isinstance(exc, KeyboardInterrupt):
            raise
        outcome = "finding"
        finding = Finding(classify(exc), index, "seed file %s, mutations %s, policy %s\n%s" % (
            base.name, names, policy, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        bound = ALLOCATION_FACTOR * len(data) + ALLOCATION_SLACK
        if finding is None and peak > bound:
            finding = Finding("allocation over bound", index, "peak %d bytes > %d for a %d-byte file (%s, %s)"
                              % (peak, bound, len(data), base.name, names))
    return outcome, finding, data


def _on_sigprof(signum, frame):
    raise CaseTimeout("case ran out of CPU time")


_SEEDS: List[Seed] = []
MAX_INDEXES = 100  # cases listed per finding kind in the summary


def _init_worker(seed_dir: str) -> None:
    signal.signal(signal.SIGPROF, _on_sigprof)
    warnings.simplefilter("ignore")  # unknown pre-tokenizers, overflow in corrupt weights: expected noise
    _SEEDS[:] = ready_seeds(Path(seed_dir))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2 ** 30, hard))  # a runaway allocation fails fast


def _run_chunk(args: Tuple[int, int, int, float]) -> dict:
    seed, start, stop, deadline = args
    outcomes: Dict[str, int] = collections.Counter()
    findings = []
    for index in range(start, stop):
        outcome, finding, data = run_one(_SEEDS, seed, index, deadline)
        outcomes[outcome] += 1
        if finding is not None:
            findings.append((finding, data))
    return {"outcomes": dict(outcomes), "findings": findings, "cases": stop - start}


def fuzz(cases: int, seed: int = 0, processes: int = 1, deadline: float = 1.0, out: Optional[Path] = None,
         chunk: int = 500, log=None, start: int = 0) -> dict:
    """Run cases start...start + cases - 1 of `seed` (a long run can go on where a stopped one ended);
    returns {"cases", "outcomes", "findings": {kind: count}, "first": {kind: index},
    "indexes": {kind: the first MAX_INDEXES cases of that kind, to replay each after a fix}}."""
    outcomes: Dict[str, int] = collections.Counter()
    counts: Dict[str, int] = collections.Counter()
    first: Dict[str, int] = {}
    indexes: Dict[str, List[int]] = collections.defaultdict(list)
    started = time.time()
    with tempfile.TemporaryDirectory() as seed_dir:
        jobs = [(seed, i, min(i + chunk, start + cases), deadline) for i in range(start, start + cases, chunk)]
        if processes > 1:
            pool = multiprocessing.get_context("fork").Pool(processes, _init_worker, (seed_dir,))
            results = pool.imap_unordered(_run_chunk, jobs)
        else:
            pool = None
            previous = signal.signal(signal.SIGPROF, _on_sigprof)
            _SEEDS[:] = ready_seeds(Path(seed_dir))
            results = map(_run_chunk, jobs)
        done, summary = 0, {"cases": 0, "findings": {}}
        for result in results:
            done += result["cases"]
            outcomes.update(result["outcomes"])
            for finding, data in result["findings"]:
                counts[finding.kind] += 1
                indexes[finding.kind] = sorted(indexes[finding.kind] + [finding.index])[:MAX_INDEXES]
                if finding.kind not in first or finding.index < first[finding.kind]:
                    first[finding.kind] = finding.index
                    if out is not None:
                        _write_reproducer(out, seed, finding, data)
            summary = {"cases": done, "planned": cases, "seed": seed, "start": start,
                       "seconds": round(time.time() - started, 1), "outcomes": dict(sorted(outcomes.items())),
                       "findings": dict(counts), "first": first, "indexes": dict(indexes)}
            if out is not None:  # after every chunk, so a long run stopped early still reports its figure
                (out / "summary.json").write_text(json.dumps(summary, indent=1))
            if log is not None:
                log("%d/%d cases, %.0f cases/s, %d findings" % (done, cases, done / (time.time() - started),
                                                              sum(counts.values())))
        if pool is not None:
            pool.close()
            pool.join()
        else:
            signal.signal(signal.SIGPROF, previous)
    return summary


def _write_reproducer(out: Path, seed: int, finding: Finding, data: bytes) -> None:
    stem = "".join(c if c.isalnum() else "_" for c in finding.kind)[:100]
    (out / (stem + ".gguf")).write_bytes(data)
    (out / (stem + ".txt")).write_text("%s\nreplay: python3 -m fuzz.fuzz_gguf --seed %d --case %d\n%s"
                                       % (finding.kind, seed, finding.index, finding.detail))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="index of the first case (go on where a run stopped)")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--deadline", type=float, default=1.0, help="CPU seconds per case before it counts as a hang")
    p.add_argument("--out", type=Path, default=Path("fuzz-out"))
    p.add_argument("--case", type=int, help="replay this one case and print its traceback")
    args = p.parse_args(argv)
    if args.case is not None:
        signal.signal(signal.SIGPROF, _on_sigprof)
        with tempfile.TemporaryDirectory() as seed_dir:
            outcome, finding, _ = run_one(ready_seeds(Path(seed_dir)), args.seed, args.case, args.deadline)
        print(outcome if finding is None else "%s\n%s" % (finding.kind, finding.detail))
        return 1 if finding else 0
    args.out.mkdir(parents=True, exist_ok=True)
    summary = fuzz(args.cases, args.seed, args.processes, args.deadline, args.out,
                   log=lambda line: print(line, flush=True), start=args.start)
    print(json.dumps(summary, indent=1))
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
