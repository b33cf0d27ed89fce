"""The page's layout and colours in Chromium: a phone-sized viewport (390x844) where the chat fills the screen,
the panels fold away below it and the Settings dialog fits the screen, and the colour scheme following the
system's (prefers-color-scheme).

The phone page is one browser context walked through in order (loaded, then a question answered); the colour
checks open the page in a context of each scheme and read the computed colours, without waiting for the model.
"""
from __future__ import annotations

import re

import pytest
from e2e_helpers import GREEDY, PAGE_TIMEOUT_MS, REPO, ask, contrast, luminance, set_settings, wait_ready
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
MIN_TAP_HEIGHT = 40

# Where the page's parts are, in CSS pixels of the viewport, and what scrolls.
GEOMETRY = """() => {
  const rect = (e) => { const r = e.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height}; };
  const box = (selector) => { const e = document.querySelector(selector); return e ? rect(e) : null; };
  const buttons = {};
  for (const button of document.querySelectorAll("#composer button"))
    if (button.offsetParent) buttons[button.id || button.textContent] = rect(button);
  return {
    viewport: {width: innerWidth, height: innerHeight},
    scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
    scrollHeight: document.documentElement.scrollHeight,
    chat: box("#chat"), messages: box("#messages"), composer: box("#composer"), input: box("#input"),
    aside: box("main > aside"), conversations: box("#conversations"), buttons,
    details: [...document.querySelectorAll("main > aside details, #conversations details")].map((d) => ({
      summary: d.querySelector("summary").textContent, open: d.open,
      summaryHeight: d.querySelector("summary").getBoundingClientRect().height})),
  };
}"""

COLOURS = """() => {
  const style = (selector, property) => getComputedStyle(document.querySelector(selector))[property];
  const rgb = (colour) => {  // as getComputedStyle writes it
    const probe = document.createElement("span");
    probe.style.color = colour;
    document.body.append(probe);
    const value = getComputedStyle(probe).color;
    probe.remove();
    return value;
  };
  const chart = new Pychat.LossChart(document.getElementById("train-chart")).colors;
  return {bodyBackground: style("body", "backgroundColor"), bodyText: style("body", "color"),
          chatBackground: style("#chat", "backgroundColor"), inputBackground: style("#input", "backgroundColor"),
          inputText: style("#input", "color"), mutedText: style(".tagline", "color"),
          dialogBackground: style("#settings-dialog", "backgroundColor"),
          workersBackground: style("#workers", "backgroundColor"), workersText: style("#workers", "color"),
          scheme: style(":root", "colorScheme"), chartBackground: style("#train-chart", "backgroundColor"),
          chartAxis: rgb(chart.axis), chartTrain: rgb(chart.train), chartValidation: rgb(chart.validation)};
}"""


def inside(box, viewport) -> bool:
    return box is not None and box["top"] >= 0 and box["left"] >= 0 and \
        box["bottom"] <= viewport["height"] and box["right"] <= viewport["width"]


def open_page(browser, url, **options):
    context = browser.new_context(**options)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    return context, page


@pytest.fixture(scope="module")
def phone_page(browser, server):
    context, page = open_page(browser, server.url, viewport=PHONE, color_scheme="light")
    wait_ready(page)
    yield page
    context.close()


def check_fits_the_phone(geometry):
    viewport = geometry["viewport"]
    assert viewport == PHONE
    assert geometry["scrollWidth"] <= viewport["width"] and geometry["bodyScrollWidth"] <= viewport["width"], geometry
    assert inside(geometry["composer"], viewport), geometry
    assert geometry["scrollHeight"] <= viewport["height"], "the page itself does not scroll, main does: %s" % geometry
    assert "send" in geometry["buttons"] and "stop" in geometry["buttons"], geometry["buttons"]
    for name, button in geometry["buttons"].items():
        assert inside(button, viewport), (name, geometry)
        assert button["height"] >= MIN_TAP_HEIGHT, (name, button)


def test_phone_chat_fills_the_screen_and_settings_fold_below(phone_page):
    geometry = phone_page.evaluate(GEOMETRY)
    check_fits_the_phone(geometry)
    viewport = geometry["viewport"]
    chat, aside = geometry["chat"], geometry["aside"]
    assert chat["bottom"] >= viewport["height"] - 40 and chat["height"] >= 0.6 * viewport["height"], geometry
    assert geometry["input"]["width"] >= 0.8 * viewport["width"] and geometry["input"]["height"] >= MIN_TAP_HEIGHT
    assert aside["top"] >= chat["bottom"], "the settings come after the chat: %s" % geometry
    if geometry["conversations"]:
        assert geometry["conversations"]["top"] >= chat["bottom"], "so does the list: %s" % geometry
    assert geometry["details"] and not any(d["open"] for d in geometry["details"]), geometry["details"]
    assert all(d["summaryHeight"] >= MIN_TAP_HEIGHT for d in geometry["details"]), geometry["details"]


