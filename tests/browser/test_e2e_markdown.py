"""Answers rendered as Markdown (web/markdown.js, web/chat_view.js) in Chromium, on the built site.

Most tests run on a small lab page written into the module's copy of the site: the site's own styles.css,
vendor/marked.umd.js, vendor/purify.min.js, page_ui.js, markdown.js, reasoning.js, tool_calls.js and
chat_view.js, and an empty #messages, served WITHOUT the Content-Security-Policy. The policy would block an inline handler or a javascript: URL
by itself; without it, only the renderer and the sanitizer stand between a payload and its running, and a
control shows that a payload that gets through really sets the flag these tests watch. The last tests go
through the real page, under its policy: a tiny model's answer streamed by the Python worker, and the
vendor files precached by the service worker for an offline reload.
"""
from __future__ import annotations

import json
import random

import pytest

from e2e_helpers import REPO, RecordingHandler, SiteServer, ask, new_context, open_ready_page
from fault_server import build_fault_site

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAB_PAGE = "markdown_lab.html"
LAB_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Markdown lab</title>
<link rel="stylesheet" href="styles.css"></head>
<body><section id="chat"><div id="messages"></div></section>
<script src="page_ui.js"></script>
<script src="vendor/marked.umd.js"></script>
<script src="vendor/purify.min.js"></script>
<script src="markdown.js"></script>
<script src="reasoning.js"></script>
<script src="tool_calls.js"></script>
<script src="chat_view.js"></script>
</body></html>
"""
VENDOR = ["vendor/marked.umd.js", "vendor/purify.min.js", "vendor/marked.LICENSE.txt",
          "vendor/dompurify.LICENSE.txt", "vendor/dompurify.LICENSE-MPL.txt"]

# The tiny model's one token: Markdown and a payload; it answers it twice (max_tokens=2).
CHAT_PAYLOAD = '**Bold** and `code` <img src=x onerror="window.__pwned=1"> [x](javascript:window.__pwned=1)\n\n'

DOCUMENT = """# Title

Some *emphasis*, **strong**, ~~struck~~ and `inline code`.
A second line of the same paragraph.

- one
- two
  1. nested
- [x] done

> quoted

| Left | Centre | Right |
|:-----|:------:|------:|
| a    | **b**  | `c`   |

```python
def greet(name):
    return f"<b>{name}</b> & co"
```

