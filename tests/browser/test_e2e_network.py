"""A hostile network: the real page in Chromium downloads tiny models from our fault-injecting server
(tests/support/fault_server.py) on 127.0.0.1, which drops connections at random offsets, stalls, answers 5xx,
ignores Range, changes the file between requests and lies in Content-Length.

Each download must end in a verified model that chats (its answer is the payload the tiny model was built
to say) or in a clear message; the bytes in IndexedDB are checked against the true file after every
test (a prefix of it, or all of it: never a corrupt copy); and a resume must really resume: the server's
log shows each Range request starting where the bytes before it ended. The reference is the server's own
record of what it sent, and RFC 9110 for Range / If-Range. The fit check's reads of a header before each
download (web/fit_check.js) are served correctly and logged apart: the faults are the download's.

Most tests add a model by URL on one shared page (no known sha256: the ETag guards it); one test runs
the default model, whose size and sha256 the build manifest states, through a fresh first visit.
"""
from __future__ import annotations

import hashlib
import random
import re

import pytest

from e2e_helpers import alert_texts, ask, check_stored_models, fault_site_fixtures, open_ready_page, page_fixture
from fault_server import Fault
from tiny_models import write_tiny_gguf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DEFAULT_PAYLOAD = "Default model here. "
DOWNLOAD = {"stall_seconds": 2, "retry_delay_ms": 100, "retries": 3}  # manifest.json "download", quick
SETTINGS = dict(temperature=0, max_tokens=2)
MODEL_BYTES = 3_000_000


fault_site, fault_server, files = fault_site_fixtures(DEFAULT_PAYLOAD, MODEL_BYTES, DOWNLOAD)
page = page_fixture("fault_server", **SETTINGS)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


def tiny_model(tiny_dir, name: str, payload: str) -> bytes:
    return write_tiny_gguf(tiny_dir / name, payload, padding=MODEL_BYTES).read_bytes()


def add_by_url(page, url: str) -> None:
    page.fill("#model-url", url)
    page.click("#model-url-add")


def wait_in_use(page, name: str) -> None:
    page.wait_for_selector("#status[data-phase=ready]:has-text('%s')" % name)


def assert_each_resume_starts_where_the_stored_bytes_end(requests):
    """Each request asks for the bytes from where the bytes stored before it end: 0 at first; after a 206 from
    `start`, start plus what it sent; after a 200 (the whole file, from byte 0), what it sent; after an error
    status, where they ended before it. Returns the requests' starts."""
    starts = [int(re.match(r"bytes=(\d+)-$", r["range"]).group(1)) for r in requests]
    stored_end = 0
    for i, (request, start) in enumerate(zip(requests, starts)):
        assert start == stored_end, (i, requests)
        if request["status"] == 206:
            stored_end = start + request["sent"]
        elif request["status"] == 200:
            stored_end = request["sent"]
    return starts


def download_by_url(page, server, files, tiny_dir, name, payload, *faults, etag=True):
    """Serve a new tiny model at /faulty/<name> with `faults`, add it by URL; returns its requests' log."""
    data = tiny_model(tiny_dir, name, payload)
    url = server.add_model("/faulty/" + name, data, etag=etag)
    files["url/" + url] = data
    server.plan("/faulty/" + name, *faults)
    add_by_url(page, url)
    return server.requests("/faulty/" + name)


def assert_chats(page, name, payload, files):
    wait_in_use(page, name)
    answer, _ = ask(page, "Hello?")
    assert answer == payload * SETTINGS["max_tokens"]
    records = check_stored_models(page, files)
    assert any(r["complete"] for i, r in records.items() if i.endswith("/" + name)), records


