"""The locked-down page: the site under its Content-Security-Policy (build/serve.py's header, and the <meta>
copy in index.html) in Chromium, first from the network and then from the service worker's cache.

Every violation fails the test, wherever it happens: the page (securitypolicyviolation events and CSP
console messages) and the workers and service worker (the test server adds `report-uri` to the policy and
collects the reports Chromium posts). Controls show that the policy is really enforced, and its violations
really seen: an inline script on the page and an eval() in the Python worker are both refused and reported.
An attached PDF is read there too: pdf.js, an ES module, and its module worker (web/pdf_text.js).
"""
from __future__ import annotations

import json
import time

import pytest

from e2e_helpers import ask, chat_worker, drop_files, new_context, open_ready_page, serve, wait_ready
from fault_server import FaultyHandler, build_fault_site, serving
from pdf_files import minimal_pdf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAYLOAD = "Locked down. "
PDF_TEXT = "Read under the policy."
REPORT_PATH = "/csp-report"

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push({directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile}));
"""

INLINE_SCRIPT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.__inlineRan = true;";
  document.body.appendChild(script);
  return Boolean(window.__inlineRan);
}"""

DATA_SCRIPT = """() => { try { importScripts("data:text/javascript,1"); return "ran"; } catch (e) { return e.name; } }"""


class ReportingHandler(FaultyHandler):
    """The product's policy with `report-uri`, and the reports Chromium posts collected in server.reports."""

    def content_security_policy(self, name: str) -> str:
        return super().content_security_policy(name) + "; report-uri " + REPORT_PATH

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == REPORT_PATH:
            self.server.reports.append(json.loads(body)["csp-report"])
        self.send_response(204)
        self.end_headers()


@pytest.fixture(scope="module")
def csp_server(tmp_path_factory):
    fault_site = build_fault_site(tmp_path_factory.mktemp("csp_site"), PAYLOAD, 0, {})
    with serving(fault_site, handler=ReportingHandler) as server:
        server.httpd.reports = server.reports = []
        yield server


def wait_reports(server, count: int) -> list:
    deadline = time.monotonic() + 10
    while len(server.reports) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.reports


def test_meta_policy_is_the_served_policy(csp_server):
    html = (csp_server.site / "index.html").read_text()
    assert '<meta http-equiv="Content-Security-Policy" content="%s">' % serve.CONTENT_SECURITY_POLICY in html
    # Built without --model-origin: the page connects to its own origin only (test_e2e_model_origins.py adds some).
    assert "connect-src 'self';" in serve.CONTENT_SECURITY_POLICY
    assert json.loads((csp_server.site / "manifest.json").read_text())["model_origins"] == []
    assert "<script>" not in html and "style=" not in html and " on" + "click=" not in html


def test_page_runs_under_its_policy_from_the_network_and_from_the_service_worker(browser, csp_server):
    console = []
    with new_context(browser) as context:
        context.on("console", lambda message: console.append(message.text))
        page = open_ready_page(context, csp_server.url, RECORD_VIOLATIONS, temperature=0, max_tokens=2)
        assert ask(page, "Hi?")[0] == PAYLOAD * 2
        # The model catalog (models.json) and a fit check of one of its entries, read with Range requests.
        page.click("#model-catalog button[aria-label='Check whether SmolLM2 135M Instruct (Q4_1) fits']")
        page.wait_for_selector("#model-catalog .fit[data-checked]")
        assert page.text_content("#model-catalog .fit[data-checked]") == "fits"
        page.wait_for_selector("#offline-status[data-ready=true]")
        page.reload()  # now from the service worker's cache: its responses must carry the policy too
        wait_ready(page)
        assert page.evaluate("Boolean(navigator.serviceWorker.controller)")
        assert page.evaluate("async () => (await caches.match('index.html')).headers.get('Content-Security-Policy')") \
            == serve.CONTENT_SECURITY_POLICY + serve.CSP_HEADER_ONLY + "; report-uri " + REPORT_PATH
        assert ask(page, "Again?")[0] == PAYLOAD * 2
        workers = []
        page.on("worker", lambda worker: workers.append(worker.url))
        drop_files(page, "#composer", {"policy.pdf": minimal_pdf([PDF_TEXT])})  # pdf.js from the cache, too
        page.wait_for_selector("#attachments .chip")
        assert page.evaluate("pychat.chat.attachments.files.map((a) => a.text)") == [PDF_TEXT]
        assert [url.rsplit("/", 2)[1:] for url in workers] == [["vendor", "pdf.worker.min.mjs"]]  # its own worker
        assert page.evaluate("window.__violations") == []
        assert [text for text in console if "Content Security Policy" in text] == []
        assert csp_server.reports == []

        # The controls: what the policy forbids is refused, and seen, on the page and in the Python worker.
        # (eval() cannot serve as one: code the test evaluates through the DevTools protocol may eval.)
        assert page.evaluate(INLINE_SCRIPT) is False
        assert chat_worker(page).evaluate(DATA_SCRIPT) == "NetworkError"
        reports = wait_reports(csp_server, 2)
        assert sorted((r["document-uri"].rsplit("/", 1)[1], r["effective-directive"], r["blocked-uri"])
                      for r in reports) == [("", "script-src-elem", "inline"), ("worker.js", "script-src-elem", "data")]
        # One event per policy in force on the page: the header's and the <meta> one's.
        assert [v["directive"] for v in page.evaluate("window.__violations")] == ["script-src-elem"] * 2
        policies = {r["document-uri"].rsplit("/", 1)[1]: r["original-policy"] for r in reports}
        assert policies["worker.js"] == policies[""] and "'unsafe-eval'" not in policies[""]  # Pyodide 0.27 needs none
