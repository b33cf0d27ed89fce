"""End to end: the Train panel of the built site in Debian Chromium, training a model and chatting with it.

One page in one browser context trains one model with the quick preset on the built-in corpus (1-3 minutes
here) and the tests walk through that run in order: progress while it trains, a page that stays usable,
bad files that change nothing, Stop and Continue, the finished model in the model list and in use, and the
same model after a reload without network. A test that needs an earlier one's state (a run started, a model
trained) gets there itself when it is missing, so each also runs alone with -k.

The quick preset trains on the first 64 chats of pychat_wasm/train/corpus/chat.json until it repeats them
exactly; the first one (not held out for validation) is the question asked.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from e2e_helpers import (ANSWER_TIMEOUT_MS, ask, drop_files, page_fixture, ready_status, reloaded_offline, set_settings,
                         wait_ready, worker_states)

from pychat_wasm.browser.protocol import FinetuneOptions
from pychat_wasm.train.scratch import PRESETS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_STATUS = ready_status("SmolLM2-135M-Instruct.Q4_1.gguf")
MODEL_NAME = "corpus-quick"
GREEDY = dict(temperature=0, repeat_penalty=1, max_tokens=64, seed=None)
TRAINING_TIMEOUT_MS = 15 * 60_000  # the quick preset: 1-3 minutes here, more when other jobs share the 2 cores
BROKEN_JSON = b"[1, 2"

# Records what the Train panel shows: every loss, step, ETA and status text, in order.
PANEL_RECORDER = """
window.__shown = {loss: [], step: [], eta: [], status: []};
document.addEventListener("DOMContentLoaded", () => {
  for (const name of ["loss", "step", "eta", "status"]) {
    const node = document.getElementById("train-" + name);
    new MutationObserver(() => window.__shown[name].push(node.textContent)).observe(node, {childList: true});
  }
});
"""

# A probe of the training worker: window.__trainWorkerRoundTrip() sends it an unqueued "describe" request of no
# files (a negative request id, which the page's own client never uses or sees) and resolves with the reply.
# The worker answers such a request at once when it runs nothing, and between two slices of a running "train",
# after posting that slice's progress event. So two round trips one after the other take at least one slice
# of a run that goes on, whose steps the page has counted (pychatTraining.step) by the time the second returns.
TRAIN_WORKER_PROBE = """
(() => {
  const NativeWorker = self.Worker;
  self.Worker = class extends NativeWorker {
    constructor(url, options) {
      super(url, options);
      if (String(url).endsWith("train_worker.js")) self.__trainWorker = this;
    }
  };
  let lastRid = 0;
  self.__trainWorkerRoundTrip = () => new Promise((resolve) => {
    const worker = self.__trainWorker, rid = --lastRid;
    const listen = ({data}) => {
      if (data.type === "reply" && data.rid === rid) {
        worker.removeEventListener("message", listen);
        resolve(data);
      }
    };
    worker.addEventListener("message", listen);
    worker.postMessage({type: "describe", files: [], rid});
  });
})();
"""

# Records the name of every file the page reads (Blob.arrayBuffer / Blob.text) in window.__read.
READ_RECORDER = """() => {
  window.__read = [];
  for (const method of ["arrayBuffer", "text"]) {
    const original = Blob.prototype[method];
    Blob.prototype[method] = function () { if (this.name) window.__read.push(this.name); return original.call(this); };
  }
}"""

# The longest the page's event loop was late for a 50 ms timer, over `ms` milliseconds.
# Counts the page's event-loop turns while the training worker runs one whole step (from one step count to the
# next): a main thread that waited on Python would turn once or not at all.
TURNS_DURING_A_STEP = """() => new Promise((resolve) => {
  const first = pychatTraining.step;
  let begun = null, turns = 0;
  const turn = () => {
    const step = pychatTraining.step;
    if (begun === null && step !== first) begun = step;
    else if (begun !== null && step !== begun) return resolve(turns);
    if (begun !== null) turns += 1;
    setTimeout(turn, 0);
  };
  turn();
})"""

CANVAS_INK = """() => {
  const canvas = document.getElementById("train-chart");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) ink++;
  return ink;
}"""


def preset_steps(name: str) -> int:
    spec = PRESETS[name]
    return spec.pretrain_steps + spec.chat_steps


def first_training_chat():
    """(question, answer) of the first conversation of the shipped chat corpus."""
    from pychat_wasm.train.data import parse_rustgpt_chat

    items = json.loads((REPO / "pychat_wasm" / "train" / "corpus" / "chat.json").read_text())
    user, assistant = parse_rustgpt_chat(items[0])
    return user["content"], assistant["content"]


page = page_fixture("server", PANEL_RECORDER + TRAIN_WORKER_PROBE, **GREEDY)


def training(page):
    """The panel's run state (window.pychatTraining): phase, step, totalSteps, records, validations, ..."""
    return page.evaluate("pychatTraining")


