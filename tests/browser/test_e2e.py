"""End to end: the built site in Debian Chromium, served on 127.0.0.1, with the real SmolLM2 model.

One page in one browser context walks through a user's life with the app, test by test, in order; a test
that needs an earlier one's result (a first turn, a cached model) sets it up itself when it is missing, so
each also runs alone with -k. Answers stay short (the model writes about 3-12 tokens a second here,
depending on load). Answers are compared with the native engine on the same model and
settings, and the golden answer with the reference transformers and llama.cpp give.
The last tests need a first visit of their own, each in a fresh browser context. Tiny GGUF files
written by e2e_helpers stand in for models that must be rejected or that answer with an HTML payload.
"""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from e2e_helpers import (ANSWER_TIMEOUT_MS, GREEDY, POOL_SIZE, REPO, apply_model_settings, ask, chatml_tokens,
                         page_fixture, ready_status, reloaded_offline, set_settings, settings_dialog,
                         wait_offline_ready, wait_ready)
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION
from tiny_models import write_tiny_gguf

from pychat_wasm.browser import chat_worker as worker_api

pytestmark = [pytest.mark.browser, pytest.mark.slow]

READY = ready_status("SmolLM2-135M-Instruct.Q4_1.gguf")
SECOND_QUESTION = "And of Germany? Answer in one sentence."
SAMPLED = dict(temperature=0.9, top_k=30, top_p=0.9, min_p=0.02, repeat_penalty=1.2, max_tokens=12, seed=1234)
PIRATE = "You are a pirate. Answer like one."
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

# Records every start-up phase the page shows (#status[data-phase]) into window.__phases, and every
# download progress line into window.__progress.
PHASE_RECORDER = """
window.__phases = [];
window.__progress = [];
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  const record = () => { if (window.__phases[window.__phases.length - 1] !== status.dataset.phase)
                           window.__phases.push(status.dataset.phase); };
  new MutationObserver(record).observe(status, {attributes: true});
  const progress = document.getElementById("progress-text");
  new MutationObserver(() => window.__progress.push(progress.textContent)).observe(progress, {childList: true});
});
"""

CACHED_MODEL = """async (prefix) => {
  const store = await Pychat.ModelStore.open();
  return (await store.list()).filter((r) => r.id.startsWith(prefix))
    .map((r) => ({id: r.id, complete: r.complete, size: r.size, sha256: r.sha256, received: r.received}));
}"""

# Flip one byte in the 4th stored chunk of the default model, as a disk error would.
CORRUPT_MODEL = """async () => {
  const store = await Pychat.ModelStore.open();
  const record = (await store.list()).find((r) => r.id.startsWith("default/"));
  const key = [record.id, 3];
  const read = store.db.transaction("chunks").objectStore("chunks").get(key);
  const blob = await new Promise((resolve) => { read.onsuccess = () => resolve(read.result); });
  const bytes = new Uint8Array(await blob.arrayBuffer());
  bytes[1000] ^= 0xff;
  const tx = store.db.transaction("chunks", "readwrite");
  tx.objectStore("chunks").put(new Blob([bytes]), key);
  await new Promise((resolve) => { tx.oncomplete = resolve; });
}"""


@pytest.fixture(scope="module")
def model_sha256(smollm2_path):
    return hashlib.sha256(smollm2_path.read_bytes()).hexdigest()


def native_answer(parts, question, settings, system_prompt=None, follow_up=None):
    """The native engine's answers, in one conversation; parts = (model, tokenizer, template)."""
    from pychat_wasm.chat.sampler import SamplingSettings
    from pychat_wasm.chat.session import ChatSession

    session = ChatSession(*parts)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    answers = []
    for q in [question] + ([follow_up] if follow_up else []):
        messages.append({"role": "user", "content": q})
        answers.append(list(session.reply(messages, SamplingSettings(**settings)))[-1].text)
        messages.append({"role": "assistant", "content": answers[-1]})
    return answers


@pytest.fixture(scope="module")
def native_answers(smollm2_path):
    """Greedy answers to the two questions in one conversation, then one sampled with a seed and a
    system prompt: what the page must show for the same settings."""
    from pychat_wasm.chat.template import ChatTemplate
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.forward import Model
    from pychat_wasm.tokenizers import load_tokenizer

    gguf = GGUFFile.open(str(smollm2_path))
    tokenizer = load_tokenizer(gguf)
    parts = (Model.from_gguf(gguf), tokenizer, ChatTemplate.from_gguf(gguf, tokenizer))
    greedy = dict(GREEDY, repeat_penalty=1.0)
    return {"greedy": native_answer(parts, GOLDEN_QUESTION, greedy, follow_up=SECOND_QUESTION),
            "sampled": native_answer(parts, GOLDEN_QUESTION, SAMPLED, system_prompt=PIRATE)[0]}


