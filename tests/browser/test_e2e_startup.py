"""End to end: where a start's seconds go, and Python restored from its snapshot on a cached visit.

The page shows its start-up phases under the status line (web/startup_timeline.js) and gives them to the
benchmark as pychat.startup; nothing here is timed, only their names, that each is a number and that the phases
on the way to ready add up to the total. After the first load a throw-away worker saves Python's memory
(web/python_snapshot.js); the next visit restores it, offline too, and must answer as transformers and
llama.cpp do (GOLDEN_ANSWER). A damaged snapshot, or one Pyodide refuses, is dropped: Python boots as it did
without one, and a good snapshot is saved again.
"""
from __future__ import annotations

import pytest
from e2e_helpers import GREEDY, ask, page_fixture, python_snapshot, reloaded_offline, wait_ready
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PATH_PHASES = ["page scripts", "app start", "worker start", "numpy and wheels", "engine import", "fit check",
               "model hand-over", "copy into wasm", "GGUF parse", "checks", "tokenizer and template", "weights",
               "session", "ready"]

# Replace the saved snapshot's bytes: "truncated" keeps its recorded size and sha256 (the check refuses it),
# "foreign" is another Pyodide build's (its build id, 8 words after the 4-word header start, changed) with its
# own size and sha256 recorded (Pyodide's check refuses it).
DAMAGE_SNAPSHOT = """async (how) => {
  const db = await new Promise((resolve) => {
    const request = indexedDB.open("pychat-python", 1);
    request.onsuccess = () => resolve(request.result);
  });
  const store = () => db.transaction("snapshots", "readwrite").objectStore("snapshots");
  const [record] = await new Promise((resolve) => {
    const request = store().getAll();
    request.onsuccess = () => resolve(request.result);
  });
  let bytes = record.bytes.slice(0, record.bytes.byteLength >> 1);
  if (how === "foreign") {
    bytes = record.bytes.slice();
    new Uint32Array(bytes.buffer, 16, 8).fill(0x07070707);
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    record.sha256 = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    record.size = bytes.byteLength;
  }
  await new Promise((resolve) => { const r = store().put({...record, bytes}); r.onsuccess = resolve; });
  db.close();
  return Date.now();
}"""

startup_page = page_fixture("server", "", **GREEDY)


def phase_names(report):
    return [phase["name"] for phase in report["phases"]]


def check_report(report):
    """Every phase a number of seconds >= 0, those on the path adding up to the total."""
    assert report["finished"], report
    for phase in report["phases"] + report["alongside"]:
        assert isinstance(phase["seconds"], (int, float)) and phase["seconds"] >= 0, phase
    assert report["total"] > 0
    assert abs(sum(p["seconds"] for p in report["phases"]) - report["total"]) <= 0.001 * len(report["phases"]), report


def test_first_visit_shows_its_phases(startup_page):
    report = startup_page.evaluate("pychat.startup")
    check_report(report)
    names = phase_names(report)
    assert [name for name in names if name in PATH_PHASES] == PATH_PHASES, names
    assert "Pyodide" in names and "Pyodide from snapshot" not in names  # nothing saved yet on a first visit
    shown = startup_page.locator("#startup-details")
    assert shown.is_visible()
    assert shown.locator("summary").text_content() == "Started in %.1f s" % report["total"]
    text = shown.locator(".phases").text_content()
    assert all("%s %.2f s" % (p["name"], p["seconds"]) in text for p in report["phases"]), text


def test_cached_visit_restores_python_from_its_snapshot_offline(startup_page, server):
    saved = python_snapshot(startup_page)
    assert saved["count"] == 1 and saved["key"] == server.url + "pyodide/", saved
    assert saved["stored_bytes"] == saved["size"] > 1 << 20 and saved["stored_sha256"] == saved["sha256"], saved
    with reloaded_offline(startup_page, server):
        report = startup_page.evaluate("pychat.startup")
        check_report(report)
        names = phase_names(report)
        assert names.index("snapshot read") < names.index("Pyodide from snapshot") < names.index("numpy and wheels")
        assert "Pyodide" not in names
        assert {p["name"] for p in report["alongside"]} >= {"IndexedDB read", "sha256 check"}, report
        startup_page.click("#new-chat")
        answer, _ = ask(startup_page, GOLDEN_QUESTION)
        assert answer == GOLDEN_ANSWER


@pytest.mark.parametrize("how", ["truncated", "foreign"])
def test_damaged_snapshot_is_dropped_and_saved_again(startup_page, how):
    python_snapshot(startup_page)
    damaged_at = startup_page.evaluate(DAMAGE_SNAPSHOT, how)
    startup_page.reload()
    wait_ready(startup_page)
    names = phase_names(startup_page.evaluate("pychat.startup"))
    assert "Pyodide" in names and "Pyodide from snapshot" not in names, names
    if how == "foreign":  # it passed our check and reached Pyodide, which refused it
        assert "snapshot read" in names
    saved = python_snapshot(startup_page, after=damaged_at)
    assert saved["count"] == 1 and saved["stored_bytes"] == saved["size"] and saved["stored_sha256"] == saved["sha256"]
    assert startup_page.evaluate("pychat.python.workers") >= 1