def panel_state(page):
    return page.get_attribute("#train-status", "data-state")


def open_panel(page):
    if not page.evaluate("document.getElementById('train-panel').open"):
        page.click("#train-panel summary")
    page.wait_for_selector("#train-status:not([data-state=idle]):not([data-state=starting])")


def steps_seen_over_two_worker_round_trips(page) -> int:
    """How many steps the page counts while the training worker answers two probes (TRAIN_WORKER_PROBE): at
    least one if the worker is running a "train" request, whose slices come between the two answers."""
    before = training(page)["step"]
    for _ in range(2):
        assert page.evaluate("__trainWorkerRoundTrip()")["ok"] is True
    return training(page)["step"] - before


def wait_step(page, step, timeout=TRAINING_TIMEOUT_MS):
    page.wait_for_function("n => pychatTraining.step >= n", arg=step, timeout=timeout)


def ensure_training(page):
    """A quick run of the built-in corpus is training (started here when none is)."""
    open_panel(page)
    if panel_state(page) == "paused":
        page.click("#train-continue")
    elif panel_state(page) != "training":
        page.check("#train-source-builtin")
        page.select_option("#train-preset", "quick")
        page.fill("#train-name", MODEL_NAME)
        page.click("#train-start")
    page.wait_for_selector("#train-status[data-state=training]")


def ensure_trained(page):
    """The quick run is finished and its model is in use for chat."""
    if panel_state(page) != "finished":
        ensure_training(page)
        page.wait_for_selector("#train-status[data-state=finished]", timeout=TRAINING_TIMEOUT_MS)
    wait_ready(page)


def chat_alerts(page):
    return page.locator("#alerts .alert").all_text_contents()


def test_panel_starts_its_own_python_and_offers_the_presets(page):
    open_panel(page)
    assert panel_state(page) == "ready"
    options = page.locator("#train-preset option").all_text_contents()
    assert [o.split(":")[0] for o in options] == ["quick", "tiny"]
    assert options[0].startswith("quick: %d steps" % preset_steps("quick")) and "min" in options[0]
    assert options[1].startswith("tiny: %d steps" % preset_steps("tiny")) and "min" in options[1]
    assert page.text_content("#train-limit") == "67.1 MB"  # limits().max_data_bytes: 64 MiB
    assert page.text_content("#status") == DEFAULT_MODEL_STATUS  # chat is untouched by the second worker


def test_training_shows_a_falling_loss_steps_and_eta(page):
    ensure_training(page)
    wait_step(page, 60)
    shown = page.evaluate("window.__shown")
    steps = [int(text.split(" of ")[0]) for text in shown["step"] if " of " in text]
    assert steps == sorted(steps) and steps[-1] >= 60 and len(set(steps)) >= 5, steps
    pretrain_step = "of %d (pretrain)" % preset_steps("quick")
    assert all(text.endswith(pretrain_step) or text.endswith("(chat)") for text in shown["step"][-3:])
    etas = [text for text in shown["eta"] if ":" in text]
    assert len(set(etas)) >= 3, etas
    assert float(page.get_attribute("#train-progress", "value")) >= 60
    assert "tokens/s" in page.text_content("#train-speed")
    assert page.evaluate(CANVAS_INK) > 500


