"""Storage and worker faults, in the real page in Chromium: storage running out while the model is being
stored, no IndexedDB at all (private browsing), the model cache evicted between visits, and the Python
worker killed, or out of memory, in the middle of an answer.

The conversation is never lost: the messages, and the text of the answer written so far, stay on the page
and in IndexedDB, and the restarted worker answers the next message after all of them. The model is a tiny
one (tests/support/fault_server.py builds the site with it) that answers its payload token by token.
References: the error Chromium's IndexedDB aborts a write with when the quota is exceeded,
Chromium's clearing of site data (CDP Storage.clearDataForOrigin) for the eviction, the server's log.
"""
from __future__ import annotations

import threading
import time

import pytest

from e2e_helpers import (ANSWER_TIMEOUT_MS, PAGE_TIMEOUT_MS, POOL_SIZE, alert_texts, ask, chat_worker, chat_workers,
                         check_stored_models, fault_site_fixtures, open_ready_page, page_fixture, python_messages,
                         saved_messages, set_settings, shown_messages, wait_ready, wait_turn_ended)
from fault_server import Fault

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAYLOAD = "Still here. "
MODEL_BYTES = 17_000_000  # three IndexedDB chunks of 8 MiB
CHUNK_BYTES = 8 * 1024 * 1024
SETTINGS = dict(temperature=0, max_tokens=3)

# The disk fills up once window.__diskFull is set: IndexedDB aborts each chunk write with the error Chromium
# gives when the quota is exceeded, and navigator.storage.estimate() reports 1 MB left. (Chromium's CDP
# Storage.overrideQuotaForOrigin does not change the quota a page sees in Chromium 156.)
DISK_FILLS_UP = """
window.__diskFull = false;
const put = IDBObjectStore.prototype.put;
IDBObjectStore.prototype.put = function (...args) {
  const request = put.apply(this, args);
  const transaction = this.transaction;
  if (window.__diskFull && this.name === "chunks") {
    Object.defineProperty(transaction, "error",
      {value: new DOMException("The current transaction exceeded its quota limitations.", "QuotaExceededError")});
    request.addEventListener("success", () => transaction.abort());  // as a commit that does not fit
  }
  return request;
};
const estimate = navigator.storage.estimate.bind(navigator.storage);
navigator.storage.estimate = async () => {
  const real = await estimate();
  return window.__diskFull ? {...real, quota: real.usage + 1e6} : real;
};
"""

# IndexedDB as a private window of some browsers has it: every open() fails.
NO_INDEXEDDB = """
IDBFactory.prototype.open = function () {
  const request = {error: new DOMException("A mutation operation was attempted on a database that did not " +
                                           "allow mutations.", "InvalidStateError")};
  setTimeout(() => request.onerror && request.onerror(new Event("error")));
  return request;
};
"""


fault_site, fault_server, files = fault_site_fixtures(PAYLOAD, MODEL_BYTES, {"stall_seconds": 60, "retry_delay_ms": 100})
page = page_fixture("fault_server", **SETTINGS)


def start_long_answer(page):
    """Send a question whose answer would be 300 tokens long."""
    set_settings(page, max_tokens=300)
    page.fill("#input", "Tell me everything.")
    page.press("#input", "Enter")


def assert_conversation_kept(page):
    """The interrupted answer is on the page and saved; the chat goes on with the next question, which the
    restarted worker answers after the whole conversation."""
    wait_turn_ended(page)
    shown = shown_messages(page)
    partial_answer = shown[-1]["content"]
    assert shown[-1]["role"] == "assistant" and partial_answer.startswith(PAYLOAD * 5)
    assert partial_answer.count(PAYLOAD) < 300
    assert saved_messages(page) == shown
    wait_ready(page)
    set_settings(page, **SETTINGS)
    answer, _ = ask(page, "And now?")
    assert answer == PAYLOAD * SETTINGS["max_tokens"]
    used = python_messages(page)  # the newest messages: the prompt may have left out the oldest
    assert saved_messages(page) == shown_messages(page) and saved_messages(page)[-len(used):] == used


def wait_stored(page, received: int) -> None:
    """Until the page's store holds `received` bytes of the model (wait_for_function awaits no promise)."""
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    script = "async () => self.pychat && pychat.store ? ((await pychat.store.list())[0] || {}).received : null"
    while page.evaluate(script) != received:
        assert time.monotonic() < deadline, "the page never stored %d bytes" % received
        time.sleep(0.1)


def test_quota_exhausted_while_storing_keeps_what_was_stored_and_resumes(fresh_context, fault_server, fault_site,
                                                                        files):
    model_path = fault_site.model_path
    resume = threading.Event()
    fault_server.plan(model_path, Fault(stall_after=CHUNK_BYTES + 400_000, stall_seconds=60, resume=resume))
    page = fresh_context.new_page()
    page.add_init_script(DISK_FILLS_UP)
    page.goto(fault_server.url)
    try:  # the first chunk is stored, the rest is on its way: now the disk fills up
        wait_stored(page, CHUNK_BYTES)
        page.evaluate("window.__diskFull = true")
    finally:
        resume.set()
    page.wait_for_selector("#status[data-phase=error]")
    (message,) = alert_texts(page, "error")
    assert message == ("Could not load tiny-default.gguf: Not enough storage for the model: it needs 8.6 MB more, "
                       "the browser allows 1.0 MB for this site. Remove cached models or free disk space, then try again.")
    (record,) = check_stored_models(page, files).values()
    assert (record["complete"], record["received"]) == (False, CHUNK_BYTES)
    page.evaluate("window.__diskFull = false")  # space freed
    page.locator(".alert[data-kind=error]").get_by_role("button", name="Retry").click()
    wait_ready(page)
    assert fault_server.requests(model_path)[-1]["range"] == "bytes=%d-" % CHUNK_BYTES
    (record,) = check_stored_models(page, files).values()
    assert record["complete"]
    set_settings(page, **SETTINGS)
    assert ask(page, "Hi?")[0] == PAYLOAD * SETTINGS["max_tokens"]


