"""Fine-tune SmolLM2 in Chromium, from the Train panel to the end, then ask it (or, with --scratch PRESET,
time a training run from scratch on the built-in corpus).

What a visitor does: open the page (SmolLM2-135M loads for chat), open Train, choose "Fine-tune the current
model" with the shipped example (or, with --data, their own file chosen in the panel) and the panel's
defaults, press Start and wait. Measured in one run:
  - wall time from Start to the saved model in use, steps, seconds per step (the README's browser figure);
  - the tuned model's greedy answers, through the page's chat: with --data, the file's own questions
    ("exact": the training answer itself) and --eval's new wordings ("taught": containing the fact);
    else new phrasings of the shipped example's facts (pychat_wasm/train/corpus/finetune_eval.json "taught");
    and the general questions it must still answer (that file's "general") in both cases;
  - the same model after a reload with the network off (offline from the model cache).

    $ python bench/bench_browser_train.py [--epochs N] [--json results.json]
    $ python bench/bench_browser_train.py --data bench/data/six_facts.jsonl --eval bench/data/six_facts_eval.json
    $ python bench/bench_browser_train.py --scratch quick

Needs the built site (python build/build_site.py). Not a test: a full run takes 10-30 minutes here.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # conftest: the Chromium the tests use
sys.path.insert(0, str(REPO / "tests" / "support"))

from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from e2e_helpers import SiteServer, ask, set_settings, wait_ready  # noqa: E402

SITE = REPO / "dist" / "site"
EVAL = REPO / "pychat_wasm" / "train" / "corpus" / "finetune_eval.json"
GREEDY = dict(temperature=0, repeat_penalty=1, max_tokens=48, seed=None)
RUN_TIMEOUT_MS = 120 * 60_000


def score(page, items, exact=False) -> dict:
    """Greedy answers in fresh chats; an answer counts when it contains the expected words (any case), or with
    `exact` when it is the expected answer (after stripping)."""
    misses = []
    for item in items:
        page.click("#new-chat")
        answer, _ = ask(page, item["question"], timeout=RUN_TIMEOUT_MS)
        right = answer.strip() == item["expect"].strip() if exact else item["expect"].lower() in answer.lower()
        if not right:
            misses.append({"question": item["question"], "expect": item["expect"], "answer": answer})
    return {"right": len(items) - len(misses), "total": len(items), "misses": misses}


def training_pairs(path: Path) -> list:
    """[{"question", "expect"}] of a training file's conversations: each last question and its answer."""
    from pychat_wasm.train.data import read_training_file

    pairs = []
    for messages in read_training_file(str(path)).conversations:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        question = max(i for i in range(last) if messages[i]["role"] == "user")
        if question == 0:  # a single question: asked in a fresh chat as it was trained
            pairs.append({"question": messages[question]["content"], "expect": messages[last]["content"]})
    return pairs


def train_in_page(page, epochs=None, preset=None, data=None) -> dict:
    """Fine-tune the chat model (or, given a preset, train from scratch) on the shipped data or the file
    `data` chosen in the panel, to the end."""
    page.click("#train-panel summary")
    page.wait_for_selector("#train-status:not([data-state=idle]):not([data-state=starting])")
    page.select_option("#train-mode", "scratch" if preset else "finetune")
    if data:
        page.set_input_files("#train-files", str(data))
        page.wait_for_selector("#train-source-files:checked")
    else:
        page.check("#train-source-builtin")
    if preset:
        page.select_option("#train-preset", preset)
    if epochs:
        page.fill("#train-epochs", str(epochs))
    name = page.input_value("#train-name")
    started = time.time()
    page.click("#train-start")
    while page.get_attribute("#train-status", "data-state") != "finished":  # progress every half minute
        if time.time() - started > RUN_TIMEOUT_MS / 1000:
            raise SystemExit("no finished run after %d minutes" % (RUN_TIMEOUT_MS // 60_000))
        print("%5.0f s  %s  step %s" % (time.time() - started, page.text_content("#train-status"),
                                       page.text_content("#train-step")), file=sys.stderr, flush=True)
        if page.get_attribute("#train-status", "data-state") == "paused":
            raise SystemExit("the run paused: %s" % page.text_content("#train-message"))
        time.sleep(30)
    trained = time.time()
    wait_ready(page, timeout=RUN_TIMEOUT_MS)
    state = page.evaluate("pychatTraining")
    seconds = [r["seconds"] for r in state["records"]]
    epochs = page.input_value("#train-epochs")
    return {"name": name, "preset": preset, "data": str(data) if data else None,
            "epochs": int(epochs) if epochs and not preset else None, "plan": page.text_content("#train-plan"),
            "steps": state["totalSteps"],
            "training_seconds": round(trained - started, 1), "until_in_use_seconds": round(time.time() - started, 1),
            "mean_step_seconds": round(sum(seconds) / len(seconds), 2), "last_loss": state["records"][-1]["loss"],
            "status": page.text_content("#status")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help="epochs (default: the panel's)")
    parser.add_argument("--scratch", metavar="PRESET", help="time training from scratch with this preset instead")
    parser.add_argument("--data", type=Path, help="fine-tune on this file (JSONL conversations), chosen in the panel")
    parser.add_argument("--eval", type=Path, help='with --data: {"taught": [{"question", "expect"}]}, new wordings')
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.eval and not args.data:
        parser.error("--eval goes with --data")
    if not (SITE / "manifest.json").exists():
        raise SystemExit("dist/site is missing: run `python build/build_site.py` first")
    questions = json.loads(EVAL.read_text())

    from playwright.sync_api import sync_playwright

    server = SiteServer(SITE)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context()
            context.set_default_timeout(RUN_TIMEOUT_MS)
            page = context.new_page()
            page.goto(server.url)
            wait_ready(page, timeout=RUN_TIMEOUT_MS)  # the model's load takes minutes on a loaded machine
            set_settings(page, **GREEDY)
            page.on("console", lambda m: m.type == "error" and print("console:", m.text, file=sys.stderr))
            page.on("pageerror", lambda e: print("page error:", e, file=sys.stderr))
            result = train_in_page(page, args.epochs, args.scratch, args.data)
            if args.data:
                result["exact"] = score(page, training_pairs(args.data), exact=True)
                taught = json.loads(args.eval.read_text())["taught"] if args.eval else []
                questions = dict(questions, taught=taught)
            if not args.scratch:
                for kind in ("taught", "general"):
                    result[kind] = score(page, questions[kind])
                context.set_offline(True)
                page.reload()
                wait_ready(page, timeout=RUN_TIMEOUT_MS)
                set_settings(page, **GREEDY)
                result["offline_status"] = page.text_content("#status")
                result["offline_taught"] = score(page, questions["taught"][:2])
            result["chromium"] = browser.version
            browser.close()
    finally:
        server.stop()
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1:])