def test_page_stays_responsive_while_training(page):
    ensure_training(page)
    assert page.evaluate(TURNS_DURING_A_STEP) >= 20  # the page never waits on Python
    page.fill("#input", "typing while a model trains")
    assert page.input_value("#input") == "typing while a model trains"
    page.fill("#input", "")
    set_settings(page, max_tokens=4)  # the chat worker answers while the training worker trains
    step_before = training(page)["step"]
    answer, stats = ask(page, "Hi!")
    assert answer and stats.startswith("4 tokens")
    assert training(page)["step"] > step_before and panel_state(page) == "training"
    set_settings(page, **GREEDY)


def test_bad_training_files_show_their_error_and_change_nothing(page, tmp_path):
    ensure_training(page)
    page.evaluate(READ_RECORDER)
    models = page.text_content("#models")
    alerts_before = chat_alerts(page)
    step = training(page)["step"]

    page.set_input_files("#train-files", files=[{"name": "broken.json", "mimeType": "application/json",
                                                 "buffer": BROKEN_JSON}])
    page.wait_for_selector("#train-message[data-kind=error]:has-text('broken.json')")
    message = page.text_content("#train-message")
    assert message.startswith("broken.json looks like JSON but does not parse: "), message

    page.fill("#train-name", "changed-name")  # settings for the next run; the running one keeps its own
    drop_files(page, "#train-drop-zone", {"empty.txt": b"  \n\n"})
    page.wait_for_selector("#train-message:has-text('empty.txt holds no training text')")

    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(100_000_000)  # sparse: nothing to write, and the page must not read it
    page.set_input_files("#train-files", str(big))
    page.wait_for_selector("#train-message:has-text('big.txt is 100.0 MB; training files are limited to 67.1 MB')")
    assert "big.txt" not in page.evaluate("window.__read")  # refused from its size alone
    assert {"broken.json", "empty.txt"} <= set(page.evaluate("window.__read"))

    assert page.locator("#train-file-list li").count() == 0
    assert page.is_checked("#train-source-builtin") and page.is_disabled("#train-source-files")
    wait_step(page, step + 5)
    assert panel_state(page) == "training"
    assert page.text_content("#status") == DEFAULT_MODEL_STATUS
    assert page.text_content("#models") == models and chat_alerts(page) == alerts_before
    page.fill("#train-name", MODEL_NAME)


def test_stop_pauses_and_continue_goes_on_from_the_same_step(page):
    ensure_training(page)
    page.click("#train-stop")
    page.wait_for_selector("#train-status[data-state=paused]", timeout=30_000)
    paused_at = training(page)["step"]
    assert page.text_content("#train-status").startswith("Paused at step %d of %d" % (paused_at, preset_steps("quick")))
    assert steps_seen_over_two_worker_round_trips(page) == 0  # really paused
    assert training(page)["step"] == paused_at
    assert page.is_enabled("#train-continue") and page.is_disabled("#train-stop")
    page.click("#train-continue")
    page.wait_for_selector("#train-status[data-state=training]")
    assert steps_seen_over_two_worker_round_trips(page) > 0  # the probe sees a run that steps
    wait_step(page, paused_at + 5)
    steps = [record["step"] for record in training(page)["records"]]
    assert steps == list(range(1, len(steps) + 1))  # every step once, in order: nothing repeated or lost


def test_finished_model_is_listed_in_use_and_gives_the_training_answer(page):
    question, expected = first_training_chat()
    ensure_trained(page)
    state = training(page)
    assert state["step"] == state["totalSteps"] == preset_steps("quick")
    losses = [record["loss"] for record in state["records"]]
    assert statistics.mean(losses[-20:]) < statistics.mean(losses[:20]) / 20  # about 6 down to below 0.1
    shown = [float(text) for text in page.evaluate("window.__shown.loss") if text[0].isdigit()]
    assert statistics.mean(shown[-3:]) < statistics.mean(shown[:3]) / 10
    assert page.text_content("#train-eta") == "0:00"
    assert page.text_content("#train-status") == "Finished: %s is in the model list." % MODEL_NAME
    entry = page.locator("#models li", has_text=MODEL_NAME).text_content()
    assert "%s (in use)" % MODEL_NAME in entry and "· llama · F32 · trained in this browser" in entry
    assert page.text_content("#status") == ready_status(MODEL_NAME)
    set_settings(page, **GREEDY)
    page.click("#new-chat")  # the question on its own, as it was trained
    answer, _ = ask(page, question)
    assert answer == expected