def test_drops_at_random_offsets_resume_from_the_stored_bytes(page, fault_server, files, tiny_dir):
    rng = random.Random(20261202)
    drops = [Fault(drop_after=rng.randrange(20_000, MODEL_BYTES // 4)) for _ in range(3)]
    before = len(alert_texts(page, "notice"))
    log = download_by_url(page, fault_server, files, tiny_dir, "drops.gguf", "Drops survived. ", *drops)
    assert_chats(page, "drops.gguf", "Drops survived. ", files)
    starts = assert_each_resume_starts_where_the_stored_bytes_end(log)
    assert len(log) == 4 and 0 < starts[1] < starts[2] < starts[3] < MODEL_BYTES
    etag = fault_server.models["/faulty/drops.gguf"].etag
    assert [r["if_range"] for r in log] == [None, etag, etag, etag]
    # Before any of it, the fit check read the header (its padding takes windows of 256 KiB, 2 and 16 MiB).
    reads = fault_server.header_reads("/faulty/drops.gguf")
    assert reads and reads[0]["range"] == "bytes=0-262143" and all(r["status"] == 206 for r in reads)
    assert [text.split(" (")[0] for text in alert_texts(page, "notice")[before:]] == [
        "Download interrupted at " + page.evaluate("Pychat.formatBytes", start) for start in starts[1:]]


def test_stalled_connection_is_given_up_and_resumed(page, fault_server, files, tiny_dir):
    before = len(alert_texts(page, "notice"))
    log = download_by_url(page, fault_server, files, tiny_dir, "stall.gguf", "Stall survived. ",
                          Fault(stall_after=700_000, stall_seconds=30))
    assert_chats(page, "stall.gguf", "Stall survived. ", files)
    assert [r["range"] for r in log] == ["bytes=0-", "bytes=700000-"]
    assert_each_resume_starts_where_the_stored_bytes_end(log)
    assert "Download interrupted at 700.0 kB (no data for 2 s); resuming…" in alert_texts(page, "notice")[before:]


def test_server_errors_are_retried(page, fault_server, files, tiny_dir):
    log = download_by_url(page, fault_server, files, tiny_dir, "5xx.gguf", "Errors survived. ",
                          Fault(status=503), Fault(status=502), Fault(drop_after=400_000), Fault(status=500))
    assert_chats(page, "5xx.gguf", "Errors survived. ", files)
    assert [r["status"] for r in log] == [503, 502, 206, 500, 206]
    assert [r["range"] for r in log] == ["bytes=0-"] * 3 + ["bytes=400000-"] * 2
    assert_each_resume_starts_where_the_stored_bytes_end(log)


def test_server_that_keeps_failing_gets_a_clear_message_and_retry_resumes(page, fault_server, files, tiny_dir):
    in_use = page.text_content("#status")
    log = download_by_url(page, fault_server, files, tiny_dir, "down.gguf", "Patience paid. ",
                          Fault(drop_after=500_000), *[Fault(status=503)] * (DOWNLOAD["retries"] + 1))
    page.wait_for_selector(".alert[data-kind=error]:has-text('down.gguf')")
    assert ("Could not load down.gguf: The download of down.gguf stopped at 500.0 kB (HTTP 503 Service "
            "Unavailable from the server). It will resume from there on the next try." in alert_texts(page, "error"))
    page.wait_for_selector("#status[data-phase=ready]")
    assert page.text_content("#status") == in_use  # the model loaded before is still in use
    (partial,) = [r for i, r in check_stored_models(page, files).items() if i.endswith("/down.gguf")]
    assert (partial["complete"], partial["received"]) == (False, 500_000)
    page.locator(".alert[data-kind=error]", has_text="down.gguf").get_by_role("button", name="Retry").click()
    assert_chats(page, "down.gguf", "Patience paid. ", files)
    assert log[-1]["range"] == "bytes=500000-" and log[-1]["status"] == 206
    assert_each_resume_starts_where_the_stored_bytes_end(log)


def test_server_that_ignores_range_restarts_from_the_start(page, fault_server, files, tiny_dir):
    before = len(alert_texts(page, "notice"))
    log = download_by_url(page, fault_server, files, tiny_dir, "norange.gguf", "No range needed. ",
                          Fault(drop_after=600_000), Fault(ignore_range=True))
    assert_chats(page, "norange.gguf", "No range needed. ", files)
    assert [(r["range"], r["status"]) for r in log] == [("bytes=0-", 206), ("bytes=600000-", 200)]
    assert_each_resume_starts_where_the_stored_bytes_end(log)
    assert "The server does not support resuming; downloading from the start." in alert_texts(page, "notice")[before:]


@pytest.mark.parametrize("etag, ignore_if_range", [(True, False), (True, True), (False, False)],
                         ids=["etag", "server-ignores-if-range", "last-modified-only"])
def test_file_changed_between_requests_restarts_cleanly(page, fault_server, files, tiny_dir, etag, ignore_if_range):
    name = "changing-%s-%s.gguf" % (etag, ignore_if_range)
    new = tiny_model(tiny_dir, "new-" + name, "The new version. ")
    before = len(alert_texts(page, "notice"))
    log = download_by_url(page, fault_server, files, tiny_dir, name, "The old version. ",
                          Fault(drop_after=800_000, replace_with=new), Fault(ignore_if_range=ignore_if_range),
                          etag=etag)
    files["url/" + fault_server.url.rstrip("/") + "/faulty/" + name] = new
    assert_chats(page, name, "The new version. ", files)
    old_validator = log[0]["if_range"] or log[1]["if_range"]
    assert old_validator.startswith('"') if etag else old_validator.endswith(" GMT")
    expected = [("bytes=0-", 206), ("bytes=800000-", 206), ("bytes=0-", 206)] if ignore_if_range else [
        ("bytes=0-", 206), ("bytes=800000-", 200)]
    assert [(r["range"], r["status"]) for r in log] == expected
    assert "%s changed on the server since the download began; downloading it again from the start." % name \
        in alert_texts(page, "notice")[before:]


@pytest.mark.parametrize("length_error", [+5000, -5000], ids=["claims-more", "claims-less"])
def test_wrong_content_length_never_stores_a_wrong_file(page, fault_server, files, tiny_dir, length_error):
    name = "length%+d.gguf" % length_error
    log = download_by_url(page, fault_server, files, tiny_dir, name, "Length checked. ",
                          Fault(length_error=length_error))
    assert_chats(page, name, "Length checked. ", files)
    size = log[0]["sent"]
    resumes = [int(re.match(r"bytes=(\d+)-$", r["range"]).group(1)) for r in log[1:]]
    if length_error > 0:  # the body ends short of the claim: a network error after (nearly) all of it;
        assert all(0 < start <= size for start in resumes)  # what arrived is kept, the rest resumed
    else:  # the browser stops at the claimed length; Content-Range says more is due
        assert resumes == [size - 5000]


def test_default_model_survives_faults_and_is_checked_against_the_manifest(fresh_context, fault_server, fault_site,
                                                                          files):
    model_path, model_bytes = fault_site.model_path, fault_site.model_bytes
    fault_server.plan(model_path, Fault(status=503), Fault(drop_after=1_000_000), Fault(length_error=-3000))
    fresh = open_ready_page(fresh_context, fault_server.url, "", **SETTINGS)
    answer, _ = ask(fresh, "Hello?")
    assert answer == DEFAULT_PAYLOAD * SETTINGS["max_tokens"]
    assert [(r["range"], r["status"]) for r in fault_server.requests(model_path)[-4:]] == [
        ("bytes=0-", 503), ("bytes=0-", 206), ("bytes=1000000-", 206), ("bytes=%d-" % (len(model_bytes) - 3000), 206)]
    (record,) = check_stored_models(fresh, {fault_site.model_id: model_bytes}).values()
    assert record["complete"] and record["recorded_sha256"] == hashlib.sha256(model_bytes).hexdigest()


def test_without_a_header_read_python_checks_the_first_bytes_of_the_download(page, fault_server, files, tiny_dir):
    """Where the fit check cannot read the header (the server fails its Range request for the first bytes), the
    download hands its first bytes to Python instead: a web page stops there, with Python's message, and nothing
    of it is kept; a model goes on, and chats."""
    html = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>" + b"<p>x</p>" * 50_000 + b"</body></html>"
    url = fault_server.add_model("/faulty/signin.gguf", html, header_status=503)
    add_by_url(page, url)
    page.wait_for_selector(".alert[data-kind=error]:has-text('Could not load signin.gguf')")
    assert ("Could not load signin.gguf: signin.gguf is not a GGUF model: the address returned a web page (HTML), "
            "not a model file") in alert_texts(page, "error")
    assert page.text_content("#fit-status") == "signin.gguf: not checked (the server did not answer)"
    assert [(r["range"], r["status"]) for r in fault_server.header_reads("/faulty/signin.gguf")] == [
        ("bytes=0-%d" % (256 * 1024 - 1), 503)]
    assert [r["range"] for r in fault_server.requests("/faulty/signin.gguf")] == ["bytes=0-"]
    page.wait_for_selector("#status[data-phase=ready]")  # the model in use before, as it was
    assert not [i for i in check_stored_models(page, files) if i.endswith("/signin.gguf")]

    data = tiny_model(tiny_dir, "unread.gguf", "Checked at the start. ")
    url = fault_server.add_model("/faulty/unread.gguf", data, header_status=503)
    files["url/" + url] = data
    add_by_url(page, url)
    assert_chats(page, "unread.gguf", "Checked at the start. ", files)
    assert page.text_content("#fit-status") == "unread.gguf: not checked (the server did not answer)"


def test_model_url_on_another_origin_is_refused_with_a_message(page, fault_server):
    other = fault_server.url.replace("127.0.0.1", "localhost") + "models/other.gguf"
    add_by_url(page, other)
    page.wait_for_selector(".alert[data-kind=error]:has-text('other.gguf')")
    origin = other.rsplit("/", 2)[0]
    assert ("%s is not an origin this site may download models from (it may from %s). Whoever deploys the site can "
            "allow it: build_site.py --model-origin %s (and the origins its redirects lead to). Or download %s "
            "yourself and drop the file here." % (origin, fault_server.url.rstrip("/"), origin, other)
            ) in alert_texts(page, "error")
    assert page.get_attribute("#status", "data-phase") == "ready"


def test_default_model_changed_on_the_server_gets_a_clear_message_and_nothing_is_kept(fresh_context, fault_server,
                                                                                     fault_site, tiny_dir):
    model_path, model_bytes = fault_site.model_path, fault_site.model_bytes
    changed = tiny_model(tiny_dir, "changed-default.gguf", "Changed model here. ")  # same size, other bytes
    assert len(changed) == len(model_bytes)
    fault_server.plan(model_path, Fault(drop_after=1_000_000, replace_with=changed))
    try:
        page = fresh_context.new_page()
        page.goto(fault_server.url)
        page.wait_for_selector("#status[data-phase=error]")
        log = fault_server.requests(model_path)[-3:]
        assert [(r["range"], r["status"]) for r in log] == [("bytes=0-", 206), ("bytes=1000000-", 200), ("bytes=0-", 206)]
        assert ("Could not load tiny-default.gguf: The received tiny-default.gguf is not the expected file (its sha256 "
                "checksum does not match); it was deleted." in alert_texts(page, "error"))
        assert check_stored_models(page, {}) == {}  # the manifest's sha256 let nothing wrong in
    finally:
        fault_server.models[model_path].replace(model_bytes)
