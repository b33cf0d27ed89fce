"""App updates in Chromium: build A is open (its model downloaded into IndexedDB), then build B is deployed on
the same origin. The page must offer B and keep running A, switch only when the user asks and no answer is
being written, keep the model (no second .gguf request), drop A's cache only once B's is there, and B must
work offline.

Both builds come from build/build_site.py with a tiny model (so the test is quick); B's engine sources
have one byte more, which gives it another build id (the build is reproducible, so nothing else differs
but the wheel, sw.js and manifest.json). The reference for what each page runs is each build's own
manifest, and the server's request log for what was downloaded.
"""
from __future__ import annotations

import pytest

from e2e_helpers import (SiteServer, alert_texts, ask, copy_checkout, load_build_module, new_context,
                         open_ready_page, saved_messages, set_settings, wait_ready)
from tiny_models import write_tiny_gguf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAYLOAD = "Hi "
LONG_ANSWER = 1500  # tokens: the answer is still being written when the test clicks Reload
LONG_ANSWER_TIMEOUT_MS = 600_000  # its end, on 2 cores shared with other jobs (about 90 s at a load of 25)
# What the page did at the click on Reload and when it went away, kept across the reload.
RECORDER = """
addEventListener("click", (e) => {
  if (e.target.id === "update-reload") sessionStorage.setItem("clickWhileGenerating", String(pychat.generating));
}, true);
addEventListener("pagehide", () => {
  if (self.pychat) sessionStorage.setItem("leftWhileGenerating", String(pychat.generating));
});
"""
BUILD_ID = "pychat.manifest.build_id"
CACHES = "caches.keys()"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """(site A, manifest A, site B, manifest B)."""
    directory = tmp_path_factory.mktemp("update")
    model = write_tiny_gguf(directory / "tiny.gguf", PAYLOAD, context_length=4096)
    build_site = load_build_module("build_site").build_site
    manifest_a = build_site(directory / "a", model)
    sources = copy_checkout(directory / "checkout")
    engine = sources / "pychat_wasm" / "chat" / "sampler.py"
    engine.write_bytes(engine.read_bytes() + b"#")  # one byte more, in a comment
    manifest_b = build_site(directory / "b", model, sources=sources)
    assert manifest_a["build_id"] != manifest_b["build_id"]
    return directory / "a", manifest_a, directory / "b", manifest_b


def deploy(server: SiteServer, site) -> None:
    """Serve `site` in place of the current one, on the same port (the same origin)."""
    server.stop()
    server.site = site
    server.start()


def test_update_is_offered_and_applied_on_reload_with_the_model_kept(browser, builds):
    site_a, manifest_a, site_b, manifest_b = builds
    cache_a, cache_b = ("pychat-shell-" + m["build_id"] for m in (manifest_a, manifest_b))
    server = SiteServer(site_a)
    try:
        with new_context(browser) as context:
            page = open_ready_page(context, server.url, RECORDER, temperature=0, max_tokens=LONG_ANSWER)
            page.wait_for_selector("#offline-status[data-ready=true]")
            assert [r["path"] for r in server.downloads()] == ["/" + manifest_a["model"]["url"]]
            assert page.is_hidden("#update-notice")  # the first visit's worker is no update

            deploy(server, site_b)
            since = len(server.log)
            page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r.update())")
            page.wait_for_selector("#update-notice:not([hidden])")
            assert page.text_content("#update-text") == "A new version is available — reload to use it."
            # B is installed and waits; the page still runs A, A's manifest included, and A's cache is kept.
            assert page.evaluate(BUILD_ID) == manifest_a["build_id"]
            assert page.evaluate("fetch('manifest.json').then((r) => r.json()).then((m) => m.build_id)") \
                == manifest_a["build_id"]
            assert sorted(page.evaluate(CACHES)) == sorted([cache_a, cache_b])

            # Reload clicked while an answer streams: the page goes only after the answer's end.
            page.fill("#input", "Hello")
            page.press("#input", "Enter")
            page.wait_for_function("() => document.querySelector('.message[data-role=assistant] .content')"
                                   ".textContent.length > 0")
            with page.expect_navigation(timeout=LONG_ANSWER_TIMEOUT_MS):  # after the answer's end
                page.click("#update-reload")
            wait_ready(page)
            assert page.evaluate("sessionStorage.getItem('clickWhileGenerating')") == "true"
            assert page.evaluate("sessionStorage.getItem('leftWhileGenerating')") == "false"
            saved = saved_messages(page)
            assert saved[-1] == {"role": "assistant", "content": PAYLOAD * LONG_ANSWER}

            # B runs, the model came from IndexedDB, A's cache is gone.
            assert page.evaluate(BUILD_ID) == manifest_b["build_id"]
            assert server.model_requests(since) == []
            page.wait_for_function("async (name) => (await caches.keys()).join() === name", arg=cache_b)
            assert page.is_hidden("#update-notice") and alert_texts(page, "error") == []

            context.set_offline(True)
            page.reload()
            wait_ready(page)
            assert page.evaluate(BUILD_ID) == manifest_b["build_id"]
            set_settings(page, max_tokens=3)
            assert ask(page, "Still there?")[0] == PAYLOAD * 3
    finally:
        server.stop()


def test_after_a_reload_of_the_page_the_update_is_offered_again_and_applied_by_the_button(browser, builds):
    # The user's own reload keeps A running (a waiting worker asked to take over during a page's start made
    # Chromium hold the page's new Python workers back for minutes); the notice is back, and its button
    # switches from the freshly started page as from a long-open one.
    site_a, manifest_a, site_b, manifest_b = builds
    server = SiteServer(site_a)
    try:
        with new_context(browser) as context:
            page = open_ready_page(context, server.url, "", temperature=0, max_tokens=3)
            page.wait_for_selector("#offline-status[data-ready=true]")
            deploy(server, site_b)
            since = len(server.log)
            page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r.update())")
            page.wait_for_selector("#update-notice:not([hidden])")
            page.reload()
            wait_ready(page)
            assert page.evaluate(BUILD_ID) == manifest_a["build_id"]
            page.wait_for_selector("#update-notice:not([hidden])")
            assert ask(page, "Still A?")[0] == PAYLOAD * 3
            with page.expect_navigation(timeout=LONG_ANSWER_TIMEOUT_MS):  # after the answer's end
                page.click("#update-reload")
            wait_ready(page)
            assert page.evaluate(BUILD_ID) == manifest_b["build_id"]
            assert server.model_requests(since) == []  # the model stayed in IndexedDB
            page.wait_for_function("async (name) => (await caches.keys()).join() === name",
                                   arg="pychat-shell-" + manifest_b["build_id"])
            assert ask(page, "Still there?")[0] == PAYLOAD * 3
    finally:
        server.stop()