def test_trained_model_is_kept_and_answers_offline(page, server):
    question, expected = first_training_chat()
    ensure_trained(page)
    with reloaded_offline(page, server):
        assert page.text_content("#status") == ready_status(MODEL_NAME)
        assert "%s (in use)" % MODEL_NAME in page.text_content("#models")
        page.click("#new-chat")
        answer, _ = ask(page, question, timeout=ANSWER_TIMEOUT_MS)
        assert answer == expected
        open_panel(page)  # the training worker starts from the offline cache too
        assert panel_state(page) == "ready"


# ---- fine-tuning the chat model (SmolLM2, the default) -----------------------------------------------------
# A page of its own, in a fresh context, so that the model loaded for chat is the default one whatever ran
# above. A full fine-tune of the shipped example (bench/bench_browser_train.py runs one to the end) is
# too long for CI: the tests start a one-epoch run, watch a few steps, stop it,
# and save the model as it stands with Save now, which takes the same path as a finished run: its LoRA adapter
# (the default), then the merged model too. They replay
# REPLAY of the 48 general questions (the base model answers each at about 10 tokens/s here).

BASE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TUNED_NAME = "SmolLM2-135M-Instruct.Q4_1-tuned"
FINETUNE_STEP_TIMEOUT_MS = 10 * 60_000
REPLAY = 2


def example_training_chats() -> int:
    """The shipped example's chats that train (every 20th is held out for validation)."""
    from pychat_wasm.train.data import read_training_file, split_validation
    from pychat_wasm.browser.train_worker import FINETUNE_EXAMPLE

    return len(split_validation(read_training_file(FINETUNE_EXAMPLE).conversations)[0])


EXAMPLE_TRAINING_CHATS = example_training_chats()