See [the docs](https://example.com/docs?a=1&b=2 "Docs") or <https://example.org>, mail <mailto:x@example.com>.
![a chart](https://example.com/chart.png)
"""
CODE = 'def greet(name):\n    return f"<b>{name}</b> & co"'

PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    '<svg onload="window.__pwned=1">',
    "[click](javascript:window.__pwned=1)",
    "[x](JaVaScRiPt:window.__pwned=1)",
    '<a href="javascript:window.__pwned=1">a</a>',
    '<iframe src="javascript:window.__pwned=1">',
    "[x](data:text/html,<script>window.__pwned=1</script>)",
    '<details open ontoggle="window.__pwned=1">',
    "[x](&#106;avascript:window.__pwned=1)",
    "<style>body { display: none } #messages { visibility: hidden }</style>",
    "<form action=javascript:window.__pwned=1><button>go</button></form>",
    # beyond the list: other spellings and places
    "[x](&#x6A;avascript:window.__pwned=1) [y](javascript&colon;window.__pwned=1) [z](vbscript:msgbox(1))",
    "<javascript:window.__pwned=1> [a](<javascript:window.__pwned=1>) [b]( javascript:window.__pwned=1 )",
    "![x](javascript:window.__pwned=1) ![y](x onerror=window.__pwned=1)",
    "<code><img/src=x onerror=window.__pwned=1></code>",  # marked passes text after a raw <code> through
    "[ref]\n\n[ref]: javascript:window.__pwned=1",
    '- <img src=x onerror="window.__pwned=1">\n\n| a |\n|---|\n| <svg onload="window.__pwned=1"> |',
    "```html\n<img src=x onerror=window.__pwned=1>\n```",
    '<a href="https://example.com" onclick="window.__pwned=1">a</a> <b onmouseover="window.__pwned=1">b</b>',
    "<link rel=stylesheet href=data:text/css,body{display:none}><meta http-equiv=refresh content=0;url=javascript:1>",
    "<object data=javascript:window.__pwned=1></object><embed src=javascript:window.__pwned=1>",
    "<math><mi xlink:href=javascript:window.__pwned=1>x</mi></math>",
    "<!-- comment --><![CDATA[<img src=x onerror=window.__pwned=1>]]>",
]

# What a rendered message may hold: Markdown's elements, the code bars, nothing that runs or loads.
ALLOWED_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li", "em",
                "strong", "del", "code", "pre", "a", "table", "thead", "tbody", "tr", "th", "td",
                "div", "span", "button"}

RENDER_IN_VIEW = """async ({text, pieces}) => {
  const root = document.getElementById("messages");
  root.replaceChildren();
  const view = new Pychat.ChatView(root);
  const whole = view.add("assistant", text);
  const streamed = view.add("assistant", "");
  for (const piece of pieces) streamed.append(piece);
  await new Promise((resolve) => requestAnimationFrame(resolve));
  streamed.finish();
  return {whole: whole.markdown.innerHTML, streamed: streamed.markdown.innerHTML};
}"""

# Every element of #messages with what could run or load: on* attributes, URL attributes with a scheme
# other than http(s)/mailto, the tags.
INSPECT = """() => {
  const urlNames = ["href", "src", "action", "formaction", "xlink:href", "data", "srcdoc", "poster", "background"];
  const out = {tags: [], handlers: [], urls: []};
  for (const element of document.querySelectorAll("#messages *")) {
    out.tags.push(element.localName);
    for (const attribute of element.attributes) {
      if (attribute.name.toLowerCase().startsWith("on")) out.handlers.push(element.localName + " " + attribute.name);
      if (urlNames.includes(attribute.name.toLowerCase())) out.urls.push(attribute.value);
    }
  }
  out.text = Array.from(document.querySelectorAll("#messages .markdown"), (m) => m.textContent);
  out.bodyDisplay = getComputedStyle(document.body).display;
  out.messagesVisibility = getComputedStyle(document.getElementById("messages")).visibility;
  out.styleSheets = document.styleSheets.length;
  return out;
}"""

# A control run after a payload's rendering (or the clicks on it), outside #messages: an image whose load
# fails, a <details> that opens and a javascript: link clicked, each setting its own flag. These are the ways a
# payload put into the page would run (an inline <svg onload> put in with innerHTML does not), queued after
# anything the payload queued: once all three have fired, a payload that got through would have set
# window.__pwned. The control leaves nothing behind, and fails (rather than hangs) if a flag never comes.
CONTROL_RUNS = """() => new Promise((resolve, reject) => {
  window.__control = {};
  const box = document.createElement("div");
  box.innerHTML = '<img src="x" onerror="__control.image = 1">' +
    '<details open ontoggle="__control.toggle = 1"></details><a href="javascript:__control.link = 1">c</a>';
  document.body.append(box);
  box.querySelector("a").click();
  const giveUp = setTimeout(() => reject(new Error("control flags set: " + JSON.stringify(window.__control))), 30000);
  const look = () => {
    if (["image", "toggle", "link"].every((name) => window.__control[name])) {
      clearTimeout(giveUp);
      box.remove();
      resolve();
    } else {
      requestAnimationFrame(look);
    }
  };
  look();
})"""


def let_anything_queued_run(page) -> None:
    """Wait until whatever the page queued so far has run (a control's own handlers, queued after, ran)."""
    page.evaluate(CONTROL_RUNS)

# The real page's policy violations (none expected: the vendor files are our own origin's).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
                          (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""


class LabHandler(RecordingHandler):
    """The site as the product serves it, but the lab page without a Content-Security-Policy."""

    def content_security_policy(self, name: str):
        return None if name == LAB_PAGE else super().content_security_policy(name)


@pytest.fixture(scope="module")
def lab_site(tmp_path_factory):
    """The site built with a tiny default model that answers CHAT_PAYLOAD, plus the lab page."""
    fault_site = build_fault_site(tmp_path_factory.mktemp("markdown_site"), CHAT_PAYLOAD, 0, {})
    (fault_site.site / LAB_PAGE).write_text(LAB_HTML)
    return fault_site.site


@pytest.fixture(scope="module")
def lab_server(lab_site):
    server = SiteServer(lab_site, handler=LabHandler)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lab_context(browser):
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(30_000)
    yield context
    context.close()


@pytest.fixture
def lab(lab_context, lab_server):
    """The lab page, fresh: no flag set, no popup left open."""
    page = lab_context.new_page()
    page.goto(lab_server.url + LAB_PAGE)
    page.wait_for_function("() => window.Pychat && Pychat.ChatView && Pychat.Markdown && Pychat.Markdown.available()")
    yield page
    for other in lab_context.pages:
        other.close()


def render_whole_and_streamed(page, text: str, seed: int = 0) -> dict:
    """`text` in one assistant message whole and in another appended in random pieces of 1-8 characters."""
    rng = random.Random(seed)
    pieces, at = [], 0
    while at < len(text):
        size = rng.randint(1, 8)
        pieces.append(text[at:at + size])
        at += size
    return page.evaluate(RENDER_IN_VIEW, {"text": text, "pieces": pieces})


def test_vendor_files_are_the_pinned_npm_files_and_are_precached(lab_site):
    manifest = json.loads((lab_site / "manifest.json").read_text())
    pins = json.loads((REPO / "package.json").read_text())["dependencies"]
    assert (pins["marked"], pins["dompurify"]) == ("18.2.1", "3.5.0")
    lock = json.loads((REPO / "package-lock.json").read_text())["packages"]
    assert lock["node_modules/marked"]["version"] == "18.2.1" and lock["node_modules/dompurify"]["version"] == "3.5.0"
    for copy, original in (("marked.umd.js", "marked/lib/marked.umd.js"),
                           ("purify.min.js", "dompurify/dist/purify.min.js"),
                           ("dompurify.LICENSE-MPL.txt", "dompurify/LICENSE-MPL")):
        assert (lab_site / "vendor" / copy).read_bytes() == (REPO / "node_modules" / original).read_bytes(), copy
    assert b"marked v18.2.1" in (lab_site / "vendor" / "marked.umd.js").read_bytes()[:200]
    assert b"DOMPurify 3.5.0" in (lab_site / "vendor" / "purify.min.js").read_bytes()[:200]
    assert set(VENDOR + ["markdown.js"]) <= set(manifest["precache"])
    assert set(VENDOR + ["markdown.js"]) <= set(manifest["files"])
    html = (lab_site / "index.html").read_text()
    order = [html.index('<script src="%s">' % name) for name in
             ("page_ui.js", "vendor/marked.umd.js", "vendor/purify.min.js", "markdown.js", "chat_view.js")]
    assert order == sorted(order)


def test_markdown_renders_blocks_inline_elements_tables_links_and_code(lab):
    result = render_whole_and_streamed(lab, DOCUMENT)
    assert result["streamed"] == result["whole"]
    answer = lab.locator(".message").first.locator(".markdown")
    assert answer.locator("h1").text_content() == "Title"
    assert answer.locator("p em").text_content() == "emphasis"
    assert answer.locator("p strong").first.text_content() == "strong"
    assert answer.locator("p del").text_content() == "struck"
    assert answer.locator("p > code").text_content() == "inline code"
    assert answer.locator("p br").count() >= 1  # a line break in a paragraph is a line break
    assert answer.locator("ul > li").count() == 3 and answer.locator("ul ol li").text_content() == "nested"
    assert answer.locator("ul > li").nth(2).text_content().startswith("\u2611 done")  # a task box, no <input>
    assert answer.locator("blockquote").text_content().strip() == "quoted"
    assert answer.locator("table th").all_text_contents() == ["Left", "Centre", "Right"]
    assert answer.locator("table td").all_text_contents() == ["a", "b", "c"]
    assert [answer.locator("table th").nth(i).get_attribute("align") for i in range(3)] == ["left", "center", "right"]
    assert answer.locator("td strong").text_content() == "b" and answer.locator("td code").text_content() == "c"
    code = answer.locator(".code-block pre code")
    assert code.text_content() == CODE and code.get_attribute("class") == "language-python"
    assert answer.locator(".code-block .code-language").text_content() == "python"
    assert answer.locator(".code-block button.copy-code").text_content() == "Copy"
    links = answer.locator("a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        "https://example.com/docs?a=1&b=2", "https://example.org/", "mailto:x@example.com",
        "https://example.com/chart.png"]
    for i in range(links.count()):
        assert links.nth(i).get_attribute("target") == "_blank"
        assert links.nth(i).get_attribute("rel") == "noopener noreferrer"
    assert links.first.get_attribute("title") == "Docs"
    assert links.nth(3).text_content() == "a chart"  # an image is a link to it, never loaded
    assert answer.locator("img").count() == 0
    assert lab.evaluate("getComputedStyle(document.querySelector('.markdown')).whiteSpace") == "normal"
    assert lab.evaluate("getComputedStyle(document.querySelector('.markdown pre')).whiteSpace") == "pre"


def test_copy_button_copies_the_code_and_says_copied(lab):
    render_whole_and_streamed(lab, DOCUMENT)
    button = lab.locator(".message").first.locator("button.copy-code")
    button.click()
    lab.wait_for_function("b => b.textContent === 'Copied'", arg=button.element_handle())
    assert lab.evaluate("navigator.clipboard.readText()") == CODE
    lab.wait_for_function("b => b.textContent === 'Copy'", arg=button.element_handle(), timeout=5_000)


def test_streaming_piece_by_piece_gives_the_dom_of_the_whole_text(lab):
    text = DOCUMENT + "\n" + "\n\n".join(PAYLOADS) + "\n\nThe *end*."
    for seed in range(3):
        result = render_whole_and_streamed(lab, text, seed)
        assert result["streamed"] == result["whole"], seed
        assert "<pre>" in result["whole"] and "<table>" in result["whole"]


def test_append_renders_once_a_frame_and_the_end_at_once(lab):
    result = lab.evaluate("""async () => {
      const calls = [];
      const render = Pychat.Markdown.render;
      Pychat.Markdown.render = (text) => { calls.push(text); return render(text); };
      const view = new Pychat.ChatView(document.getElementById("messages"));
      const answer = view.add("assistant", "");
      const before = calls.length;
      for (const piece of ["**He", "llo", "** wor", "ld"]) answer.append(piece);
      const synchronous = calls.length - before;
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
      const afterFrame = calls.slice(before);
      answer.append(" again");
      answer.setStats({generated_tokens: 5, generation_tps: 1, prompt_tokens: 3, reused_tokens: 0,
                       stop_reason: "eos"}, 0.5);
      const afterStats = calls.slice(before);
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
      Pychat.Markdown.render = render;
      return {synchronous, afterFrame, afterStats, finalCalls: calls.length - before,
              html: answer.markdown.innerHTML, text: answer.text, content: answer.content.textContent,
              contentHidden: answer.content.hidden, done: answer.root.dataset.done};
    }""")
    assert result["synchronous"] == 0  # appends only schedule
    assert result["afterFrame"] == ["**Hello** world"]  # one render for the frame, of all of it
    assert result["afterStats"] == ["**Hello** world", "**Hello** world again"]  # the end rendered at once
    assert result["finalCalls"] == 2  # the cancelled frame renders nothing more
    assert result["html"] == "<p><strong>Hello</strong> world again</p>\n"
    assert result["text"] == result["content"] == "**Hello** world again"  # the raw Markdown
    assert result["contentHidden"] and result["done"] == "true"


def test_a_half_streamed_fence_is_already_code(lab):
    result = lab.evaluate("""async () => {
      const view = new Pychat.ChatView(document.getElementById("messages"));
      const answer = view.add("assistant", "");
      const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
      const snapshot = () => {
        const code = answer.markdown.querySelector(".code-block pre code");
        return {code: code && code.textContent, language: code && code.className,
                copy: Boolean(answer.markdown.querySelector(".code-block button.copy-code")),
                paragraphs: Array.from(answer.markdown.querySelectorAll(":scope > p"), (p) => p.textContent)};
      };
      answer.append("Here:\\n\\n```python\\ndef f():\\n    return '<b>'");
      await frame();
      const open = snapshot();
      answer.append("\\n```\\n\\nAfter.");
      await frame();
      return {open, closed: snapshot()};
    }""")
    code = "def f():\n    return '<b>'"
    assert result["open"] == {"code": code, "language": "language-python", "copy": True, "paragraphs": ["Here:"]}
    assert result["closed"] == {"code": code, "language": "language-python", "copy": True,
                                "paragraphs": ["Here:", "After."]}


def test_user_messages_stay_plain_text(lab):
    text = "**not bold** <b>not a tag</b>\n    indented  twice\n\n# not a heading"
    result = lab.evaluate("""(text) => {
      const view = new Pychat.ChatView(document.getElementById("messages"));
      const mine = view.add("user", text);
      return {content: mine.content.textContent, text: mine.text, children: mine.content.children.length,
              markdown: mine.root.querySelectorAll(".markdown").length, hidden: mine.content.hidden,
              whiteSpace: getComputedStyle(mine.content).whiteSpace};
    }""", text)
    assert result == {"content": text, "text": text, "children": 0, "markdown": 0, "hidden": False,
                      "whiteSpace": "pre-wrap"}


@pytest.mark.parametrize("payload", ['<img src=x onerror="window.__pwned=1">', '<details open ontoggle="window.__pwned=1">',
                                     '<a href="javascript:window.__pwned=1">a</a>'])
def test_control_a_payload_that_gets_through_sets_the_flag(lab, payload):
    """Without the policy, HTML put on the lab page as it is runs: so the flag would catch a payload that
    got through the renderer and the sanitizer, and it is set by the time the control has run."""
    lab.evaluate("""(payload) => {
      document.getElementById("messages").innerHTML = payload;
      for (const link of document.querySelectorAll("#messages a")) link.click();
    }""", payload)
    let_anything_queued_run(lab)
    assert lab.evaluate("window.__pwned") == 1


@pytest.mark.parametrize("payload", PAYLOADS)
def test_html_and_links_from_the_model_stay_inert(lab, payload):
    before = lab.evaluate(INSPECT)
    result = render_whole_and_streamed(lab, payload)
    assert result["streamed"] == result["whole"]
    let_anything_queued_run(lab)
    assert lab.evaluate("window.__pwned") is None
    for element in lab.locator("#messages a, #messages button").all():  # clicking may not run anything either
        if element.is_visible():
            element.click()
    let_anything_queued_run(lab)
    assert lab.evaluate("window.__pwned") is None
    assert all(page.url in (lab.url, "about:blank") for page in lab.context.pages)  # no link went anywhere
    seen = lab.evaluate(INSPECT)
    assert set(seen["tags"]) <= ALLOWED_TAGS, seen["tags"]
    assert seen["handlers"] == []
    assert [url for url in seen["urls"] if not url.startswith(("https://", "http://", "mailto:"))] == []
    for key in ("bodyDisplay", "messagesVisibility", "styleSheets"):  # no style of the payload's applies
        assert seen[key] == before[key], key
    if payload.startswith("<") and not payload.startswith("<javascript:"):
        # raw HTML shows as the characters the model wrote
        assert [text.strip() for text in seen["text"]] == [payload.strip()] * 2


def test_the_sanitizer_alone_also_stops_raw_html(lab):
    """The second guard: HTML given to DOMPurify with markdown.js's rules, as if marked had let it through."""
    result = lab.evaluate("""async () => {
      const root = document.getElementById("messages");
      root.append(Pychat.Markdown.sanitize(
        '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>' +
        '<a href="javascript:window.__pwned=3">a</a><a href="&#106;avascript:window.__pwned=4">b</a>' +
        '<a href="https://example.com" onclick="window.__pwned=5" style="color:red" class="alert">c</a>' +
        '<svg><animate onbegin="window.__pwned=6"/></svg><iframe srcdoc="<script>parent.__pwned=7</script>"></iframe>' +
        '<form action="javascript:1"><button formaction="javascript:window.__pwned=8">d</button></form>' +
        '<code class="language-js">x</code><p class="alert">e</p><style>body{display:none}</style>'));
      await new Promise((resolve) => setTimeout(resolve, 300));
      return root.innerHTML;
    }""")
    assert lab.evaluate("window.__pwned") is None
    assert result == ('<a>a</a><a>b</a><a href="https://example.com/" target="_blank" rel="noopener noreferrer">c</a>'
                      'd<code class="language-js">x</code><p>e</p>')


def test_real_chat_answer_renders_markdown_under_the_policy_and_offline(browser, lab_server):
    """The tiny model's answer streamed by the Python worker on the real page (under its policy): Markdown
    rendered, the payload inert; then an offline reload renders the saved answer from the service worker's
    cache, vendor files included."""
    with new_context(browser) as context:
        page = open_ready_page(context, lab_server.url, RECORD_VIOLATIONS, temperature=0, max_tokens=2)
        answer, _ = ask(page, "Hi?")
        assert answer == CHAT_PAYLOAD * 2  # .content: the raw Markdown
        shown = page.locator(".message[data-role=assistant] .markdown")
        assert shown.locator("strong").all_text_contents() == ["Bold", "Bold"]
        assert shown.locator("code").all_text_contents() == ["code", "code"]
        assert page.locator("#messages img, #messages a[href]").count() == 0
        assert shown.locator("p").first.text_content() == (
            'Bold and code <img src=x onerror="window.__pwned=1"> x')
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate("window.__violations") == []

        page.wait_for_selector("#offline-status[data-ready=true]")
        cached = page.evaluate("""async (paths) => {
          const out = {};
          for (const path of paths) out[path] = Boolean(await caches.match(path));
          return out;
        }""", VENDOR + ["markdown.js"])
        assert cached == {path: True for path in VENDOR + ["markdown.js"]}
        context.set_offline(True)
        page.reload()
        page.wait_for_selector(".message[data-role=assistant] .markdown strong")
        assert page.evaluate("Pychat.Markdown.available()") is True
        assert page.locator(".message[data-role=assistant] .markdown strong").all_text_contents() == ["Bold", "Bold"]
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate("window.__violations") == []
