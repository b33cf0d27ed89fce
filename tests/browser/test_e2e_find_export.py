"""Find, export and import conversations, and the app's PWA manifest, in the real page in Chromium.

Two conversations: one asked through the page (the tiny model of tests/support/fault_server.py answers its
payload), one saved through the page's own store API with a Markdown answer. The search box finds a message
of the one not shown and opens it with the match marked inside the rendered Markdown; nothing the user wrote
becomes HTML. The exports are Playwright downloads, checked against independent readers: markdown-it-py for
the Markdown, the openai package's message types and the engine's fine-tuning reader (what `pychat-wasm
finetune --data` reads) for the JSONL, which the page then imports back; a malformed JSONL is refused with
its line named and nothing imported. The manifest is checked by Chromium's own parser (CDP
Page.getAppManifest, Page.getInstallabilityErrors), served with its type, precached, and works offline; the
search box fits a 390 px phone in both colour schemes. No Content-Security-Policy violation on the way.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import List

import pydantic
import pytest
from markdown_it import MarkdownIt
from openai.types.chat import ChatCompletionMessageParam

from e2e_helpers import (PAGE_TIMEOUT_MS, REPO, alert_texts, ask, contrast, fault_site_fixtures, http_get, page_fixture,
                         reloaded_offline, wait_ready)
from pychat_wasm.cli.train import load_data

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAYLOAD = "Cold seas. "
SETTINGS = dict(temperature=0, max_tokens=2)
QUESTION = "Where do penguins live?"
fault_site, fault_server, files = fault_site_fixtures(PAYLOAD, 0, {})

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""
page = page_fixture("fault_server", RECORD_VIOLATIONS, **SETTINGS)

# The second conversation, saved through the page's store: a Markdown answer, and HTML in the user's text
SEEDED = {"system_prompt": "You know birds.", "messages": [
    {"role": "user", "content": "Tell me about emperor penguins <img src=x onerror=window.__xss=1>"},
    {"role": "assistant", "content": "Emperor **penguins** breed in Antarctica.\n\n```\nhuddle(penguins)\n```"}]}
SEED = """async (c) => {
  const conversation = Pychat.ConversationStore.create(c);
  await pychat.conversations.put(conversation);
  await pychat.chat.list.render();
  return conversation.id;
}"""
STORED = """async () => (await pychat.conversations.list()).map(
  ({id, title, system_prompt, messages}) => ({id, title, system_prompt, messages: messages.map(({role, content}) => ({role, content}))}))"""


def search(page, text):
    page.get_by_role("searchbox", name="Search conversations").fill(text)
    if text:
        page.wait_for_selector("#search-results:not([hidden]) li")


def hits(page):
    return page.evaluate("""() => [...document.querySelectorAll('#search-results .hit')].map((b) => ({
      title: b.querySelector('.hit-title').textContent, role: b.querySelector('.hit-role').textContent,
      snippet: b.querySelector('.hit-snippet').textContent, marked: b.querySelector('mark').textContent}))""")


def open_hit(page, hit, marked):
    """Click the search hit (a locator) and wait until its message shows the marks, each reading `marked`."""
    hit.click()
    page.wait_for_function("""(text) => { const marks = document.querySelectorAll("#messages .search-hit mark");
      return marks.length && [...marks].every((m) => m.textContent === text); }""", arg=marked)


def current_title(page):
    return page.text_content("#conversation-list li[aria-current=true] .title")


def download(page, scope, format_):
    page.select_option("#export-scope", scope)
    page.select_option("#export-format", format_)
    with page.expect_download() as event:
        page.click("#conversation-export")
    return event.value


def import_file(page, path, kind):
    page.evaluate("document.querySelectorAll('.alert').forEach((a) => a.remove())")
    page.set_input_files("#conversation-import", str(path))
    page.wait_for_selector(".alert[data-kind=%s]" % kind)
    return alert_texts(page, kind)


@pytest.fixture(scope="module")
def conversations(page):
    """The two conversations: {"asked": ..., "seeded": ...} as stored; the asked one is on the page."""
    page.click("#new-chat")
    answer, _ = ask(page, QUESTION)
    assert answer == PAYLOAD * 2
    page.evaluate(SEED, SEEDED)
    stored = {c["messages"][0]["content"]: c for c in page.evaluate(STORED)}
    return {"asked": stored[QUESTION], "seeded": stored[SEEDED["messages"][0]["content"]]}


def test_search_finds_a_message_in_another_conversation_and_opens_it_marked(page, conversations):
    asked, seeded = conversations["asked"], conversations["seeded"]
    assert current_title(page) == asked["title"]
    search(page, "ANTARCTICA")
    assert hits(page) == [{"title": seeded["title"], "role": "Model", "marked": "Antarctica",
                           "snippet": "Emperor **penguins** breed in Antarctica. ``` huddle(penguins) ```"}]
    assert page.is_hidden("#conversation-list")  # the hits take the list's place
    open_hit(page, page.locator("#search-results .hit"), "Antarctica")
    assert current_title(page) == seeded["title"]
    answer = page.locator("#messages .message").nth(1)
    assert answer.get_attribute("class").split() == ["message", "search-hit"]
    assert answer.locator(".markdown mark").all_text_contents() == ["Antarctica"]
    assert answer.locator(".markdown strong").text_content() == "penguins"  # the Markdown is still rendered
    assert answer.locator(".markdown p").first.text_content() == "Emperor penguins breed in Antarctica."
    box, view = answer.locator("mark").bounding_box(), page.locator("#messages").bounding_box()
    assert view["y"] <= box["y"] and box["y"] + box["height"] <= view["y"] + view["height"]  # scrolled into view

    # Every message that matches, in every conversation; a match inside bold text and code is marked there
    search(page, "penguins")
    assert sorted((h["title"], h["role"]) for h in hits(page)) == sorted(
        [(asked["title"], "You"), (seeded["title"], "You"), (seeded["title"], "Model")])
    open_hit(page, page.locator("#search-results .hit", has_text="Model"), "penguins")
    answer = page.locator("#messages .message").nth(1)
    assert answer.locator(".markdown strong mark").all_text_contents() == ["penguins"]
    assert answer.locator(".markdown pre code mark").all_text_contents() == ["penguins"]
    assert answer.locator(".markdown pre code").text_content() == "huddle(penguins)"

    # The user's HTML is text, in the hit and in the message: no element made of it, nothing ran
    search(page, "<img")
    assert [h["marked"] for h in hits(page)] == ["<img"]
    assert page.locator("#search-results img, #messages img").count() == 0
    open_hit(page, page.locator("#search-results .hit"), "<img")
    assert page.locator("#messages .message").nth(0).locator(".content").text_content() == SEEDED["messages"][0]["content"]
    assert page.evaluate("window.__xss") is None

    search(page, "no such words anywhere")
    assert page.text_content("#search-results") == "Nothing matches “no such words anywhere”."
    # Escape empties the box, and only that: an answer being written (played here) is not stopped
    page.evaluate("() => { window.__stopped = 0; pychat.chat.generating = true;"
                  " pychat.chat.stop = () => { window.__stopped++; }; }")
    page.press("#conversation-search", "Escape")
    assert page.input_value("#conversation-search") == "" and page.evaluate("window.__stopped") == 0
    page.evaluate("pychat.chat.generating = false; delete pychat.chat.stop")
    assert page.is_visible("#conversation-list") and page.is_hidden("#search-results")
    assert page.evaluate("window.__violations") == []


def test_markdown_export_of_one_conversation(page, conversations, tmp_path):
    seeded = conversations["seeded"]
    page.locator("#conversation-list li .title", has_text=seeded["title"]).click()
    page.wait_for_selector("#conversation-list li[aria-current=true]")
    assert current_title(page) == seeded["title"]
    file = download(page, "one", "markdown")
    assert re.fullmatch(r"pychat-tell-me-about-emperor-penguins-img-src-x\.md", file.suggested_filename)
    text = open(file.path(), encoding="utf-8").read()
    user, answer = (m["content"] for m in seeded["messages"])
    assert text == "# %s\n\n## System\n\n%s\n\n## User\n\n%s\n\n## Assistant\n\n%s\n" % (
        seeded["title"], seeded["system_prompt"], user, answer)
    tokens = MarkdownIt().parse(text)  # an independent reading: the title, then one section per role
    headings = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == [("h1", seeded["title"]), ("h2", "System"), ("h2", "User"), ("h2", "Assistant")]
    assert [t.content for t in tokens if t.type == "fence"] == ["huddle(penguins)\n"]


def test_jsonl_export_is_finetune_data_and_imports_back(page, conversations, tmp_path):
    file = download(page, "all", "jsonl")
    assert re.fullmatch(r"pychat-conversations-\d{4}-\d\d-\d\d\.jsonl", file.suggested_filename)
    path = tmp_path / file.suggested_filename
    file.save_as(path)
    expected = [([{"role": "system", "content": c["system_prompt"]}] if c["system_prompt"] else []) + c["messages"]
                for c in page.evaluate(STORED)]  # newest first, as the list shows them
    assert sorted(map(json.dumps, expected)) == sorted(json.dumps(
        ([{"role": "system", "content": c["system_prompt"]}] if c["system_prompt"] else []) + c["messages"])
        for c in conversations.values())
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    messages_type = pydantic.TypeAdapter(List[ChatCompletionMessageParam])  # OpenAI's own message shapes
    assert [messages_type.validate_python(r["messages"]) for r in records] == [r["messages"] for r in records] == expected
    assert all(list(r) == ["messages"] for r in records)
    data = load_data([str(path)])  # what `pychat-wasm finetune --data FILE` trains on
    assert data.conversations == expected and data.documents == []

    before = page.evaluate(STORED)
    assert import_file(page, path, "notice") == ["Imported 2 conversations from %s." % path.name]
    after = page.evaluate(STORED)
    assert len(after) == 4 and {c["id"] for c in before} < {c["id"] for c in after}
    imported = [c for c in after if c["id"] not in {b["id"] for b in before}]
    plain = lambda cs: sorted(json.dumps([c["system_prompt"], c["messages"]]) for c in cs)  # noqa: E731
    assert plain(imported) == plain(before)
    assert page.locator("#conversation-list li").count() == 4

    # A malformed file is refused whole, its bad line named
    good = lines[0]
    bad = {"bad-json.jsonl": (good + "\n\n{oops\n", "Line 3: not JSON ("),
           "tool.jsonl": ('{"messages": [{"role": "tool", "content": "42"}]}\n' + good,
                          'Line 1: message 1 has the role "tool"'),
           "text.json": (good + "\n" + '{"text": "a document"}', 'Line 2: not a {"messages": [...]} object')}
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        shown = import_file(page, tmp_path / name, "error")
        assert shown[0].startswith("Could not import %s: %s" % (name, message)), shown
        assert page.evaluate(STORED) == after  # nothing of it was imported
    assert page.evaluate("window.__violations") == []


def test_the_pwa_manifest_is_valid_linked_served_precached_and_works_offline(page, conversations, fault_server,
                                                                            fault_site):
    href = page.evaluate("document.querySelector('link[rel=manifest]').href")
    assert href == fault_server.url + "manifest.webmanifest"
    response, body = http_get(fault_server.port, "/manifest.webmanifest")
    assert response.status == 200 and response.getheader("Content-Type") == "application/manifest+json"
    manifest = json.loads(body)
    assert manifest["name"] and manifest["short_name"] == "pychat-wasm" and manifest["display"] == "standalone"
    assert manifest["start_url"] == "./" and manifest["icons"]

    # Chromium's own reading: no parse errors, the fields as written, installable as an app
    cdp = page.context.new_cdp_session(page)
    app = cdp.send("Page.getAppManifest")
    assert app["url"] == href and app["errors"] == [] and json.loads(app["data"]) == manifest
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert [e["errorId"] for e in errors if e["errorId"] != "in-incognito"] == []  # a test's context is incognito
    for icon in manifest["icons"]:
        response, _ = http_get(fault_server.port, "/" + icon["src"])
        assert response.status == 200 and response.getheader("Content-Type") == icon["type"]

    # The colours are the page's background, light and dark (styles.css's --bg)
    css = (REPO / "web" / "styles.css").read_text()
    light, dark = re.findall(r"--bg: (#[0-9a-f]{6});", css)
    assert manifest["background_color"] == manifest["theme_color"] == light
    assert page.evaluate("[...document.querySelectorAll('meta[name=theme-color]')].map((m) => [m.media, m.content])") \
        == [["(prefers-color-scheme: light)", light], ["(prefers-color-scheme: dark)", dark]]

    # Built into the site's manifest with its sha256, precached, and there offline
    site_manifest = json.loads((fault_site.site / "manifest.json").read_text())
    assert "manifest.webmanifest" in site_manifest["precache"]
    assert site_manifest["files"]["manifest.webmanifest"]["sha256"] == hashlib.sha256(body).hexdigest()
    with reloaded_offline(page, fault_server):
        fetched = page.evaluate("async () => { const r = await fetch('manifest.webmanifest');"
                                " return [r.status, r.headers.get('Content-Type'), await r.json()]; }")
        assert fetched == [200, "application/manifest+json", manifest]
        search(page, "antarctica")  # the search works offline too
        assert {h["title"] for h in hits(page)} == {conversations["seeded"]["title"]}
    assert page.evaluate("window.__violations") == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_search_box_and_export_fit_a_phone_in_both_schemes(browser, fault_server, scheme):
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme=scheme)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(fault_server.url)
        wait_ready(page)
        page.click("#conversations summary")  # folded below the chat on a phone
        box = page.get_by_role("searchbox", name="Search conversations")
        box.scroll_into_view_if_needed()
        geometry = page.evaluate("""() => {
          const rect = (id) => { const r = document.getElementById(id).getBoundingClientRect();
                                 return {left: r.left, right: r.right, height: r.height}; };
          return {scrollWidth: document.documentElement.scrollWidth, search: rect("conversation-search"),
                  scope: rect("export-scope"), format: rect("export-format"), export: rect("conversation-export")};
        }""")
        assert geometry["scrollWidth"] <= 390, geometry
        for name in ("search", "scope", "format", "export"):
            assert 0 <= geometry[name]["left"] and geometry[name]["right"] <= 390 and geometry[name]["height"] >= 40, \
                (name, geometry)
        assert geometry["search"]["right"] - geometry["search"]["left"] >= 300, geometry
        colours = page.evaluate("""() => { const mark = document.createElement("mark");
          document.getElementById("search-results").before(mark);
          const style = getComputedStyle(mark); return [style.color, style.backgroundColor]; }""")
    finally:
        context.close()
    assert contrast(*colours) >= 4.5, colours