@pytest.fixture(scope="module")
def replayed(smollm2_path):
    """How many of the first REPLAY questions SmolLM2 answers within the limit, worked out natively: the
    worker's greedy answers must be the same."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.train.replay import ReplayAnswers, replay_plan

    return len(ReplayAnswers(replay_plan(GGUFFile.open(str(smollm2_path))), REPLAY).answer_all())


finetune_page = page_fixture("server", PANEL_RECORDER + TRAIN_WORKER_PROBE, **GREEDY)


def choose_finetune(page, epochs=1):
    open_panel(page)
    page.select_option("#train-mode", "finetune")
    page.check("#train-source-builtin")
    page.fill("#train-epochs", str(epochs))
    page.evaluate("n => { self.pychatTrainingOverrides = {replay: n}; }", REPLAY)


def test_finetune_mode_shows_its_options(finetune_page):
    """... with the browser's fine-tuning defaults, which Python declares once (protocol.FinetuneOptions) and
    uses for what the page leaves out."""
    page = finetune_page
    open_panel(page)
    page.select_option("#train-mode", "finetune")
    defaults = FinetuneOptions()
    # no epochs unless the user sets them: the run's plan chooses them from the data (train/finetune_plan.py)
    assert defaults.epochs is None and page.input_value("#train-epochs") == ""
    assert page.get_attribute("#train-epochs", "placeholder") == "from the data"
    assert float(page.input_value("#train-lr")) == defaults.lr
    assert page.text_content("#train-recipe") == ("LoRA rank %d on the attention (and the MLP for a small file), "
                                                  "batch %d × %d tokens") % (
        defaults.rank, defaults.batch_size, defaults.seq_len)
    choose_finetune(page)
    assert page.is_visible("#train-epochs") and page.is_visible("#train-lr")
    assert page.is_hidden("#train-preset")
    assert page.text_content("#train-base") == BASE_NAME
    assert page.input_value("#train-name") == TUNED_NAME
    assert "Tessmarrow" in page.text_content("#train-builtin-label")
    page.select_option("#train-mode", "scratch")  # and back: the name follows the mode
    assert page.input_value("#train-name") == "my-model" and page.is_visible("#train-preset")
    choose_finetune(page)


def test_finetune_that_does_not_fit_shows_the_memory_message_and_changes_nothing(finetune_page):
    page = finetune_page
    choose_finetune(page)
    state = panel_state(page)
    models = page.text_content("#models")
    page.evaluate("self.pychatTrainingOverrides.memory_limit = 100000000")  # a 0.1 GB heap
    try:
        page.click("#train-start")
        page.wait_for_selector("#train-message[data-kind=error]:has-text('needs about')")
    finally:
        page.evaluate("delete self.pychatTrainingOverrides.memory_limit")
    message = page.text_content("#train-message")
    assert re.match(r"Training could not start: fine-tuning %s needs about \d+\.\d GB" % re.escape(BASE_NAME),
                    message), message
    assert "more than the 0.1 GB a browser worker can use" in message
    assert panel_state(page) == state and training(page)["plan"] is None
    assert page.text_content("#train-step") == "–" and page.is_disabled("#train-stop")
    assert page.text_content("#models") == models
    assert page.text_content("#status") == ready_status(BASE_NAME)


def test_finetune_shows_loss_and_eta_then_stops_and_chat_still_works(finetune_page, replayed):
    page = finetune_page
    choose_finetune(page, epochs=1)
    page.click("#train-start")
    page.wait_for_selector("#train-status[data-state=training]", timeout=FINETUNE_STEP_TIMEOUT_MS)
    wait_step(page, 3, timeout=FINETUNE_STEP_TIMEOUT_MS)
    shown = page.evaluate("__shown.status")
    assert ["The base model answers general questions so that it keeps them: %d of %d…" % (i, REPLAY)
            for i in range(1, REPLAY + 1)] == [t for t in shown if "general questions" in t], shown
    state = training(page)
    assert state["mode"] == "finetune" and state["name"] == TUNED_NAME
    steps = -(-(EXAMPLE_TRAINING_CHATS + replayed) // FinetuneOptions().batch_size)  # one epoch
    assert state["totalSteps"] == steps and state["plan"]["phases"][0]["examples"] == EXAMPLE_TRAINING_CHATS + replayed
    shown_plan = page.text_content("#train-plan")  # the plan's reasons, as the command line prints them
    assert "validation: 2 held out" in shown_plan and "trained on once (the epochs given)" in shown_plan
    records = state["records"]
    assert all(0 < r["loss"] < 20 and r["phase"] == "finetune" for r in records), records
    seconds = [r["seconds"] for r in records]
    print("\nfine-tune steps in the browser: %s s (tokens %s); full run of %d steps: about %.0f s"
          % ([round(s, 2) for s in seconds], [r["tokens"] for r in records], state["totalSteps"],
             statistics.mean(seconds) * state["totalSteps"]))
    assert page.text_content("#train-step").endswith("of %d (finetune)" % steps)
    assert ":" in page.text_content("#train-eta")
    float(page.text_content("#train-loss"))
    page.click("#train-stop")
    page.wait_for_selector("#train-status[data-state=paused]", timeout=FINETUNE_STEP_TIMEOUT_MS)
    paused_at = training(page)["step"]
    assert steps_seen_over_two_worker_round_trips(page) == 0  # really paused
    assert training(page)["step"] == paused_at
    assert page.text_content("#status") == ready_status(BASE_NAME)
    set_settings(page, max_tokens=4)
    answer, stats = ask(page, "Hi!")
    assert answer and stats.startswith("4 tokens")
    set_settings(page, **GREEDY)


# The page's stored file as bytes (base64 over the evaluate bridge).
STORED_BYTES = """async (id) => {
  const bytes = new Uint8Array(await pychat.store.readVerified(id));
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}"""


def test_a_finetune_saves_its_adapter_under_the_base_and_applies_it(finetune_page, replayed, smollm2_path, tmp_path):
    """By default Save now keeps the LoRA adapter alone: listed under SmolLM2, applied to it without loading
    it again; the file is llama.cpp's adapter format as gguf-py reads it, and fits SmolLM2."""
    import base64

    import gguf

    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.lora import check_base, read_adapter

    page = finetune_page
    if training(page)["mode"] != "finetune" or panel_state(page) != "paused":
        test_finetune_shows_loss_and_eta_then_stops_and_chat_still_works(page, replayed)
    weights = [state[0] for state in worker_states(page)]
    assert not page.is_checked("#train-merged")
    page.click("#train-save")
    page.wait_for_selector("#train-message[data-kind=notice]:has-text('Saved the adapter %s')" % TUNED_NAME,
                           timeout=FINETUNE_STEP_TIMEOUT_MS)
    wait_ready(page)
    message = page.text_content("#train-message")
    assert message.endswith("it is listed under %s and applied to it." % BASE_NAME), message
    assert page.text_content("#status") == ready_status(BASE_NAME)  # no merged model by default
    adapter_id = "adapter/default/%s/%s" % (BASE_NAME, TUNED_NAME)
    entry = page.locator("#models > li[data-id='default/%s'] .adapters li[data-id='%s']" % (BASE_NAME, adapter_id))
    assert "trained in this browser" in entry.text_content()
    assert page.get_by_role("checkbox", name="Apply adapter " + TUNED_NAME).is_checked()
    assert worker_states(page) == [(w, [TUNED_NAME]) for w in weights]  # applied, the base not loaded again
    path = tmp_path / "tuned.lora.gguf"
    path.write_bytes(base64.b64decode(page.evaluate(STORED_BYTES, adapter_id)))
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "adapter" and reader.fields["adapter.type"].contents() == "lora"
    rank = FinetuneOptions().rank
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}  # ggml order: [in, rank] and [rank, out]
    assert shapes and all(shape[1 if name.endswith("lora_a") else 0] == rank for name, shape in shapes.items())
    assert path.stat().st_size < 10e6, path.stat().st_size
    check_base(read_adapter(GGUFFile.open(str(path))), GGUFFile.open(str(smollm2_path)))  # records SmolLM2's sha256


