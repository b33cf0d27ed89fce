"""Several workers per token in Chromium: a host that sends no isolation headers, and the workers setting.

build/serve.py sends COOP/COEP/CORP, so the other browser tests run the default pool (one worker per core).
Here a host sends none: the first visit is not cross-origin isolated and runs one worker; the service
worker then serves every file with the headers, so the next load runs the full pool. The answers are the
native engine's greedy answer (GOLDEN_ANSWER of tests/support/texts.py, from transformers and llama.cpp) every time;
a worker that dies alone and the other worker-fault cases are in test_e2e.py and test_e2e_storage.py.
"""
from __future__ import annotations

import pytest

from e2e_helpers import (GREEDY, POOL_SIZE, SiteServer, apply_model_settings, ask, load_build_module, new_context,
                         ready_status, set_settings, wait_ready)
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION

pytestmark = [pytest.mark.browser, pytest.mark.slow]

serve = load_build_module("serve")
MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


class NoIsolationHandler(serve.SiteHandler):
    """A static host that cannot set COOP / COEP / CORP."""

    def isolation_headers(self):
        return ()

    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture(scope="module")
def plain_host(site):
    server = SiteServer(site, NoIsolationHandler)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(browser, plain_host):
    with new_context(browser) as context:
        page = context.new_page()
        page.goto(plain_host.url)
        yield page


def golden_answer(page) -> str:
    set_settings(page, **GREEDY)
    page.click("#new-chat")
    answer, _ = ask(page, GOLDEN_QUESTION)
    return answer


def test_without_isolation_the_first_visit_runs_one_worker(page):
    wait_ready(page)
    assert page.evaluate("crossOriginIsolated") is False
    assert page.text_content("#status") == ready_status(MODEL, 1)
    assert page.is_disabled("#workers")
    assert "several need a cross-origin isolated page" in page.text_content("#workers-hint")
    assert golden_answer(page) == GOLDEN_ANSWER


def test_the_service_worker_isolates_the_next_load(page):
    page.wait_for_selector("#offline-status[data-ready=true]")
    page.reload()
    wait_ready(page)
    assert page.evaluate("crossOriginIsolated") is True  # the headers came from sw.js
    assert page.text_content("#status") == ready_status(MODEL, POOL_SIZE)
    assert golden_answer(page) == GOLDEN_ANSWER


@pytest.mark.skipif(POOL_SIZE < 2, reason="one core: the page never starts more than one worker")
def test_the_workers_setting_restarts_python_with_that_many(page):
    for workers, count in (("1", 1), ("auto", POOL_SIZE)):
        assert apply_model_settings(page, workers=workers) == "Applied: %s is reloaded with them." % MODEL
        page.wait_for_selector("#status[data-phase=ready]:has-text('%s')" % ready_status(MODEL, count))
        assert golden_answer(page) == GOLDEN_ANSWER
        assert page.evaluate("JSON.parse(localStorage.getItem('pychat.workers'))") == workers
