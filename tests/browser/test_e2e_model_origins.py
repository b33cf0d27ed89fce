"""Models from another origin, as a Hugging Face deploy gets them: the real page in Chromium and three servers of
our own on 127.0.0.1. The site (one port); a "hub" (another port) that answers /org/repo/resolve/main/<file>
with a 302 to a "CDN" (a third port), as Hugging Face's resolve/main URLs do; the CDN serves the file with
Range, ETag and CORS and cuts connections where a test plans it (tests/support/fault_server.py).

A site built with `--model-origin` for the hub and the CDN lists them in its policy (the <meta> tag, the
header, sw.js, manifest.json), shows its catalog (here: a model on the hub and one on the CDN) with size,
licence and a fit verdict read through the redirect before any download, and downloads the hub's model
through the redirect: cut, resumed with Range and If-Range (the CDN's log says so), checked against the
catalog's sha256, then chatting. Entries without a sha256 (as models.json's Hugging Face ones) are checked against
the sha256 the host states: the hub's LFS pointer (its raw/ URL, as huggingface.co serves it), or X-Linked-Etag
when the file's own answer carries it; refused when the bytes are not that file; listed as not verified when
only the hub's redirect carries X-Linked-Etag, as huggingface.co's does (a page never sees a redirect's
headers). A site built with the hub alone refuses the CDN's URL before any request
(the CDN's log stays empty) with a message naming the flag, and explains the redirect its policy blocked; on a
host that sends no policy header its service worker refuses the CDN to the page's workers all the same.
The references are the servers' own logs, the true file's bytes and the messages the page must show.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import re
import threading

import pytest

from e2e_helpers import (alert_texts, ask, chat_worker, check_stored_models, http_get, is_header_read, new_context,
                         open_ready_page, serve, wait_offline_ready, wait_ready)
from fault_server import Fault, FaultServer, FaultyHandler, build_fault_site, serving
from tiny_models import write_tiny_gguf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DEFAULT_PAYLOAD = "Home model here. "
REMOTE_PAYLOAD = "Came through the CDN. "
MODEL_BYTES = 3_000_000
CUT_AFTER = 1_000_000
DOWNLOAD = {"stall_seconds": 5, "retry_delay_ms": 100, "retries": 3}
SETTINGS = dict(temperature=0, max_tokens=2)
HUB_PATH = "/org/repo/resolve/main/tiny-remote.gguf"
CDN_PATH = "/cdn/blobs/tiny-remote.gguf"
DIRECT_PATH = "/cdn/blobs/tiny-direct.gguf"
LINKED_PATH = "/cdn/blobs/tiny-linked.gguf"              # its answer states its sha256 (X-Linked-Etag)
MISLABELLED_PATH = "/cdn/blobs/tiny-mislabelled.gguf"    # its answer states another file's sha256
UNSTATED_HUB_PATH = "/org/repo/resolve/main/tiny-unstated.gguf"  # the hub's 302 states it, as Hugging Face's does
UNSTATED_CDN_PATH = "/cdn/blobs/tiny-unstated.gguf"
POINTED_HUB_PATH = "/org/repo/resolve/main/tiny-pointed.gguf"    # the hub's raw/ URL serves its LFS pointer
POINTED_CDN_PATH = "/cdn/blobs/tiny-pointed.gguf"
CORS_ALLOWED_HEADERS = "Range, If-Range"


# ---- the other origins -------------------------------------------------------------------------------------

class CorsMixin:
    """CORS as a public model host answers it: any origin may read (also "null", after a cross-origin redirect),
    the headers a resumed download reads are exposed, and preflights (If-Range is not CORS-safelisted) are
    answered and logged in server.preflights."""

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, ETag, Content-Length, X-Linked-Etag, "
                                                          "X-Linked-Size")
        super().end_headers()

    def do_OPTIONS(self):
        self.server.preflights.append({"path": self.path, "headers": self.headers.get("Access-Control-Request-Headers")})
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "GET")
        self.send_header("Access-Control-Allow-Headers", CORS_ALLOWED_HEADERS)
        self.send_header("Access-Control-Max-Age", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()


class CdnHandler(CorsMixin, FaultyHandler):
    """The CDN: the fault server's model files (Range, If-Range, ETag, planned cuts), readable from any origin;
    the path of every GET in server.seen."""

    def do_GET(self):
        self.server.seen.append(self.path)
        super().do_GET()


class HubHandler(CorsMixin, http.server.BaseHTTPRequestHandler):
    """The hub: resolve/main URLs answered with a 302 to the CDN, as Hugging Face answers them (with the
    X-Linked-Etag and X-Linked-Size of server.linked, where given), raw/main URLs with the Git LFS pointers of
    server.pointers; every request logged in server.log."""

    def do_GET(self):
        self.server.log.append({"path": self.path, "range": self.headers.get("Range"),
                                "if_range": self.headers.get("If-Range")})
        pointer = self.server.pointers.get(self.path)
        if pointer is not None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(pointer)))
            self.end_headers()
            self.wfile.write(pointer)
            return
        target = self.server.redirects.get(self.path)
        self.send_response(302 if target else 404)
        if target:
            self.send_header("Location", target)
            for name, value in self.server.linked.get(self.path, {}).items():
                self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # noqa: A002
        pass


@contextlib.contextmanager
def hub_server(redirects, linked, pointers):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    server.log, server.preflights, server.redirects, server.linked = [], [], redirects, linked
    server.pointers = pointers
    server.url = "http://127.0.0.1:%d" % server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def origin_of(url: str) -> str:
    return re.match(r"^https?://[^/]+", url).group(0)


# ---- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def remote_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("remote_models")
    return {name: write_tiny_gguf(directory / name, payload, padding=MODEL_BYTES).read_bytes()
            for name, payload in (("tiny-remote.gguf", REMOTE_PAYLOAD), ("tiny-direct.gguf", "Direct. "),
                                  ("tiny-linked.gguf", "Linked. "), ("tiny-mislabelled.gguf", "Mislabelled. "),
                                  ("tiny-unstated.gguf", "Unstated. "), ("tiny-pointed.gguf", "Pointed. "))}


def linked_headers(data: bytes) -> dict:
    """What Hugging Face states of an LFS file: its sha256 as a quoted ETag, and its size."""
    return {"X-Linked-Etag": '"%s"' % hashlib.sha256(data).hexdigest(), "X-Linked-Size": str(len(data))}


def lfs_pointer(data: bytes) -> bytes:
    """A Git LFS pointer (git-lfs's spec, v1), as huggingface.co's raw/ URLs answer for an LFS file."""
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
        hashlib.sha256(data).hexdigest().encode(), len(data))


@pytest.fixture(scope="module")
def cdn(tmp_path_factory, remote_files):
    server = FaultServer(tmp_path_factory.mktemp("cdn_root"), handler=CdnHandler)
    server.httpd.preflights = server.preflights = []
    server.httpd.seen = server.seen = []
    server.add_model(CDN_PATH, remote_files["tiny-remote.gguf"])
    server.add_model(DIRECT_PATH, remote_files["tiny-direct.gguf"])
    linked = linked_headers(remote_files["tiny-linked.gguf"])
    server.add_model(LINKED_PATH, remote_files["tiny-linked.gguf"], headers=linked)
    server.add_model(MISLABELLED_PATH, remote_files["tiny-mislabelled.gguf"], headers=linked)  # another file's
    server.add_model(UNSTATED_CDN_PATH, remote_files["tiny-unstated.gguf"])
    server.add_model(POINTED_CDN_PATH, remote_files["tiny-pointed.gguf"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(cdn, remote_files):
    redirects = {HUB_PATH: cdn.url.rstrip("/") + CDN_PATH, UNSTATED_HUB_PATH: cdn.url.rstrip("/") + UNSTATED_CDN_PATH,
                 POINTED_HUB_PATH: cdn.url.rstrip("/") + POINTED_CDN_PATH}
    linked = {path: linked_headers(remote_files[path.rsplit("/", 1)[1]])
              for path in (UNSTATED_HUB_PATH, POINTED_HUB_PATH)}
    pointers = {POINTED_HUB_PATH.replace("/resolve/", "/raw/"): lfs_pointer(remote_files["tiny-pointed.gguf"])}
    with hub_server(redirects, linked, pointers) as server:
        yield server


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, hub, cdn, remote_files):
    """The sites' catalog: the hub's model (through the redirect) and one straight from the CDN, both with size
    and sha256; three without (as models.json's Hugging Face entries), whose hosts state the sha256 themselves."""
    entries = [{"name": "Tiny remote", "url": hub.url + HUB_PATH, "licence": "MIT", "about": "On the hub."},
               {"name": "Tiny direct", "url": cdn.url.rstrip("/") + DIRECT_PATH, "licence": "MIT", "about": "On the CDN."}]
    for entry, data in zip(entries, remote_files.values()):
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    for name, url in (("Tiny linked", cdn.url.rstrip("/") + LINKED_PATH),
                      ("Tiny mislabelled", cdn.url.rstrip("/") + MISLABELLED_PATH),
                      ("Tiny unstated", hub.url + UNSTATED_HUB_PATH),
                      ("Tiny pointed", hub.url + POINTED_HUB_PATH)):
        entries.append({"name": name, "url": url, "size": None, "sha256": None, "licence": "MIT",
                        "about": "No sha256."})
    path = tmp_path_factory.mktemp("catalog") / "models.json"
    path.write_text(json.dumps({"models": entries}))
    return path


def site_server(tmp_path_factory, name, origins, catalog):
    fault_site = build_fault_site(tmp_path_factory.mktemp(name), DEFAULT_PAYLOAD, 0, DOWNLOAD,
                                  model_origins=origins, catalog=catalog)
    return fault_site, serving(fault_site)


@pytest.fixture(scope="module")
def open_site(tmp_path_factory, hub, cdn, catalog):
    """A site built with --model-origin for the hub and the CDN."""
    fault_site, server = site_server(tmp_path_factory, "open_site", [hub.url, cdn.url], catalog)
    with server as running:
        running.fault_site = fault_site
        yield running


@pytest.fixture(scope="module")
def hub_only_site(tmp_path_factory, hub, catalog):
    """A site built with --model-origin for the hub alone: not for the CDN its redirects lead to."""
    fault_site, server = site_server(tmp_path_factory, "hub_only_site", [hub.url], catalog)
    with server as running:
        running.fault_site = fault_site
        yield running


@pytest.fixture(scope="module")
def open_page(browser, open_site):
    with new_context(browser) as context:
        yield open_ready_page(context, open_site.url, "", **SETTINGS)


@pytest.fixture(scope="module")
def hub_only_page(browser, hub_only_site):
    with new_context(browser) as context:
        yield open_ready_page(context, hub_only_site.url, "", **SETTINGS)


def catalog_item(page, name: str):
    return page.locator("#model-catalog li", has=page.locator("strong", has_text=name))


# ---- the policy ----------------------------------------------------------------------------------------------

def test_the_origins_asked_for_are_in_the_policy_the_service_worker_and_the_manifest(open_site, hub_only_site, hub, cdn):
    for site, origins in ((open_site, [hub.url, origin_of(cdn.url)]), (hub_only_site, [hub.url])):
        policy = serve.page_policy(origins)
        assert "connect-src 'self' %s;" % " ".join(origins) in policy
        html = (site.site / "index.html").read_text()
        assert '<meta http-equiv="Content-Security-Policy" content="%s">' % policy in html
        response, _ = http_get(site.port, "/")
        assert response.getheader("Content-Security-Policy") == policy + serve.CSP_HEADER_ONLY
        assert "const MODEL_ORIGINS = [%s];" % ", ".join('"%s"' % o for o in origins) in (site.site / "sw.js").read_text()
        assert json.loads((site.site / "manifest.json").read_text())["model_origins"] == origins
    assert origin_of(cdn.url) not in (hub_only_site.site / "index.html").read_text()


# ---- a deploy that allows the hub and its CDN -------------------------------------------------------------------

def test_the_catalog_shows_size_licence_and_the_fit_verdict_before_any_download(open_page, hub, cdn):
    item = catalog_item(open_page, "Tiny remote")
    details = item.locator(".details").first.text_content()
    assert details == "%s · MIT · %s · sha256 checked" % (
        open_page.evaluate("Pychat.formatBytes", len(cdn.models[CDN_PATH].data)), origin_of(hub.url)[7:])
    item.get_by_role("button", name="Check whether Tiny remote fits").click()
    open_page.wait_for_function("() => document.querySelector('#model-catalog .fit[data-checked]')")
    assert item.locator(".fit").text_content() == "fits"
    # The header came through the hub's redirect, with Range (windows of 256 KiB, then more: the tiny model's
    # padding is in its header); nothing was downloaded.
    assert hub.log and all(r["path"] == HUB_PATH and is_header_read(r) for r in hub.log)
    reads = cdn.header_reads(CDN_PATH)
    assert [r["range"] for r in reads] == [r["range"] for r in hub.log] and reads[0]["range"] == "bytes=0-262143"
    assert all(r["status"] == 206 for r in reads) and cdn.requests(CDN_PATH) == []


def test_a_model_comes_through_the_redirect_cut_resumed_with_if_range_and_checked(open_page, open_site, hub, cdn,
                                                                                   remote_files):
    cdn.plan(CDN_PATH, Fault(drop_after=CUT_AFTER))
    hub_before = len(hub.log)
    catalog_item(open_page, "Tiny remote").get_by_role("button", name="Download Tiny remote").click()
    open_page.wait_for_selector("#status[data-phase=ready]:has-text('tiny-remote.gguf')")
    assert ask(open_page, "Hello?")[0] == REMOTE_PAYLOAD * SETTINGS["max_tokens"]

    etag = cdn.models[CDN_PATH].etag
    downloads = cdn.requests(CDN_PATH)
    assert [(r["range"], r["if_range"], r["status"], r["sent"]) for r in downloads] == [
        ("bytes=0-", None, 206, CUT_AFTER),
        ("bytes=%d-" % CUT_AFTER, etag, 206, len(remote_files["tiny-remote.gguf"]) - CUT_AFTER)]
    # Each request went to the hub first and followed its 302: Range and If-Range survived the redirect.
    assert [(r["path"], r["range"], r["if_range"]) for r in hub.log[hub_before:] if not is_header_read(r)] == [
        (HUB_PATH, "bytes=0-", None), (HUB_PATH, "bytes=%d-" % CUT_AFTER, etag)]
    # If-Range is no CORS-safelisted header: the resumed request was preflighted at both origins.
    assert any("if-range" in (p["headers"] or "") for p in hub.preflights)
    assert any("if-range" in (p["headers"] or "") for p in cdn.preflights)
    hub_url = hub.url + HUB_PATH
    records = check_stored_models(open_page, {open_site.fault_site.model_id: open_site.fault_site.model_bytes,
                                              "url/" + hub_url: remote_files["tiny-remote.gguf"]})
    stored = records["url/" + hub_url]
    assert stored["complete"] and stored["recorded_sha256"] == hashlib.sha256(remote_files["tiny-remote.gguf"]).hexdigest()
    assert any(text.startswith("Download interrupted at ") for text in alert_texts(open_page, "notice"))


def model_details(page, name: str) -> str:
    return page.locator("#models li", has=page.locator("strong", has_text=name)).locator(".details").first.text_content()


def test_without_a_stated_sha256_the_one_its_host_states_is_checked(open_page, open_site, hub, cdn, remote_files):
    item = catalog_item(open_page, "Tiny linked")
    assert item.locator(".details").first.text_content().endswith(
        "· no sha256 stated: checked if its host states one (LFS pointer, X-Linked-Etag)")
    item.get_by_role("button", name="Download Tiny linked").click()
    open_page.wait_for_selector("#status[data-phase=ready]:has-text('tiny-linked.gguf')")
    assert model_details(open_page, "tiny-linked.gguf").endswith("· verified (sha256 from the host's X-Linked-Etag)")

    # Bytes that are not the file the host's X-Linked-Etag names: refused (after one more try), nothing kept,
    # the model in use still loaded.
    stated = hashlib.sha256(remote_files["tiny-linked.gguf"]).hexdigest()
    catalog_item(open_page, "Tiny mislabelled").get_by_role("button", name="Download Tiny mislabelled").click()
    message = ("Could not load tiny-mislabelled.gguf: The received tiny-mislabelled.gguf is not the file its host "
               "states: its sha256 is not %s (the host's X-Linked-Etag); it was deleted." % stated)
    open_page.wait_for_selector(".alert[data-kind=error]:has-text('tiny-mislabelled.gguf: The received')")
    assert message in alert_texts(open_page, "error")
    wait_ready(open_page)
    assert open_page.evaluate("pychat.model.name") == "tiny-linked.gguf"
    assert [(r["range"], r["status"]) for r in cdn.requests(MISLABELLED_PATH)] == [("bytes=0-", 206)] * 2
    assert "tiny-mislabelled.gguf" not in open_page.text_content("#models")

    # Hugging Face's way: the hub's 302 carries X-Linked-Etag, which a page cannot read; the file's own answer
    # (the CDN's) carries none. Without an LFS pointer (raw/ answers 404): downloaded, listed as not verified.
    catalog_item(open_page, "Tiny unstated").get_by_role("button", name="Download Tiny unstated").click()
    open_page.wait_for_selector("#status[data-phase=ready]:has-text('tiny-unstated.gguf')")
    assert model_details(open_page, "tiny-unstated.gguf").endswith(
        "· not verified (no sha256 from the catalog or the host)")
    assert any(r["path"] == UNSTATED_HUB_PATH and not is_header_read(r) for r in hub.log)  # it did go through the hub
    assert UNSTATED_HUB_PATH.replace("/resolve/", "/raw/") in [r["path"] for r in hub.log]  # the pointer, asked for

    # With the LFS pointer the hub serves at raw/main/: checked against it.
    catalog_item(open_page, "Tiny pointed").get_by_role("button", name="Download Tiny pointed").click()
    open_page.wait_for_selector("#status[data-phase=ready]:has-text('tiny-pointed.gguf')")
    assert model_details(open_page, "tiny-pointed.gguf").endswith("· verified (sha256 from the host's LFS pointer)")
    records = check_stored_models(open_page, {
        open_site.fault_site.model_id: open_site.fault_site.model_bytes,
        "url/" + hub.url + HUB_PATH: remote_files["tiny-remote.gguf"],
        "url/" + cdn.url.rstrip("/") + LINKED_PATH: remote_files["tiny-linked.gguf"],
        "url/" + hub.url + UNSTATED_HUB_PATH: remote_files["tiny-unstated.gguf"],
        "url/" + hub.url + POINTED_HUB_PATH: remote_files["tiny-pointed.gguf"]})
    assert records["url/" + cdn.url.rstrip("/") + LINKED_PATH]["complete"]


# ---- a deploy that allows the hub alone --------------------------------------------------------------------------

def test_a_url_on_an_origin_not_allowed_is_refused_before_any_request(hub_only_page, hub_only_site, hub, cdn):
    direct = cdn.url.rstrip("/") + DIRECT_PATH
    cdn_seen = (len(cdn.seen), len(cdn.preflights))
    hub_only_page.fill("#model-url", direct)
    hub_only_page.click("#model-url-add")
    origin = origin_of(direct)
    message = ("%s is not an origin this site may download models from (it may from %s, %s). Whoever deploys the "
               "site can allow it: build_site.py --model-origin %s (and the origins its redirects lead to). Or "
               "download %s yourself and drop the file here." % (origin, hub_only_site.url.rstrip("/"), hub.url,
                                                                 origin, direct))
    hub_only_page.wait_for_selector(".alert[data-kind=error]")
    assert message in alert_texts(hub_only_page, "error")
    assert hub_only_page.get_attribute("#status", "data-phase") == "ready"
    # The catalog says the same of its entry there, and offers neither button.
    item = catalog_item(hub_only_page, "Tiny direct")
    assert item.locator(".fit").text_content() == message
    assert item.get_by_role("button", name="Download Tiny direct").is_disabled()
    assert item.get_by_role("button", name="Check whether Tiny direct fits").is_disabled()
    assert (len(cdn.seen), len(cdn.preflights)) == cdn_seen  # no request reached the CDN


def test_a_redirect_to_an_origin_not_allowed_is_blocked_and_explained(hub_only_page, hub, cdn):
    cdn_reads = len(cdn.header_reads(CDN_PATH))
    hub_before = len(hub.log)
    catalog_item(hub_only_page, "Tiny remote").get_by_role("button", name="Check whether Tiny remote fits").click()
    hub_only_page.wait_for_function("() => document.querySelector('#model-catalog .fit[data-checked]')")
    assert catalog_item(hub_only_page, "Tiny remote").locator(".fit").text_content() == \
        "not checked (the server did not answer)"
    # The browser reports the URL asked for, not where its redirect led: the message names the hub.
    hub_only_page.wait_for_selector(".alert[data-kind=error]:has-text('%s redirected a download')" % hub.url)
    assert ("%s redirected a download to an origin this site's security policy does not list (the browser's "
            "developer tools, Network tab, show which). Whoever deploys the site can allow it: build_site.py "
            "--model-origin with that origin too (for Hugging Face: https://*.hf.co)." % hub.url
            ) in alert_texts(hub_only_page, "error")
    assert len(hub.log) > hub_before and len(cdn.header_reads(CDN_PATH)) == cdn_reads  # the hub asked, the CDN never


class NoPolicyHandler(FaultyHandler):
    """A host that sends no Content-Security-Policy header: the <meta> copy covers the page, not its workers."""

    def content_security_policy(self, name):
        return None


WORKER_FETCH = """async (url) => { try { return String((await fetch(url)).status); } catch (e) { return e.name; } }"""


def test_the_service_worker_holds_the_list_for_workers_on_a_host_without_the_header(browser, hub_only_site, hub, cdn):
    server = FaultServer(hub_only_site.site, handler=NoPolicyHandler)
    server.add_model(hub_only_site.fault_site.model_path, hub_only_site.fault_site.model_bytes)
    try:
        with new_context(browser) as context:
            page = open_ready_page(context, server.url, "")
            wait_offline_ready(page)
            page.reload()  # now under the service worker, workers too
            wait_ready(page)
            worker = chat_worker(page)
            assert page.evaluate("Boolean(navigator.serviceWorker.controller)")
            cdn_seen, hub_seen = len(cdn.seen), len(hub.log)
            assert worker.evaluate(WORKER_FETCH, cdn.url + "elsewhere.gguf") == "TypeError"  # refused by sw.js
            assert worker.evaluate(WORKER_FETCH, hub.url + "/nothing-here") == "404"  # a listed origin: the network
            assert len(cdn.seen) == cdn_seen and [r["path"] for r in hub.log[hub_seen:]] == ["/nothing-here"]
    finally:
        server.stop()


# ---- the catalog on a phone, in dark mode ---------------------------------------------------------------------

CATALOG_GEOMETRY = """() => {
  const items = [...document.querySelectorAll("#model-catalog li")];
  const muted = (e) => getComputedStyle(e).color;
  return {viewport: innerWidth, scrollWidth: document.documentElement.scrollWidth,
          items: items.map((li) => { const r = li.getBoundingClientRect(); return {left: r.left, right: r.right}; }),
          buttons: [...document.querySelectorAll("#model-catalog button")].map((b) => b.getBoundingClientRect().right),
          details: muted(document.querySelector("#model-catalog .details")), hint: muted(document.querySelector(".hint")),
          background: getComputedStyle(document.body).backgroundColor};
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_catalog_fits_a_phone_and_follows_the_colour_scheme(browser, open_site, scheme):
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme=scheme)
    try:
        page = context.new_page()
        page.goto(open_site.url)
        page.wait_for_selector("#model-catalog li >> nth=1", state="attached")
        page.click("main > aside details:has(#model-catalog) > summary")  # folded on a phone: opened as a user would
        page.wait_for_selector("#model-catalog li >> nth=1")
        geometry = page.evaluate(CATALOG_GEOMETRY)
    finally:
        context.close()
    assert geometry["viewport"] == 390 and geometry["scrollWidth"] <= 390
    assert len(geometry["items"]) == 6
    assert all(0 <= item["left"] and item["right"] <= 390 for item in geometry["items"])
    assert all(right <= 390 for right in geometry["buttons"])
    assert geometry["details"] == geometry["hint"]  # the theme's muted text, in either scheme
    brightness = sum(int(v) for v in re.findall(r"\d+", geometry["background"])[:3]) / 3
    assert (brightness < 128) == (scheme == "dark")