def test_saved_finetuned_model_is_listed_and_used_for_chat(finetune_page, replayed):
    page = finetune_page
    if training(page)["mode"] != "finetune" or panel_state(page) != "paused":
        test_finetune_shows_loss_and_eta_then_stops_and_chat_still_works(page, replayed)
    page.check("#train-merged")  # the merged model as well
    page.click("#train-save")
    page.wait_for_selector("#train-message[data-kind=notice]:has-text('Saved %s')" % TUNED_NAME,
                           timeout=FINETUNE_STEP_TIMEOUT_MS)
    assert "in use for chat" in page.text_content("#train-message")
    wait_ready(page)
    assert page.text_content("#status") == ready_status(TUNED_NAME)
    entry = page.locator("#models > li[data-id='trained/%s']" % TUNED_NAME).text_content()
    assert "%s (in use)" % TUNED_NAME in entry and "Q8_0" in entry and "trained in this browser" in entry, entry
    size = page.evaluate("""async (id) => (await (await Pychat.ModelStore.open()).get(id)).size""", "trained/" + TUNED_NAME)
    assert 100e6 < size < 200e6, size  # Q8_0: about 145 MB, not the 540 MB of F32
    set_settings(page, max_tokens=8)
    page.click("#new-chat")
    answer, _ = ask(page, "What is the capital of France?")
    assert answer.strip()
    set_settings(page, **GREEDY)


def test_finetuned_model_is_kept_and_answers_offline(finetune_page, replayed, server):
    page = finetune_page
    if page.text_content("#status") != ready_status(TUNED_NAME):
        test_saved_finetuned_model_is_listed_and_used_for_chat(page, replayed)
    short = dict(GREEDY, max_tokens=8)
    set_settings(page, **short)
    page.click("#new-chat")
    online, _ = ask(page, "What is the capital of France?")
    with reloaded_offline(page, server):
        assert page.text_content("#status") == ready_status(TUNED_NAME)
        set_settings(page, **short)
        page.click("#new-chat")
        offline, _ = ask(page, "What is the capital of France?")
        assert offline == online  # the same weights, from the model cache
    set_settings(page, **GREEDY)
