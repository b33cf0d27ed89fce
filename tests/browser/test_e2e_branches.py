"""Conversation branches in the real page in Chromium (web/conversation_tree.js, web/transcript.js): Edit and
Regenerate keep the old version, every message with versions shows "Previous version" / "n / m" / "Next
version", switching restores each branch's own continuation (with the mouse and the keyboard), the same
branch and labels come back after a reload, the next turn continues the branch on screen, and a conversation
stored in the older flat format migrates. The tiny model of tests/support/fault_server.py answers its payload
(once per token; max_tokens differs between the two answers of a Regenerate, so they differ).

References from outside the page's code: the request the page hands to its workers and the chunks the engine
streams back (recorded around ApiRequests.request), the tiny model's ChatML token counts (chatml_tokens: the
KV cache reused for exactly the tokens before the fork, llama.cpp's timings.cache_n), the records IndexedDB
holds, markdown-it-py for the Markdown export, the openai package's message types and the engine's fine-tuning
reader (what `pychat-wasm finetune --data` reads) for the JSONL, WCAG contrast at 390 px in dark mode.
"""
from __future__ import annotations

import json
from typing import List

import pydantic
import pytest
from markdown_it import MarkdownIt
from openai.types.chat import ChatCompletionMessageParam

from e2e_helpers import (alert_texts, ask, chatml_tokens, contrast, fault_site_fixtures, page_fixture, saved_messages,
                         set_settings, shown_messages, wait_ready, wait_turn_ended)
from pychat_wasm.cli.train import load_data


pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAYLOAD = "Cold seas. "
fault_site, fault_server, files = fault_site_fixtures(PAYLOAD, 0, {})

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""
page = page_fixture("fault_server", RECORD_VIOLATIONS, temperature=0, max_tokens=2)

# The messages avoid " a", the tiny vocabulary's only merge, so that every byte is one token (chatml_tokens)
Q1, Q2, Q2B, Q3, Q4 = "Where do penguins live?", "Tell me more.", "Why so cold?", "Go on.", "And then?"
ANSWER, SHORT = PAYLOAD * 2, PAYLOAD  # max_tokens 2 and 1

# Every request the page hands to its workers, and the chunks the engine streamed back for it
RECORD_REQUESTS = """() => {
  const requests = pychat.chat.requests, send = requests.request.bind(requests);
  window.__requests = [];
  requests.request = async (kind, body, options) => {
    const entry = {kind, body, chunks: []};
    window.__requests.push(entry);
    const chunks = await send(kind, body, options);
    return (async function* () { for await (const chunk of chunks) { entry.chunks.push(chunk); yield chunk; } })();
  };
}"""

# Each message shown: its version label ("2 / 3", or null without versions) and whether its arrows are enabled
VERSIONS = """() => pychat.chat.view.messages.map((m) => {
  const label = m.root.querySelector(".version-label");
  if (!label) return null;
  const enabled = (name) => !m.root.querySelector(`button[aria-label="${name}"]`).disabled;
  return [label.textContent, enabled("Previous version"), enabled("Next version")];
})"""

# The record IndexedDB holds for the conversation on the page, as stored
STORED_RECORD = """() => new Promise((resolve, reject) => {
  const opening = indexedDB.open("pychat-conversations");
  opening.onerror = () => reject(opening.error);
  opening.onsuccess = () => {
    const get = opening.result.transaction("conversations").objectStore("conversations").get(pychat.conversation.id);
    get.onsuccess = () => { opening.result.close(); resolve(get.result); };
  };
})"""

# An old page's conversation: IndexedDB's record and localStorage's copy of the one in use, flat (format 1)
WRITE_FLAT = """(record) => new Promise((resolve, reject) => {
  localStorage.setItem("pychat.current-conversation", JSON.stringify(record));
  const opening = indexedDB.open("pychat-conversations");
  opening.onerror = () => reject(opening.error);
  opening.onsuccess = () => {
    const tx = opening.result.transaction("conversations", "readwrite");
    tx.objectStore("conversations").put(record);
    tx.oncomplete = () => { opening.result.close(); resolve(); };
  };
})"""


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def versions(page):
    return page.evaluate(VERSIONS)


def requests(page):
    return page.evaluate("() => window.__requests")


def message(page, index):
    return page.locator("#messages .message").nth(index)


def mark_shown(page):
    """Mark the messages on the page, to see when they are rendered anew (wait_rendered)."""
    page.evaluate("() => document.querySelectorAll('#messages .message').forEach((m) => { m.dataset.old = 'true'; })")


def wait_rendered(page):
    page.wait_for_function("() => !document.querySelector('#messages .message[data-old]')")


def switch(page, index, name):
    """Click the message's "Previous version" or "Next version" and wait for the transcript to change."""
    mark_shown(page)
    message(page, index).get_by_role("button", name=name).click()
    wait_rendered(page)