chat_page = page_fixture("server", PHASE_RECORDER, **GREEDY)


def alerts(page, kind):
    return page.locator(".alert[data-kind=%s]" % kind).all_text_contents()


def test_first_visit_downloads_and_caches_the_model(chat_page, server, model_sha256):
    phases = chat_page.evaluate("window.__phases")
    assert phases.index("downloading") < phases.index("loading") < len(phases) - 1 and phases[-1] == "ready", phases
    progress = chat_page.evaluate("window.__progress")
    assert any(re.match(r"[\d.]+ MB of 98\.4 MB · [1-9]\d?% · [\d.]+ (MB|kB)/s$", line) for line in progress), progress
    assert re.match(r"98\.4 MB of 98\.4 MB · 100% · [\d.]+ (MB|kB)/s$", progress[-1])
    assert chat_page.is_hidden("#progress-box")  # the bar goes away once the model is stored
    # The fit check read the header first (its 1.9 MB need the second, 8x larger window), then the download.
    path = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert server.model_requests() == [{"path": path, "range": r} for r in ("bytes=0-262143", "bytes=0-2097151", "bytes=0-")]
    assert phases.index("verifying") < phases.index("downloading")
    assert chat_page.text_content("#fit-status") == "SmolLM2-135M-Instruct.Q4_1.gguf: fits"
    assert chat_page.evaluate(CACHED_MODEL, "default/") == [{
        "id": "default/SmolLM2-135M-Instruct.Q4_1.gguf", "complete": True, "size": 98362432,
        "sha256": model_sha256, "received": 98362432}]
    granted = chat_page.get_attribute("#storage-status", "data-persistent")  # headless Chromium says no
    assert chat_page.text_content("#storage-status").startswith(
        {"true": "Storage: persistent", "false": "Storage: best-effort"}[granted])
    wait_offline_ready(chat_page)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf · llama · " in chat_page.text_content("#model-badge")


def test_page_shows_the_runtime_versions(chat_page):
    """The versions Pyodide 0.27.7's own lock file names (installed from npm), as the running worker reports them."""
    lock = json.loads((REPO / "node_modules" / "pyodide" / "pyodide-lock.json").read_text())
    assert chat_page.text_content("#runtime-badge") == "Runtime: Pyodide %s · Python %s · numpy %s" % (
        lock["info"]["version"], lock["info"]["python"], lock["packages"]["numpy"]["version"])


def test_greedy_answer_is_the_native_engines(chat_page, native_answers):
    answer, stats = ask(chat_page, GOLDEN_QUESTION)
    assert native_answers["greedy"][0] == GOLDEN_ANSWER
    assert answer == native_answers["greedy"][0]
    assert re.match(r"8 tokens · [\d.]+ tok/s · first token [\d.]+ s · prompt 42 new \+ 0 cached tokens$", stats)


def test_second_turn_reuses_the_context(chat_page, native_answers):
    if chat_page.locator(".message[data-role=assistant]").count() == 0:  # run alone: the first turn first
        ask(chat_page, GOLDEN_QUESTION)
    answer, stats = ask(chat_page, SECOND_QUESTION)
    assert answer == native_answers["greedy"][1]
    reused = int(re.search(r"(\d+) cached tokens", stats).group(1))
    assert reused >= 42 + 7  # the whole first turn (prompt and answer) stayed in the KV cache


def test_system_prompt_and_seeded_sampling_match_the_native_engine(chat_page, native_answers):
    with settings_dialog(chat_page):  # closing it takes the change (the system prompt is saved on change)
        chat_page.fill("#system-prompt", PIRATE)
    chat_page.click("#new-chat")  # a new chat keeps the system prompt
    chat_page.wait_for_selector(".message", state="detached")
    set_settings(chat_page, **SAMPLED)
    answer, stats = ask(chat_page, GOLDEN_QUESTION)
    assert answer == native_answers["sampled"]
    assert answer != native_answers["greedy"][0]
    with settings_dialog(chat_page):
        chat_page.fill("#system-prompt", "")
    set_settings(chat_page, **GREEDY)