def test_phone_answers_and_keeps_the_composer_on_screen(phone_page):
    set_settings(phone_page, **GREEDY)  # in the Settings dialog, opened from the header
    answer, stats = ask(phone_page, GOLDEN_QUESTION)
    assert answer.strip() == GOLDEN_ANSWER and "tokens" in stats
    phone_page.evaluate("() => document.querySelector('main').scrollTo(0, 0)")
    geometry = phone_page.evaluate(GEOMETRY)
    check_fits_the_phone(geometry)
    last = phone_page.locator(".message[data-role=assistant]").last.bounding_box()
    messages = geometry["messages"]
    assert messages["top"] <= last["y"] < messages["bottom"], (last, messages)  # the answer is on screen
    # New chat is at hand by the composer (the conversation list is folded below the chat)
    new_chat = phone_page.evaluate("() => { const r = document.getElementById('composer-new-chat')"
                                   ".getBoundingClientRect(); return {top: r.top, bottom: r.bottom, left: r.left, "
                                   "right: r.right, height: r.height}; }")
    assert inside(new_chat, PHONE) and new_chat["height"] >= 40, new_chat
    phone_page.click("#composer-new-chat")
    phone_page.wait_for_selector("#messages .message", state="detached")


# The Settings dialog and what opens it, in CSS pixels of the viewport.
DIALOG = """() => {
  const rect = (e) => { const r = e.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height}; };
  const dialog = document.getElementById("settings-dialog");
  return {open: dialog.open, dialog: rect(dialog), scrollWidth: dialog.scrollWidth, clientWidth: dialog.clientWidth,
          close: rect(dialog.querySelector("[data-close]")), opener: rect(document.getElementById("settings-open")),
          picker: rect(document.getElementById("model-picker")),
          model: ["context-length", "workers", "model-settings-apply"].map((id) => rect(document.getElementById(id)))};
}"""


def test_phone_settings_dialog_fits_the_screen(phone_page):
    before = phone_page.evaluate(DIALOG)
    for name in ("opener", "picker"):  # the header's Settings button and model picker, at hand
        assert inside(before[name], PHONE) and before[name]["height"] >= MIN_TAP_HEIGHT, (name, before)
    phone_page.get_by_role("button", name="Settings", exact=True).click()
    phone_page.wait_for_selector("#settings-dialog[open]")
    shown = phone_page.evaluate(DIALOG)
    assert inside(shown["dialog"], PHONE) and shown["scrollWidth"] <= shown["clientWidth"], shown
    assert inside(shown["close"], PHONE) and shown["close"]["height"] >= MIN_TAP_HEIGHT, shown
    for control in shown["model"]:  # the Model section: across the screen (the dialog scrolls down to it), for fingers
        assert 0 <= control["left"] and control["right"] <= PHONE["width"], shown["model"]
        assert control["height"] >= MIN_TAP_HEIGHT, shown["model"]
    phone_page.keyboard.press("Escape")
    phone_page.wait_for_selector("#settings-dialog", state="hidden")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colours_follow_the_system_scheme(browser, server, scheme):
    context, page = open_page(browser, server.url, viewport=DESKTOP, color_scheme=scheme)
    try:
        page.wait_for_selector("#composer")
        colours = page.evaluate(COLOURS)
        layout = page.evaluate(GEOMETRY)
        assert page.is_hidden("#composer-new-chat")  # the desktop has the list's New chat in view
    finally:
        context.close()
    background, text = luminance(colours["bodyBackground"]), luminance(colours["bodyText"])
    if scheme == "dark":
        assert background < 0.05 and text > 0.6, colours
        assert luminance(colours["chatBackground"]) < 0.05 and luminance(colours["inputBackground"]) < 0.05, colours
        assert luminance(colours["chartBackground"]) < 0.05, colours  # the loss chart is dark too
        assert luminance(colours["dialogBackground"]) < 0.05 and luminance(colours["workersBackground"]) < 0.05, colours
    else:
        assert background > 0.8 and text < 0.05, colours
        assert luminance(colours["chatBackground"]) > 0.8 and luminance(colours["inputBackground"]) > 0.8, colours
    assert contrast(colours["bodyBackground"], colours["bodyText"]) >= 7, colours
    assert contrast(colours["chatBackground"], colours["mutedText"]) >= 4.5, colours
    assert contrast(colours["inputBackground"], colours["inputText"]) >= 7, colours
    assert contrast(colours["workersBackground"], colours["workersText"]) >= 7, colours  # the dialog's Model section
    assert colours["scheme"] == "light dark", colours
    for line in ("chartAxis", "chartTrain", "chartValidation"):  # the loss chart draws in the scheme's colours
        assert contrast(colours["chartBackground"], colours[line]) >= 3, (line, colours)
    # the desktop layout: chat on the left, settings on the right, side by side
    assert layout["aside"]["left"] >= layout["chat"]["right"] and layout["aside"]["top"] < layout["chat"]["bottom"]
    assert all(d["open"] for d in layout["details"] if d["summary"] != "Train a model"), layout["details"]


def test_every_colour_is_a_custom_property():
    """Colours are written once, in the custom properties of styles.css's colour section (light and dark),
    and used through var(): a colour written into a rule would stay the same in the other scheme."""
    css = re.sub(r"/\*.*?\*/", "", (REPO / "web" / "styles.css").read_text(), flags=re.S)
    literal = re.compile(r"#[0-9a-fA-F]{3,8}\b|\b(?:rgba?|hsla?|hwb|lab|lch|oklab|oklch)\(|"
                         r":\s*(?:white|black|red|green|blue|gray|grey)\b")
    offending = [declaration.strip() for declaration in re.split(r"[;{}]", css)
                 if literal.search(declaration) and not declaration.strip().startswith("--")]
    assert not offending, offending
