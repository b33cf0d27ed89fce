"""Reasoning blocks in the page (web/reasoning.js, web/chat_view.js) in Chromium, with a tiny model whose
answer is fixed (tests/support/tiny_models.py: it says its payload once, then stops) and holds a <think> block:
the answer is shown with its reasoning folded into a collapsed "Reasoning" block, it stays so after a reload,
and the next turn's prompt carries the past answer without its reasoning. The reference for that prompt is its
size in the tiny model's byte-level ChatML (e2e_helpers.chatml_tokens), counted from the messages the model
should read.
"""
from __future__ import annotations

import re

import pytest
from e2e_helpers import GREEDY, SiteServer, ask, chatml_tokens, load_build_module, page_fixture, wait_ready
from tiny_models import write_tiny_gguf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REASONING = "The user greets me. I greet them back."
ANSWER = "Hello there."
PAYLOAD = "<think>" + REASONING + "</think>" + ANSWER


@pytest.fixture(scope="module")
def reasoning_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reasoning_site")
    model = write_tiny_gguf(directory / "tiny-reasoner.gguf", PAYLOAD, then_stop=True)
    load_build_module("build_site").build_site(directory / "site", model)
    server = SiteServer(directory / "site")
    yield server
    server.stop()


page = page_fixture("reasoning_server", **GREEDY)

# Each answer's reasoning block as shown: [{summary, open, text, answer}] (answer: the rendered text after it).
BLOCKS = """() => [...document.querySelectorAll('.message[data-role=assistant]')].map((m) => {
  const block = m.querySelector('details.reasoning');
  return block && {summary: block.querySelector('summary').textContent, open: block.open,
                   text: block.querySelector('.reasoning-text').textContent,
                   visible: block.querySelector('.reasoning-text').checkVisibility(),
                   answer: m.querySelector('.markdown').textContent.trim()};
})"""


def prompt_tokens(stats: str) -> int:
    """The prompt's size from an answer's stats line: "... prompt 12 new + 30 cached tokens"."""
    new, cached = re.search(r"prompt (\d+) new \+ (\d+) cached", stats).groups()
    return int(new) + int(cached)


def test_the_reasoning_is_shown_collapsed_apart_from_the_answer(page):
    answer, _ = ask(page, "Hi")
    assert answer == PAYLOAD  # the message keeps what the model wrote
    assert page.evaluate(BLOCKS) == [{"summary": "Reasoning", "open": False, "text": REASONING, "visible": False,
                                      "answer": ANSWER}]
    page.click(".message[data-role=assistant] details.reasoning summary")
    assert page.evaluate(BLOCKS)[0]["open"] is True and page.evaluate(BLOCKS)[0]["visible"] is True


def test_the_next_prompt_carries_past_answers_without_their_reasoning(page):
    _, stats = ask(page, "Again?")
    sent = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": "Again?"}]
    assert prompt_tokens(stats) == chatml_tokens(sent)
    with_reasoning = [dict(message, content=PAYLOAD) if message["role"] == "assistant" else message for message in sent]
    assert chatml_tokens(with_reasoning) != chatml_tokens(sent)  # the check can tell the two apart


def test_reasoning_blocks_stay_collapsed_after_a_reload(page):
    page.reload()
    wait_ready(page)
    expected = {"summary": "Reasoning", "open": False, "text": REASONING, "visible": False, "answer": ANSWER}
    assert page.evaluate(BLOCKS) == [expected, expected]
