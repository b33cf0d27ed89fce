"""Helpers for the browser end-to-end tests: a recording test server, page actions, module fixtures, checks of
what the page stored.

Test-only behaviour (cutting a download half-way) lives here, in a subclass of the product's request
handler, never in build/serve.py itself.
"""
from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import re
import threading
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGE_TIMEOUT_MS = 90_000   # start-up: Python boot + model download/verify/load on 2 busy cores
ANSWER_TIMEOUT_MS = 120_000


def load_build_module(name: str):
    """build/<name>.py by path (build/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pychat_build_" + name, REPO / "build" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve = load_build_module("serve")


def copy_checkout(directory: Path) -> Path:
    """The engine's sources as build_site(sources=...) reads them, copied into `directory` for a test to change."""
    import shutil

    shutil.copytree(REPO / "pychat_wasm", directory / "pychat_wasm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, directory / name)
    return directory


# ---- the server ------------------------------------------------------------------------------------------

class RecordingHandler(serve.SiteHandler):
    """The product's handler, plus a request log and an optional cut of the next model download."""

    def send_head(self):
        self.server.log.append({"path": self.path, "range": self.headers.get("Range")})
        return super().send_head()

    def copyfile(self, source, outputfile):
        cut = self.server.cut_model_after
        if cut is None or not self.path.endswith(".gguf") or self.span_length <= cut:
            return super().copyfile(source, outputfile)
        self.server.cut_model_after = None  # only once
        outputfile.write(source.read(cut))
        outputfile.flush()
        self.close_connection = True
        raise ConnectionAbortedError("test server: connection cut after %d bytes" % cut)

    def log_message(self, format, *args):  # noqa: A002
        pass


class SiteServer:
    """The built site on 127.0.0.1 in a background thread, recording every request; stop() and start()
    take the whole server away and bring it back on the same port (the browser sees a dead network).
    `handler` is a serve.SiteHandler subclass (the benchmark adds its own mounts)."""

    def __init__(self, site: Path, handler=RecordingHandler):
        self.site = site
        self.handler = handler
        self.log: List[Dict[str, Optional[str]]] = []
        self.port = 0
        self.start()
        self.url = "http://127.0.0.1:%d/" % self.port

    def start(self) -> None:
        self.httpd = serve.make_server(self.site, self.port, self.handler)
        self.httpd.log = self.log
        self.httpd.cut_model_after = None
        self.httpd.handle_error = lambda request, address: None  # the cut connection is on purpose
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def model_requests(self, since: int = 0) -> List[Dict[str, Optional[str]]]:
        return [entry for entry in self.log[since:] if entry["path"].endswith(".gguf")]

    def downloads(self, since: int = 0) -> List[Dict[str, Optional[str]]]:
        """The model requests that are no fit check's read of the header (web/fit_check.js)."""
        return [entry for entry in self.model_requests(since) if not is_header_read(entry)]

    def cut_next_model_download(self, after_bytes: int) -> None:
        self.httpd.cut_model_after = after_bytes


def http_get(port: int, path: str, headers: Optional[Dict[str, str]] = None, method: str = "GET"):
    """One request on a fresh connection to 127.0.0.1:port: (response, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def is_header_read(entry: Dict[str, Optional[str]]) -> bool:
    """A fit check's Range request for the first bytes of a model: bytes=0-N (a download asks bytes=N-)."""
    return bool(entry.get("range") and re.match(r"bytes=0-\d+$", entry["range"]))


# ---- page actions ------------------------------------------------------------------------------------------

POOL_SIZE = os.cpu_count() or 1  # the page's default: one worker per core the browser reports
GREEDY = dict(temperature=0, repeat_penalty=1, max_tokens=16, seed=None)  # the sampling form for greedy answers


def chatml_tokens(messages, generation_prompt=True):
    """Tokens of `messages` in the tiny model's ChatML with its byte-level vocabulary: one per special token,
    one per byte of everything else (the messages avoid " a", its only merge)."""
    per_message = [2 + len(("%s\n%s" % (m["role"], m["content"])).encode()) + 1 for m in messages]
    return sum(per_message) + (1 + len(b"assistant\n") if generation_prompt else 0)


def ready_status(model_name: str, workers: int = POOL_SIZE) -> str:
    """The status line once `model_name` is loaded into `workers` workers."""
    return "Ready: %s · %d worker%s" % (model_name, workers, "s" if workers > 1 else "")


def wait_ready(page, timeout: int = PAGE_TIMEOUT_MS) -> None:
    page.wait_for_selector("#status[data-phase=ready]", timeout=timeout)


def wait_offline_ready(page) -> None:
    """The service worker has cached the app and Python."""
    page.wait_for_selector("#offline-status[data-ready=true]")


@contextlib.contextmanager
def reloaded_offline(page, server):
    """The page reloaded from its offline cache, with the server stopped and the network cut until the block ends."""
    wait_offline_ready(page)
    server.stop()
    page.context.set_offline(True)
    try:
        page.reload()
        wait_ready(page)
        yield page
    finally:
        page.context.set_offline(False)
        server.start()


@contextlib.contextmanager
def settings_dialog(page):
    """The Settings dialog (system prompt, sampling, stop strings, response format, model) open for the block, as a
    user opens it (the header's Settings button) and closes it (its Close button). Already open: left open."""
    if page.evaluate("document.getElementById('settings-dialog').open"):
        yield page
        return
    page.get_by_role("button", name="Settings", exact=True).click()
    page.wait_for_selector("#settings-dialog[open]")
    try:
        yield page
    finally:
        page.locator("#settings-dialog").get_by_role("button", name="Close").click()
        page.wait_for_selector("#settings-dialog", state="hidden")


def apply_model_settings(page, context_length=None, workers=None) -> str:
    """Set the Settings dialog's Model section as a user does and Apply: context_length "" is the model's own,
    workers "auto" or a count (as a string); None leaves a field as it is. Returns what the section then says."""
    with settings_dialog(page):
        if context_length is not None:
            page.fill("#context-length", str(context_length))
        if workers is not None:
            page.select_option("#workers", workers)
        page.click("#model-settings-apply")
        return page.text_content("#model-settings-status")


def set_settings(page, **values) -> None:
    """Fill the sampling form in the Settings dialog: set_settings(page, temperature=0, max_tokens=8)."""
    with settings_dialog(page):
        for name, value in values.items():
            page.fill("#" + name.replace("_", "-"), "" if value is None else str(value))


def ask(page, text: str, timeout: int = ANSWER_TIMEOUT_MS):
    """Send `text` with Enter and wait for the streamed answer to finish; returns (answer, stats line)."""
    answers_before = page.locator(".message[data-role=assistant]").count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    page.wait_for_function(  # this answer's end (an earlier answer may have been cut off by an error)
        "n => (document.querySelectorAll('.message[data-role=assistant]')[n] || {dataset: {}}).dataset.done",
        arg=answers_before, timeout=timeout)
    wait_turn_ended(page)
    answer = page.locator(".message[data-role=assistant]").nth(answers_before)
    return shown_messages(page, "assistant")[answers_before]["content"], answer.locator(".stats").text_content()


def wait_turn_ended(page, timeout: int = ANSWER_TIMEOUT_MS) -> None:
    """Until the page's turn is over: its answer (whole, cut short or failed) saved, the input free again."""
    page.wait_for_function("() => !pychat.generating", timeout=timeout)


def shown_messages(page, role: Optional[str] = None) -> List[Dict[str, str]]:
    """The messages on the page [{role, content}] (of `role` only, if given), each with the text it shows as
    written (Markdown source) rather than as rendered."""
    return page.evaluate("""(role) => pychat.chat.view.messages.map((m) => ({role: m.root.dataset.role, content: m.text}))
                                        .filter((m) => !role || m.role === role)""", role)


# The conversation on the page as IndexedDB holds it: [{role, content}, ...].
SAVED_MESSAGES = """async () => {
  const saved = await pychat.conversations.get(pychat.conversation.id);
  return saved ? saved.messages.map(({role, content}) => ({role, content})) : [];
}"""


def saved_messages(page) -> List[Dict[str, str]]:
    return page.evaluate(SAVED_MESSAGES)


# The messages the last answer's prompt kept and the answer, as its stream reported them (the usage chunk's
# context_budget.dropped: how many of the oldest messages the prompt left out) and the page saved them.
PROMPT_MESSAGES = """async () => {
  const saved = await pychat.conversations.get(pychat.conversation.id);
  return saved ? saved.messages.slice(saved.dropped || 0).map(({role, content}) => ({role, content})) : [];
}"""


def python_messages(page) -> List[Dict[str, str]]:
    """What Python's last answer used (Python keeps no conversation): the messages its prompt kept, then the
    answer, by the usage chunk's count of dropped messages and the streamed answer."""
    return page.evaluate(PROMPT_MESSAGES)


def drop_files(page, selector: str, files: Dict[str, bytes]) -> None:
    """Drop files {name: bytes} on the element at `selector`, as dragging them from the desktop does."""
    transfer = page.evaluate_handle(
        "files => { const t = new DataTransfer();"
        " for (const [name, bytes] of files) t.items.add(new File([new Uint8Array(bytes)], name));"
        " return t; }", [[name, list(data)] for name, data in files.items()])
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@contextlib.contextmanager
def new_context(browser):
    """A browser context of its own (storage, caches, service worker: a first visit), closed afterwards."""
    context = browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


def alert_texts(page, kind: str) -> List[str]:
    """The texts of the alerts of `kind` ("error" | "notice") on the page, without their buttons."""
    return page.locator(".alert[data-kind=%s] > span" % kind).all_text_contents()


def chat_workers(page):
    """The page's chat workers in rank order (Playwright's handles: evaluate() runs code inside one)."""
    workers = [w for w in page.workers if w.url.endswith("/worker.js")]
    return sorted(workers, key=lambda w: w.evaluate("pool.rank"))


def chat_worker(page):
    """The first chat worker: the one whose events the page shows."""
    return chat_workers(page)[0]


# In a chat worker: the identity of the weights it loaded, and the names of the LoRA adapters applied, as JSON.
WORKER_STATE = """py.runPython(`
import json, pychat_wasm.browser.chat_worker as w
model = w._worker.session.model
json.dumps([id(model._unadapted[0]), [adapter.name for adapter, _ in model.adapters]])`)"""


def worker_states(page):
    """[(identity of the weights, [names of the adapters applied]), ...] of each chat worker, in rank order: the
    same identity before and after means the model was not loaded again."""
    import json

    return [tuple(json.loads(worker.evaluate(WORKER_STATE))) for worker in chat_workers(page)]


def open_ready_page(context, url: str, init_script: str, **settings):
    """A new page of `context` with `init_script` installed, at `url`, ready to chat, with `settings` set."""
    page = context.new_page()
    page.add_init_script(init_script)
    page.goto(url)
    wait_ready(page)
    set_settings(page, **settings)
    return page


# The saved snapshot as the page's origin stores it: its record and the sha256 of the bytes actually stored
# (null: none). With `wait`, first waits (polling IndexedDB, up to 3 minutes) until one made after `after`
# (ms since 1970) is there.
PYTHON_SNAPSHOT = """async ({wait, after}) => {
  const read = async () => {
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open("pychat-python", 1);
      request.onupgradeneeded = () => request.result.createObjectStore("snapshots", {keyPath: "key"});
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    const records = await new Promise((resolve) => {
      const request = db.transaction("snapshots").objectStore("snapshots").getAll();
      request.onsuccess = () => resolve(request.result);
    });
    db.close();
    return records.filter((r) => r.made > after);
  };
  let records = await read();
  const deadline = Date.now() + 180000;  // a snapshot's boot on 2 busy cores; then null says it never came
  while (wait && !records.length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    records = await read();
  }
  if (!records.length) return null;
  const {key, size, sha256, bytes} = records[0];
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  const stored = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  return {key, size, sha256, stored_bytes: bytes.byteLength, stored_sha256: stored, count: records.length};
}"""

def python_snapshot(page, wait: bool = True, after: float = 0):
    """The Python snapshot the page's origin saved (web/python_snapshot.js): {key, size, sha256, stored_bytes,
    stored_sha256, count}, or None; with `wait`, once one made after `after` (ms since 1970) is there."""
    return page.evaluate(PYTHON_SNAPSHOT, {"wait": wait, "after": after})


# ---- module fixtures -------------------------------------------------------------------------------------

def page_fixture(server_fixture: str = "server", init_script: str = "", **settings):
    """A module fixture: a page in a browser context of its own (page.context), at the URL of the server that
    the fixture named `server_fixture` gives, with `init_script` installed, ready to chat, `settings` set.

        page = page_fixture("server", PANEL_RECORDER, **GREEDY)          # in a test module
    """
    @pytest.fixture(scope="module")
    def page(browser, request):
        server = request.getfixturevalue(server_fixture)
        with new_context(browser) as context:
            yield open_ready_page(context, server.url, init_script, **settings)
    return page


def fault_site_fixtures(payload: str, padding: int, download: Dict):
    """A module's three fixtures for a site whose default model is a tiny one (fault_server.build_fault_site),
    to assign to these names:

        fault_site, fault_server, files = fault_site_fixtures(PAYLOAD, MODEL_BYTES, DOWNLOAD)

    fault_site: the built site (FaultSite); fault_server: a FaultServer for it, its default model served with
    the faults a test plans; files: model id -> the true bytes, for check_stored_models() (the tests add the
    models they serve)."""
    from fault_server import build_fault_site, serving

    @pytest.fixture(scope="module")
    def fault_site(tmp_path_factory):
        return build_fault_site(tmp_path_factory.mktemp("fault_site"), payload, padding, download)

    @pytest.fixture(scope="module")
    def fault_server(fault_site):
        with serving(fault_site) as server:
            yield server

    @pytest.fixture(scope="module")
    def files(fault_site):
        return {fault_site.model_id: fault_site.model_bytes}

    return fault_site, fault_server, files


# ---- what the page stored ----------------------------------------------------------------------------------

# Every record of the page's model store with the sha256 of the bytes actually stored for it.
STORED_MODELS = """async () => {
  const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  const out = [];
  for (const record of await pychat.store.list()) {
    const bytes = await pychat.store.readAll(record);
    out.push({id: record.id, complete: record.complete, received: record.received, stored: bytes.byteLength,
              sha256: hex(await crypto.subtle.digest("SHA-256", bytes)), recorded_sha256: record.sha256});
  }
  return out;
}"""


def check_stored_models(page, files: Dict[str, bytes]) -> Dict[str, dict]:
    """Assert that every model the page stored is a prefix of its true file (`files`: id -> bytes), and a
    complete one all of it under its own sha256: never a corrupt copy. Returns the records by id."""
    import hashlib

    records = {r["id"]: r for r in page.evaluate(STORED_MODELS)}
    for model_id, record in records.items():
        true = files[model_id]
        assert record["stored"] == record["received"] <= len(true), record
        assert record["sha256"] == hashlib.sha256(true[:record["received"]]).hexdigest(), record
        if record["complete"]:
            assert record["received"] == len(true) and record["recorded_sha256"] == record["sha256"], record
    return records


def luminance(css_colour: str) -> float:
    """WCAG relative luminance of an rgb()/rgba() colour as getComputedStyle gives it (0 black .. 1 white)."""
    channels = [float(v) / 255 for v in re.findall(r"[\d.]+", css_colour)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two such colours (4.5 is the minimum for text, 7 the enhanced level)."""
    high, low = sorted([luminance(a), luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)