def finish(page):
    """Wait for the turn an Edit or a Regenerate started (its answer done, the page idle)."""
    page.wait_for_function("() => !pychat.generating && pychat.chat.view.messages.at(-1).root.dataset.done")
    wait_turn_ended(page)


@pytest.fixture(scope="module")
def branched(page):
    """Q1 A1 Q2 A2; Q2 edited to Q2B (answered); that answer regenerated shorter. Returns the recorded requests."""
    page.click("#new-chat")
    page.evaluate(RECORD_REQUESTS)
    assert ask(page, Q1)[0] == ANSWER and ask(page, Q2)[0] == ANSWER
    message(page, 2).get_by_role("button", name="Edit").click()
    page.fill("#messages .editor textarea", Q2B)
    page.press("#messages .editor textarea", "Enter")
    finish(page)
    set_settings(page, max_tokens=1)
    page.get_by_role("button", name="Regenerate").click()
    finish(page)
    set_settings(page, max_tokens=2)
    return requests(page)


def test_edit_and_regenerate_keep_the_old_versions(page, branched):
    assert [r["body"]["messages"] for r in branched] == [  # each turn sent the messages shown then
        [user(Q1)], [user(Q1), assistant(ANSWER), user(Q2)],
        [user(Q1), assistant(ANSWER), user(Q2B)], [user(Q1), assistant(ANSWER), user(Q2B)]]
    shown = [user(Q1), assistant(ANSWER), user(Q2B), assistant(SHORT)]
    assert shown_messages(page) == shown == saved_messages(page)
    assert versions(page) == [None, None, ["2 / 2", True, False], ["2 / 2", True, False]]
    record = page.evaluate(STORED_RECORD)  # IndexedDB holds every version, as a tree, and nothing derived
    assert record["version"] == 2 and "messages" not in record
    assert [(n["role"], n["content"]) for n in record["nodes"]] == [
        ("user", Q1), ("assistant", ANSWER), ("user", Q2), ("assistant", ANSWER), ("user", Q2B),
        ("assistant", ANSWER), ("assistant", SHORT)]
    assert page.evaluate("window.__violations") == []


def test_switching_restores_each_branch_and_survives_a_reload(page, branched):
    switch(page, 3, "Previous version")  # the first answer to Q2B
    assert shown_messages(page)[2:] == [user(Q2B), assistant(ANSWER)]
    assert versions(page)[2:] == [["2 / 2", True, False], ["1 / 2", False, True]]
    switch(page, 2, "Previous version")  # Q2, with its own answer
    assert shown_messages(page) == [user(Q1), assistant(ANSWER), user(Q2), assistant(ANSWER)]
    assert versions(page) == [None, None, ["1 / 2", False, True], None]
    # The keyboard: the focus stayed on the arrows (Previous is disabled now, so on Next); Enter switches back,
    # to Q2B with the answer it was left with (the first one), not the newest
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Next version"
    mark_shown(page)
    page.keyboard.press("Enter")
    wait_rendered(page)
    assert shown_messages(page)[2:] == [user(Q2B), assistant(ANSWER)]
    assert versions(page)[2:] == [["2 / 2", True, False], ["1 / 2", False, True]]
    switch(page, 2, "Previous version")
    shown, labels = shown_messages(page), versions(page)
    page.wait_for_function("async () => (await pychat.conversations.get(pychat.conversation.id)).messages[2].content"
                           " === %s" % json.dumps(Q2))  # the switch is saved

    page.reload()
    wait_ready(page)
    assert shown_messages(page) == shown == saved_messages(page) and versions(page) == labels
    assert page.evaluate("window.__violations") == []


def test_the_next_turn_continues_the_shown_branch_reusing_the_shared_prefix(page, branched):
    page.evaluate(RECORD_REQUESTS)  # again: the page was reloaded
    set_settings(page, temperature=0, max_tokens=2)
    switch(page, 2, "Next version")  # Q2B's branch, then a turn on it
    ask(page, Q3)
    switch(page, 2, "Previous version")  # Q2's branch: the KV cache holds Q2B's, which shares Q1 A1 with it
    ask(page, Q4)
    on_q2b, on_q2 = requests(page)
    assert on_q2b["body"]["messages"] == [user(Q1), assistant(ANSWER), user(Q2B), assistant(ANSWER), user(Q3)]
    sent = [user(Q1), assistant(ANSWER), user(Q2), assistant(ANSWER), user(Q4)]
    assert on_q2["body"]["messages"] == sent
    assert shown_messages(page) == sent + [assistant(ANSWER)] == saved_messages(page)

    # The engine's report (the usage chunk: OpenAI's usage, llama.cpp's timings): it reused exactly the tokens
    # both branches share, Q1 A1 and "<|im_start|>user\n" (Q2 and Q2B differ from their first byte on)
    usage = on_q2["chunks"][-1]
    shared = chatml_tokens([user(Q1), assistant(ANSWER)], generation_prompt=False) + 1 + len(b"user\n")
    assert usage["usage"]["prompt_tokens"] == chatml_tokens(sent)
    assert usage["timings"]["cache_n"] == shared
    assert usage["timings"]["prompt_n"] == chatml_tokens(sent) - shared
    stats = message(page, 5).locator(".stats").text_content()
    assert "prompt %d new + %d cached tokens" % (chatml_tokens(sent) - shared, shared) in stats
    assert versions(page) == [None, None, ["1 / 2", False, True], None, None, None]