def test_stop_ends_the_answer_early(chat_page):
    set_settings(chat_page, max_tokens=200)
    answers = chat_page.locator(".message[data-role=assistant]")
    before = answers.count()
    chat_page.fill("#input", "Write a long story about a dragon who learns to cook.")
    chat_page.click("#send")
    answer = answers.nth(before)
    chat_page.wait_for_function("el => el.textContent.length > 0", arg=answer.locator(".content").element_handle(),
                           timeout=ANSWER_TIMEOUT_MS)
    chat_page.click("#stop")
    chat_page.wait_for_selector("#status[data-phase=ready]", timeout=30_000)
    stats = answer.locator(".stats").text_content()
    assert stats.endswith("stopped"), stats
    assert int(stats.split(" tokens")[0]) < 20
    assert not chat_page.is_disabled("#send")
    set_settings(chat_page, max_tokens=GREEDY["max_tokens"])


def test_reload_without_network_keeps_the_chat_and_answers(chat_page, server, native_answers):
    saved = chat_page.locator(".message .content").all_text_contents()
    with reloaded_offline(chat_page, server):
        assert chat_page.locator(".message .content").all_text_contents() == saved
        chat_page.click("#new-chat")
        assert chat_page.locator(".message").count() == 0
        answer, _ = ask(chat_page, GOLDEN_QUESTION)
        assert answer == native_answers["greedy"][0]


