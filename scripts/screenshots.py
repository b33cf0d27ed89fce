"""Screenshots of the page for the docs: desktop, phone and dark, with one answer on screen.

Builds the site (or takes a built one with --site), serves it on 127.0.0.1, opens it in Debian's Chromium
(the launch settings of tests/conftest.py), waits until the model is ready, asks one question at temperature 0
whose answer is code, and saves

    docs/screenshot-desktop.png   1280x800, light
    docs/screenshot-dark.png      1280x800, dark (prefers-color-scheme: dark)
    docs/screenshot-phone.png     390x844, light: the page reloaded at that size (the conversation is restored)

    $ PYTHONPATH=. python scripts/screenshots.py                 # about 2-4 minutes on 2 cores
    $ PYTHONPATH=. python scripts/screenshots.py --site dist/site --out /tmp/shots
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Write a Python function that adds two numbers."
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
READY = "#status[data-phase=ready]"
ASSISTANT = ".message[data-role=assistant]"


def load_module(path: Path, name: str):
    """A module by its path: build/ is no package, and tests/conftest.py holds the Chromium settings."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chromium_settings():
    """(executable, args) exactly as the browser tests launch Chromium."""
    conftest = load_module(REPO / "tests" / "conftest.py", "pychat_screenshots_conftest")
    return conftest.CHROMIUM, conftest.CHROMIUM_ARGS


def build(out: Path, model: Path) -> Path:
    build_site = load_module(REPO / "build" / "build_site.py", "pychat_build_build_site")
    build_site.build_site(out, model)
    return out


def serve(site: Path):
    """The site on 127.0.0.1 at a free port, in a daemon thread; returns (server, url)."""
    serve_module = load_module(REPO / "build" / "serve.py", "pychat_build_serve")

    class QuietHandler(serve_module.SiteHandler):
        def log_message(self, format, *args):  # noqa: A002 - signature of the base class
            pass

    server = serve_module.make_server(site, 0, handler=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, "http://127.0.0.1:%d/" % server.server_address[1]


def log(text: str) -> None:
    print("[%s] %s" % (time.strftime("%H:%M:%S"), text), flush=True)


def wait_ready(page, timeout_ms: int) -> None:
    """Wait for the model to be loaded; on a timeout say what the page shows instead."""
    try:
        page.wait_for_selector(READY, timeout=timeout_ms)
    except Exception as exc:  # noqa: BLE001 - playwright's TimeoutError
        status = page.locator("#status").text_content()
        alerts = page.locator("#alerts").inner_text()
        raise SystemExit("the page did not get ready: status %r, alerts %r (%s)" % (status, alerts, exc)) from exc


def fill_setting(page, element_id: str, value) -> None:
    """Set a sampling field in the Settings dialog, opened from the header and closed again."""
    page.get_by_role("button", name="Settings", exact=True).click()
    page.fill("#" + element_id, str(value))
    page.locator("#settings-dialog").get_by_role("button", name="Close").click()


def ask(page, text: str, timeout_ms: int) -> str:
    """Send `text` and wait until its answer is complete; returns the answer's text."""
    before = page.locator(ASSISTANT).count()
    page.fill("#input", text)
    page.click("#send")
    page.wait_for_function(
        "n => (document.querySelectorAll(%r)[n] || {dataset: {}}).dataset.done" % ASSISTANT,
        arg=before, timeout=timeout_ms)
    return page.locator(ASSISTANT).nth(before).locator(".content").inner_text()


def settle(page) -> None:
    """Give the page a moment to finish layout, then show the newest message."""
    page.wait_for_timeout(400)
    page.evaluate("() => { const m = document.getElementById('messages'); if (m) m.scrollTop = m.scrollHeight; }")
    page.wait_for_timeout(200)


def wait_offline_badge(page) -> None:
    """The offline badge settles shortly after start-up; a screenshot without it is still fine."""
    try:
        page.wait_for_selector("#offline-status[data-ready=true]", timeout=30_000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError; the badge is cosmetic here
        pass


def take(site: Path, out: Path, prompt: str, max_tokens: int, timeout_s: int) -> list:
    from playwright.sync_api import sync_playwright

    executable, args = chromium_settings()
    server, url = serve(site)
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=args)
            context = browser.new_context(viewport=DESKTOP, color_scheme="light")
            context.set_default_timeout(timeout_s * 1000)
            page = context.new_page()
            page.on("pageerror", lambda error: log("page error: %s" % error))
            log("opening %s (first visit: the model is downloaded, Python starts)" % url)
            page.goto(url)
            wait_ready(page, timeout_s * 1000)
            fill_setting(page, "temperature", 0)
            fill_setting(page, "max-tokens", max_tokens)
            log("ready; asking: %s" % prompt)
            answer = ask(page, prompt, timeout_s * 1000)
            log("answer: %r" % answer[:200])
            page.get_by_role("button", name="Regenerate").click()  # a second version: "‹ 2 / 2 ›" under it
            page.wait_for_function("() => !pychat.generating && pychat.chat.view.messages.at(-1).root.dataset.done")
            wait_offline_badge(page)

            settle(page)
            page.screenshot(path=str(out / "screenshot-desktop.png"))
            saved.append(out / "screenshot-desktop.png")
            page.emulate_media(color_scheme="dark")
            settle(page)
            page.screenshot(path=str(out / "screenshot-dark.png"))
            saved.append(out / "screenshot-dark.png")

            log("reloading at phone size")
            page.emulate_media(color_scheme="light")
            page.set_viewport_size(PHONE)
            page.reload()
            wait_ready(page, timeout_s * 1000)
            if not page.locator(ASSISTANT).count():  # the conversation did not come back: ask again
                fill_setting(page, "temperature", 0)
                fill_setting(page, "max-tokens", max_tokens)
                ask(page, prompt, timeout_s * 1000)
            page.evaluate("() => document.querySelector('main').scrollTo(0, 0)")
            settle(page)
            page.screenshot(path=str(out / "screenshot-phone.png"))
            saved.append(out / "screenshot-phone.png")
            context.close()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return saved


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="a built site (default: build one into a temporary directory)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
                        help="the model the built site ships (with no --site)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--timeout", type=int, default=600, help="seconds for start-up and for the answer")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pychat-screenshots-") as tmp:
        site = args.site
        if site is None:
            log("building the site")
            site = build(Path(tmp) / "site", args.model)
        elif not (site / "index.html").exists():
            raise SystemExit("%s has no index.html: build it with `python build/build_site.py`" % site)
        for path in take(site, args.out, args.prompt, args.max_tokens, args.timeout):
            log("saved %s" % path)


if __name__ == "__main__":
    main(sys.argv[1:])