def test_markdown_and_jsonl_export_the_shown_branch(page, branched, tmp_path):
    shown = saved_messages(page)
    assert [m["content"] for m in shown] == [Q1, ANSWER, Q2, ANSWER, Q4, ANSWER]
    page.select_option("#export-scope", "one")
    files = {}
    for format_ in ("markdown", "jsonl"):
        page.select_option("#export-format", format_)
        with page.expect_download() as event:
            page.click("#conversation-export")
        files[format_] = tmp_path / event.value.suggested_filename
        event.value.save_as(files[format_])

    text = files["markdown"].read_text(encoding="utf-8")
    tokens = MarkdownIt().parse(text)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]
    paragraphs = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "paragraph_open"]
    assert headings == ["User", "Assistant"] * 3 and paragraphs == [m["content"].strip() for m in shown]
    assert Q2B not in text and Q3 not in text  # the other branch is not in it

    (record,) = [json.loads(line) for line in files["jsonl"].read_text(encoding="utf-8").splitlines()]
    messages_type = pydantic.TypeAdapter(List[ChatCompletionMessageParam])  # OpenAI's own message shapes
    assert messages_type.validate_python(record["messages"]) == record["messages"] == shown
    data = load_data([str(files["jsonl"])])  # what `pychat-wasm finetune --data FILE` trains on
    assert data.conversations == [shown] and data.documents == []
    assert page.evaluate("window.__violations") == []


def test_the_versions_fit_a_phone_in_dark_mode_and_read_well(page, branched):
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    try:
        versions_group = message(page, 2).get_by_role("group", name="Versions")
        versions_group.scroll_into_view_if_needed()
        geometry = page.evaluate("""() => {
          const group = document.querySelector("#messages .versions");
          const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.right, r.height]; };
          return {scrollWidth: document.documentElement.scrollWidth, group: box(group),
                  buttons: [...group.querySelectorAll("button")].map(box)};
        }""")
        assert geometry["scrollWidth"] <= 390, geometry
        assert 0 <= geometry["group"][0] and geometry["group"][1] <= 390, geometry
        assert all(height >= 40 for _, _, height in geometry["buttons"]), geometry  # for fingers
        colours = page.evaluate("""() => { const label = document.querySelector("#messages .version-label");
          let node = label, background = "rgba(0, 0, 0, 0)";
          while (node && background === "rgba(0, 0, 0, 0)") { background = getComputedStyle(node).backgroundColor;
                                                              node = node.parentElement; }
          return [getComputedStyle(label).color, background, matchMedia("(prefers-color-scheme: dark)").matches]; }""")
    finally:
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": 1280, "height": 720})
    assert colours[2] is True
    assert contrast(colours[0], colours[1]) >= 4.5, colours


def test_a_conversation_stored_flat_by_an_older_page_migrates(page, branched):
    flat = {"id": "c-old-1", "title": "Old one", "titled": True, "system_prompt": "", "dropped": 0,
            "created": 1700000000000, "updated": 1700000000001,
            "messages": [user("Old question?"), assistant("Old answer."), user("Old follow-up?"), assistant("Yes.")]}
    page.evaluate(WRITE_FLAT, flat)
    page.reload()
    wait_ready(page)
    assert shown_messages(page) == flat["messages"] == saved_messages(page)
    assert versions(page) == [None] * 4
    assert page.text_content("#conversation-list li[aria-current=true] .title") == "Old one"
    message(page, 2).get_by_role("button", name="Edit").click()  # and it branches like any other
    page.fill("#messages .editor textarea", "New follow-up?")
    page.press("#messages .editor textarea", "Enter")
    finish(page)
    assert shown_messages(page) == flat["messages"][:2] + [user("New follow-up?"), assistant(ANSWER)]
    assert versions(page) == [None, None, ["2 / 2", True, False], None]
    record = page.evaluate(STORED_RECORD)
    assert record["version"] == 2 and "messages" not in record and len(record["nodes"]) == 6
    switch(page, 2, "Previous version")
    assert shown_messages(page) == flat["messages"]
    assert alert_texts(page, "error") == [] and page.evaluate("window.__violations") == []