def test_corrupted_cached_model_is_detected_and_downloaded_again(chat_page, server, model_sha256):
    chat_page.evaluate(CORRUPT_MODEL)
    since = len(server.log)
    chat_page.reload()
    wait_ready(chat_page)
    assert any("was damaged (its sha256 checksum does not match); it was deleted. Downloading it again." in text
               for text in alerts(chat_page, "notice"))
    # downloaded again from its first byte (on a loaded machine a stalled download may resume: later parts only)
    first, *resumed = server.model_requests(since)
    assert first == {"path": "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "range": "bytes=0-"}
    assert all(r["path"] == first["path"] and r["range"] != "bytes=0-" for r in resumed), resumed
    assert chat_page.evaluate(CACHED_MODEL, "default/")[0]["sha256"] == model_sha256


def upload(page, name, data):
    page.set_input_files("#model-file", files=[{"name": name, "mimeType": "application/octet-stream",
                                                "buffer": data}])


def test_non_gguf_file_shows_its_error(chat_page):
    upload(chat_page, "page.gguf", b"<!doctype html><html><body><h1>404 Not Found</h1></body></html>")
    chat_page.wait_for_selector(".alert[data-kind=error]")
    wait_ready(chat_page)
    assert any("Could not load page.gguf: page.gguf is not a GGUF file" in text and "HTML page" in text
               for text in alerts(chat_page, "error"))
    assert chat_page.text_content("#status") == READY
    assert "page.gguf" not in chat_page.text_content("#models")


def test_url_that_returns_a_web_page_shows_its_error(chat_page, server):
    chat_page.fill("#model-url", server.url + "index.html")
    chat_page.click("#model-url-add")
    chat_page.wait_for_selector(".alert[data-kind=error]:has-text('index.html is not a GGUF model')")
    wait_ready(chat_page)
    assert any("the address returned a web page (HTML), not a model file" in t for t in alerts(chat_page, "error"))
    assert chat_page.text_content("#status") == READY
    assert chat_page.evaluate(CACHED_MODEL, "url/") == []


def drop_file(page, name, data):
    """Drop a file on the drop zone, as dragging it from the desktop does."""
    transfer = page.evaluate_handle(
        "([name, bytes]) => { const t = new DataTransfer(); t.items.add(new File([new Uint8Array(bytes)], name));"
        " return t; }", [name, list(data)])
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


@pytest.mark.parametrize("arch, weight_type, message, add_file", [
    ("mamba", "F32", "has architecture 'mamba'; supported architectures: llama", drop_file),
    ("llama", "IQ2_XXS", "cannot dequantize IQ2_XXS tensors", upload),
])
def test_unsupported_model_shows_its_error(chat_page, tmp_path, arch, weight_type, message, add_file):
    path = write_tiny_gguf(tmp_path / ("%s-%s.gguf" % (arch, weight_type)), "Hi!", arch=arch, weight_type=weight_type)
    errors_before = len(alerts(chat_page, "error"))
    add_file(chat_page, path.name, path.read_bytes())
    chat_page.wait_for_function("n => document.querySelectorAll('.alert[data-kind=error]').length > n",
                                arg=errors_before)
    wait_ready(chat_page)
    assert message in alerts(chat_page, "error")[-1]
    assert chat_page.text_content("#status") == READY


def native_fit(path, file_size=None, context_length=None):
    """What worker_api.check_fit says natively of the file's first MB (the page asks Python in the browser)."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1 << 20), np.uint8)
    options = json.dumps({"context_length": context_length})
    return json.loads(worker_api.check_fit(header, file_size or path.stat().st_size, options))["fit"]


def test_model_too_big_is_refused_before_its_download(chat_page, server, site):
    # A 3 GB file (sparse: the tiny model, then nothing): one array of it would pass wasm's 2 GiB.
    (site / "extra").mkdir(exist_ok=True)
    path = write_tiny_gguf(site / "extra" / "huge.gguf", "Hi!")
    with open(path, "r+b") as f:
        f.truncate(3_000_000_000)
    fit = native_fit(path)
    assert fit["best"] is None
    message = fit["policies"]["quantized"]["message"]  # 'does not fit: one array needs 3.00 GB, ...'
    since = len(server.log)
    chat_page.fill("#model-url", server.url + "extra/huge.gguf")
    chat_page.click("#model-url-add")
    chat_page.wait_for_selector(".alert[data-kind=error]:has-text('Could not load huge.gguf: %s')" % message)
    wait_ready(chat_page)  # the model used before, still loaded
    assert chat_page.text_content("#status") == READY
    assert chat_page.text_content("#fit-status") == "huge.gguf: " + message
    assert [r["range"] for r in server.model_requests(since)] == ["bytes=0-262143"]  # the header, no download
    assert "huge.gguf" not in chat_page.text_content("#models")


def test_model_whose_cache_fits_only_a_shorter_context_runs_with_it(chat_page, tmp_path):
    # 25 MB on disk, but its KV cache at 4096 positions (x 131008-wide heads) would not leave the heap room.
    path = write_tiny_gguf(tmp_path / "huge-cache.gguf", "Hi!", head_dim=131008, context_length=4096)
    fit = native_fit(path)
    errors_before = alert_count(chat_page, "error")
    shorter = fit["policies"][fit["best"]]
    assert shorter["verdict"] == "fits with a shorter context" and 256 <= shorter["context_length"] < 4096
    upload(chat_page, path.name, path.read_bytes())
    chat_page.wait_for_selector("#status[data-phase=ready]:has-text('huge-cache.gguf')")
    assert chat_page.text_content("#fit-status") == "huge-cache.gguf: " + shorter["message"]
    assert any(t.startswith("huge-cache.gguf %s: it runs with that context" % shorter["message"])
               for t in alerts(chat_page, "notice"))
    assert "/ %d tokens" % shorter["context_length"] in chat_page.text_content("#context-budget")
    assert alert_count(chat_page, "error") == errors_before  # loaded into a fresh Python: no out-of-memory
    remove_cached(chat_page, path.name)


def test_the_context_picker_reloads_the_model_with_that_context(chat_page, tmp_path):
    path = write_tiny_gguf(tmp_path / "picked.gguf", "Hi!", context_length=4096)
    upload(chat_page, path.name, path.read_bytes())
    chat_page.wait_for_selector("#status[data-phase=ready]:has-text('picked.gguf')")
    assert "/ 4096 tokens" in chat_page.text_content("#context-budget")
    assert apply_model_settings(chat_page, context_length=512) == "Applied: picked.gguf is reloaded with them."
    chat_page.wait_for_function("() => document.getElementById('context-budget').textContent.includes('/ 512 tokens')")
    wait_ready(chat_page)
    assert chat_page.evaluate("JSON.parse(localStorage.getItem('pychat.context'))") == 512
    apply_model_settings(chat_page, context_length="")  # back to each model's default for the tests after this one
    chat_page.wait_for_function("() => document.getElementById('context-budget').textContent.includes('/ 4096 tokens')")
    wait_ready(chat_page)
    remove_cached(chat_page, path.name)


def alert_count(page, kind):
    return len(alerts(page, kind))


def remove_cached(page, name):
    page.locator("#models li", has_text=name).get_by_role("button", name="Remove").click()
    page.locator("#models li", has_text=name).wait_for(state="detached")


def use_payload_model(page, tmp_path):
    """Add the tiny model that answers PAYLOAD as a local file; it is in use and cached afterwards."""
    path = write_tiny_gguf(tmp_path / "payload.gguf", PAYLOAD)
    upload(page, "payload.gguf", path.read_bytes())
    page.wait_for_selector("#status[data-phase=ready]:has-text('payload.gguf')")


def use_url_model(page, server, site):
    """Add a tiny model by its URL on the test server; it is downloaded, in use and cached afterwards."""
    (site / "extra").mkdir(exist_ok=True)
    write_tiny_gguf(site / "extra" / "url-model.gguf", "Hello from a URL. ")
    page.fill("#model-url", server.url + "extra/url-model.gguf")
    page.click("#model-url-add")
    page.wait_for_selector("#status[data-phase=ready]:has-text('url-model.gguf')")


def test_own_model_is_cached_and_its_output_shown_as_text(chat_page, tmp_path):
    use_payload_model(chat_page, tmp_path)
    entry = chat_page.locator("#models li", has_text="payload.gguf").text_content()
    assert "(in use)" in entry and "kB · llama · F32" in entry
    set_settings(chat_page, max_tokens=3)
    answer, _ = ask(chat_page, "Say something.")
    assert answer == PAYLOAD * 3
    assert chat_page.locator("#messages img, #messages script").count() == 0
    assert chat_page.evaluate("window.__xss") is None


# Records every text the context meter shows into window.__meter (one entry per event the page handles).
METER_RECORDER = """() => {
  window.__meter = [];
  const meter = document.getElementById("context-budget");
  new MutationObserver(() => window.__meter.push(meter.textContent)).observe(meter, {childList: true});
}"""


def test_context_budget_is_live_warns_and_marks_dropped_turns(chat_page, tmp_path):
    """A 96-token model answering "zz" 3 times: the meter counts each token as it streams, warns once the
    next message will not fit, and after the trim the 2 oldest messages are marked and no longer counted."""
    path = write_tiny_gguf(tmp_path / "budget.gguf", "zz", context_length=96)
    upload(chat_page, "budget.gguf", path.read_bytes())
    chat_page.wait_for_selector("#status[data-phase=ready]:has-text('budget.gguf')")
    chat_page.click("#new-chat")
    chat_page.wait_for_selector("#context-budget:has-text('Context: 0 / 96 tokens')")
    set_settings(chat_page, max_tokens=3)
    chat_page.evaluate(METER_RECORDER)
    sent = []
    for i in range(3):
        sent.append({"role": "user", "content": "m%d 0123456789" % i})
        answer, _ = ask(chat_page, sent[-1]["content"])
        assert answer == "zz" * 3
        sent.append({"role": "assistant", "content": answer})
    kept = sent[2:]  # the reference: a 3rd prompt of all 5 messages + 3 answer tokens would not fit in 96
    assert chatml_tokens(sent[:-1]) + 3 > 96 >= chatml_tokens(kept[:-1]) + 3
    used = [chatml_tokens(sent[:1]) + n for n in range(4)]  # the 1st answer: prompt, then one more per token
    shown = [re.match(r"Context: (\d+) / 96 tokens", text).group(1) for text in chat_page.evaluate("window.__meter")]
    assert [int(n) for n in shown[:4]] == used
    meter = chat_page.text_content("#context-budget")
    assert meter.startswith("Context: %d / 96 tokens" % (chatml_tokens(kept[:-1]) + 3))
    warnings = [text for text in chat_page.evaluate("window.__meter") if "will be dropped" in text]
    assert warnings and "will be dropped" not in chat_page.evaluate("window.__meter")[3]
    messages = chat_page.locator("#messages .message")
    assert [messages.nth(i).get_attribute("data-dropped") for i in range(6)] == ["true"] * 2 + [None] * 4
    assert messages.nth(0).locator(".dropped").text_content() == "Dropped from the model's context"
    chat_page.click("#new-chat")
    chat_page.wait_for_selector("#messages .message", state="detached")
    chat_page.locator("#models li", has_text="budget.gguf").get_by_role("button", name="Remove").click()
    chat_page.locator("#models li", has_text="budget.gguf").wait_for(state="detached")  # the cache as it was


def test_crashed_worker_is_restarted_and_the_app_stays_usable(chat_page, tmp_path):
    if "payload.gguf" not in chat_page.text_content("#status"):  # run alone: the previous test's model
        use_payload_model(chat_page, tmp_path)
    set_settings(chat_page, max_tokens=3)
    messages = chat_page.locator(".message .content").all_text_contents()
    # The last worker dies (with several, one whose events the page does not show): the whole pool restarts.
    chat_page.evaluate("pychat.python.members.at(-1).worker.dispatchEvent(new ErrorEvent('error', {message: 'simulated crash'}))")
    which = "worker %d of %d: " % (POOL_SIZE, POOL_SIZE) if POOL_SIZE > 1 else ""
    chat_page.wait_for_selector(".alert[data-kind=error]:has-text('The Python worker crashed (%ssimulated crash)')" % which)
    chat_page.wait_for_selector("#status[data-phase=ready]:has-text('payload.gguf')")
    assert chat_page.locator(".message .content").all_text_contents() == messages
    answer, _ = ask(chat_page, "Again?")
    assert answer == PAYLOAD * 3


def test_model_from_a_url_is_downloaded_cached_and_used(chat_page, server, site):
    since = len(server.log)
    use_url_model(chat_page, server, site)
    assert server.model_requests(since) == [{"path": "/extra/url-model.gguf", "range": r}
                                            for r in ("bytes=0-262143", "bytes=0-")]  # its header, then the file
    assert chat_page.text_content("#fit-status") == "url-model.gguf: fits"
    assert "url-model.gguf (in use)" in chat_page.locator("#models li", has_text="url-model.gguf").text_content()
    (record,) = chat_page.evaluate(CACHED_MODEL, "url/")
    assert record["complete"] and record["size"] == (site / "extra" / "url-model.gguf").stat().st_size
    set_settings(chat_page, max_tokens=3)
    answer, _ = ask(chat_page, "Hello?")
    assert answer == "Hello from a URL. " * 3


def test_cached_models_can_be_removed(chat_page, server, site, tmp_path):
    if "payload.gguf" not in chat_page.text_content("#models"):  # run alone: the models the tests before add
        use_payload_model(chat_page, tmp_path)
    if "url-model.gguf" not in chat_page.text_content("#models"):
        use_url_model(chat_page, server, site)
    for name in ("url-model.gguf", "payload.gguf"):
        chat_page.locator("#models li", has_text=name).get_by_role("button", name="Remove").click()
        chat_page.locator("#models li", has_text=name).wait_for(state="detached")
    assert [r["id"] for r in chat_page.evaluate(CACHED_MODEL, "")] == ["default/SmolLM2-135M-Instruct.Q4_1.gguf"]


def test_missing_storage_space_says_how_much_is_needed(fresh_context, server):
    page = fresh_context.new_page()
    page.add_init_script("navigator.storage.estimate = async () => ({quota: 50e6, usage: 10e6});")
    since = len(server.log)
    page.goto(server.url)
    page.wait_for_selector("#status[data-phase=error]")
    assert ("Not enough storage for the model: it needs 98.4 MB more, the browser allows 40.0 MB for this site."
            in alerts(page, "error")[0])
    assert server.model_requests(since) and server.downloads(since) == []  # refused after the header alone


def test_interrupted_download_resumes_with_a_range_request(fresh_context, server, model_sha256):
    page = fresh_context.new_page()
    since = len(server.log)
    server.cut_next_model_download(60_000_000)
    page.goto(server.url)
    wait_ready(page)
    requests = server.downloads(since)
    assert [r["range"] == "bytes=0-" for r in requests] == [True, False]
    # What the page had read is kept; what the browser still buffered when the connection broke is
    # lost with the stream, so the download resumes at the cut or somewhat before it, never at 0.
    resumed_at = int(re.match(r"bytes=(\d+)-$", requests[1]["range"]).group(1))
    assert 0 < resumed_at <= 60_000_000
    assert alerts(page, "notice")[0].startswith("Download interrupted at %.1f MB (" % (resumed_at / 1e6))
    assert page.evaluate(CACHED_MODEL, "default/")[0]["sha256"] == model_sha256


def test_two_tabs_download_the_model_once(fresh_context, server, model_sha256):
    since = len(server.log)
    pages = [fresh_context.new_page() for _ in range(2)]
    for page in pages:
        page.goto(server.url, wait_until="commit")
    for page in pages:
        wait_ready(page)
    assert server.downloads(since) == [{"path": "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "range": "bytes=0-"}]
    assert pages[1].evaluate(CACHED_MODEL, "default/")[0]["sha256"] == model_sha256