def test_without_indexeddb_the_chat_works_for_the_visit_and_says_nothing_is_saved(fresh_context, fault_server,
                                                                                 fault_site, files):
    model_path = fault_site.model_path
    since = len(fault_server.requests(model_path))
    page = open_ready_page(fresh_context, fault_server.url, NO_INDEXEDDB, **SETTINGS)
    assert page.text_content("#storage-status").startswith(
        "Storage: unavailable, so nothing is saved: the model is kept for this visit only and downloaded again "
        "next time (A mutation operation was attempted")
    assert ask(page, "Hi?")[0] == PAYLOAD * SETTINGS["max_tokens"]
    (record,) = check_stored_models(page, files).values()  # in memory, verified all the same
    assert record["complete"]
    page.reload()
    wait_ready(page)
    assert [r["range"] for r in fault_server.requests(model_path)[since:]] == ["bytes=0-", "bytes=0-"]
    assert [m["role"] for m in shown_messages(page)] == ["user", "assistant"]  # localStorage still works


def test_worker_killed_mid_answer_keeps_the_conversation(page):
    # An uncaught error in the worker after its 5th piece: what the page sees when the worker dies.
    chat_worker(page).evaluate("""() => {
      const post = self.postMessage;
      let pieces = 0;
      self.postMessage = (message, transfer) => {
        post.call(self, message, transfer);
        const choice = message.type === "event" && (message.event.choices || [])[0];  // a chunk of the answer
        if (choice && choice.delta.content && ++pieces === 5)
          setTimeout(() => { throw new Error("killed by the test"); });
      };
    }""")
    start_long_answer(page)
    page.wait_for_selector(".alert[data-kind=error]:has-text('The Python worker crashed')", timeout=ANSWER_TIMEOUT_MS)
    assert any("killed by the test). Restarting it; your conversation is kept." in t for t in alert_texts(page, "error"))
    assert_conversation_kept(page)


@pytest.mark.parametrize("rank", sorted({0, POOL_SIZE - 1}))
def test_out_of_memory_mid_answer_restarts_python_and_keeps_the_conversation(page, rank):
    # Worker 0 writes the answer; with several workers, the last one failing alone must stop the others too
    # (they wait for it at a barrier) and the page must restart all of them.
    page.evaluate("document.querySelectorAll('.alert').forEach((a) => a.remove())")  # the other rank's run
    chat_workers(page)[rank].evaluate("""() => py.runPython(`
import pychat_wasm.browser.chat_worker as w
_model = w._worker.session.model
_forward, _calls = _model.forward, []
def _failing_forward(ids, **options):
    _calls.extend([1] if len(ids) == 1 else [])  # generated tokens, not prompt chunks
    if len(_calls) > 6:
        raise MemoryError("simulated: the wasm heap is full")
    return _forward(ids, **options)
_model.forward = _failing_forward
`)""")
    page.evaluate("window.__oldPython = pychat.python")
    start_long_answer(page)
    page.wait_for_selector(".alert[data-kind=error]:has-text('Out of memory')", timeout=ANSWER_TIMEOUT_MS)
    assert any(t.startswith("Out of memory") and "(simulated: the wasm heap is full)" in t and
               t.endswith("Python is restarted with fresh memory; your conversation is kept.")
               for t in alert_texts(page, "error"))
    assert page.evaluate("window.__oldPython !== pychat.python")  # a fresh worker, a fresh heap
    assert_conversation_kept(page)


def test_wasm_heap_exhausted_mid_answer_is_a_crash_that_keeps_the_conversation(page):
    # What a failed memory.grow outside Python looks like: a RangeError out of the wasm code.
    chat_worker(page).evaluate("""() => {
      const next = api.next_chunk;
      let pieces = 0;
      api.next_chunk = (stop) => {
        const reply = next(stop);
        if (reply.includes('"content": "') && ++pieces > 6) {
          throw new RangeError("WebAssembly.Memory.grow(): Maximum memory size exceeded");
        }
        return reply;
      };
    }""")
    start_long_answer(page)
    page.wait_for_selector(".alert[data-kind=error]:has-text('Maximum memory size exceeded')",
                           timeout=ANSWER_TIMEOUT_MS)
    assert_conversation_kept(page)


def test_evicted_cache_is_downloaded_again_and_the_conversation_kept(page, fault_server, fault_site, files):
    model_path = fault_site.model_path
    if not page.locator(".message").count():  # run alone: a conversation first
        ask(page, "Hi?")
    messages = shown_messages(page)
    since = len(fault_server.requests(model_path))
    cdp = page.context.new_cdp_session(page)
    cdp.send("Storage.clearDataForOrigin", {"origin": fault_server.url.rstrip("/"),
                                            "storageTypes": "indexeddb,cache_storage,service_workers"})
    page.reload()
    wait_ready(page)
    assert ("The browser cleared this site's model cache since your last visit (1 model): the model is downloaded "
            "again. Your conversation is kept." in alert_texts(page, "notice"))
    assert [r["range"] for r in fault_server.requests(model_path)[since:]] == ["bytes=0-"]
    assert shown_messages(page) == messages
    (record,) = check_stored_models(page, files).values()
    assert record["complete"]
    set_settings(page, **SETTINGS)
    assert ask(page, "Hi again?")[0] == PAYLOAD * SETTINGS["max_tokens"]
