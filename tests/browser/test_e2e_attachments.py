"""Attachments in the page (web/attachments.js, web/pdf_text.js) with the real SmolLM2, in Chromium: a text file
picked with the Attach button and a PDF dropped on the composer (and files pasted), each answered from a fact only the file holds;
their chips' token counts and the context meter against transformers' tokenizer of the same model; a file too
big to read and one too long for the context refused before anything is sent; attachments kept through a
reload; chips that wrap on a phone-sized screen.

The references are independent of the page: the answers are transformers' greedy answers to the prompt as
docs/chat.md documents it (the file's block before the question), the token counts are the HF tokenizer's, and
the PDF's text is the sentence the test wrote into it (tests/support/pdf_files.py).
"""
from __future__ import annotations

import re

import pytest
from e2e_helpers import ANSWER_TIMEOUT_MS, GREEDY, ask, drop_files, page_fixture, wait_ready
from pdf_files import minimal_pdf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETTINGS = dict(GREEDY, max_tokens=24)
NOTE = ("notes.txt", "The code word for the project is Zanzibar.\n", "What is the code word for the project?",
        "Zanzibar")
REPORT = ("report.pdf", "The winner of the 2031 Lunar Cup was Oskar Brandt.", "Who won the 2031 Lunar Cup?",
          "Oskar Brandt")
PHONE = {"width": 390, "height": 844}

page = page_fixture("server", **SETTINGS)


def block(name: str, text: str) -> str:
    """The attachment as the model reads it (docs/chat.md, "Attachments"), written out independently of the page."""
    return "File: %s\n```\n%s\n```" % (name, text.rstrip("\n"))


@pytest.fixture(scope="module")
def reference(hf_smollm2_tokenizer, hf_smollm2_model):
    """transformers' greedy answer to a conversation, and the token count of its prompt (without an answer's
    opening, as the context meter counts a conversation before an answer)."""
    import torch

    tokenizer = hf_smollm2_tokenizer

    def ids(messages, generation_prompt):
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, return_tensors="pt")
        return encoded if isinstance(encoded, torch.Tensor) else encoded["input_ids"]

    def answer(messages):
        prompt = ids(messages, True)
        with torch.no_grad():
            out = hf_smollm2_model.generate(prompt, max_new_tokens=SETTINGS["max_tokens"], do_sample=False)
        return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)

    return {"answer": answer, "prompt_tokens": lambda messages: ids(messages, False).shape[1],
            "tokens": lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])}


def chips(page, where: str = "#attachments"):
    """[(name, token text)] of the chips in `where`."""
    return [(chip.locator(".chip-name").text_content(), chip.locator(".chip-tokens").text_content())
            for chip in page.locator(where + " .chip").all()]


def wait_counted(page, count: int) -> None:
    page.wait_for_function(
        "n => [...document.querySelectorAll('#attachments .chip-tokens')].filter((t) => /^\\d+ tokens$/.test("
        "t.textContent)).length === n", arg=count, timeout=ANSWER_TIMEOUT_MS)


def wait_meter(page, used: int) -> None:
    page.wait_for_function("used => document.getElementById('context-budget').textContent.startsWith("
                           "`Context: ${used} / `)", arg=used, timeout=ANSWER_TIMEOUT_MS)


def saved_user_message(page):
    return page.evaluate("""async () => (await pychat.conversations.get(pychat.conversation.id))
                                          .messages.find((m) => m.role === "user")""")


def new_chat(page):
    page.click("#new-chat")
    page.wait_for_selector("#messages .message", state="detached")


def test_a_text_file_picked_with_attach_is_counted_and_answered_from(page, reference):
    name, text, question, fact = NOTE
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach", exact=True).click()
    chooser.value.set_files({"name": name, "mimeType": "text/plain", "buffer": text.encode()})
    wait_counted(page, 1)
    tokens = reference["tokens"](block(name, text))
    assert chips(page) == [(name, "%d tokens" % tokens)]
    # the meter counts the attachment before anything is sent: the conversation as it would be with it
    wait_meter(page, reference["prompt_tokens"]([{"role": "user", "content": block(name, text)}]))

    answer, _ = ask(page, question)
    prompt = [{"role": "user", "content": block(name, text) + "\n\n" + question}]
    assert answer == reference["answer"](prompt) and fact in answer
    assert chips(page, ".message[data-role=user]") == [(name, "%d tokens" % tokens)]
    assert chips(page) == [] and page.locator("#attachments").is_hidden()  # the tray is empty again
    assert saved_user_message(page) == {"role": "user", "content": question,
                                        "attachments": [{"name": name, "type": "text/plain", "text": text,
                                                         "tokens": tokens}]}


def test_a_pdf_dropped_on_the_composer_is_read_by_pdfjs_and_answered_from(page, reference):
    new_chat(page)
    name, text, question, fact = REPORT
    drop_files(page, "#composer", {name: minimal_pdf([text])})
    wait_counted(page, 1)
    assert chips(page) == [(name, "%d tokens" % reference["tokens"](block(name, text)))]
    answer, _ = ask(page, question)
    assert saved_user_message(page)["attachments"][0]["text"] == text  # pdf.js found the sentence written
    assert answer == reference["answer"]([{"role": "user", "content": block(name, text) + "\n\n" + question}])
    assert fact in answer


def test_attachments_too_big_to_read_or_to_fit_are_refused_before_sending(page, reference):
    messages_before = page.locator(".message").count()
    page.set_input_files("#attach-file", files=[{"name": "huge.txt", "mimeType": "text/plain",
                                                 "buffer": b"x" * (1024 * 1024 + 1)}])
    page.wait_for_selector("#attachment-status:not([hidden])")
    assert page.text_content("#attachment-status") == \
        "huge.txt is 1.0 MB; attachments are limited to 1.0 MB (a text file)."
    assert chips(page) == []

    context = int(re.search(r" / (\d+) tokens", page.text_content("#context-budget")).group(1))
    long_text = " apple" * (context + 100)  # one token a word: more than the whole context
    page.set_input_files("#attach-file", files=[{"name": "long.txt", "mimeType": "text/plain",
                                                 "buffer": long_text.encode()}])
    wait_counted(page, 1)
    page.wait_for_selector("#context-budget[data-warning=true]")  # the meter counts it, and warns
    page.fill("#input", "Summarize it.")
    page.press("#input", "Enter")
    page.wait_for_function("() => document.getElementById('attachment-status').textContent.startsWith("
                           "'long.txt: does not fit')", timeout=ANSWER_TIMEOUT_MS)
    assert page.locator(".message").count() == messages_before  # nothing was sent
    assert page.input_value("#input") == "Summarize it." and [n for n, _ in chips(page)] == ["long.txt"]
    page.get_by_role("button", name="Remove long.txt").click()
    assert chips(page) == [] and page.locator("#attachment-status").is_hidden()
    page.fill("#input", "")


def test_attachments_survive_a_reload_and_the_prompt_stays_the_same(page, reference):
    name, text, question, _ = REPORT
    messages = page.evaluate("async () => (await pychat.conversations.get(pychat.conversation.id)).messages")
    page.reload()
    wait_ready(page)
    assert chips(page, ".message[data-role=user]") == [(name, "%d tokens" % reference["tokens"](block(name, text)))]
    # the meter after the reload counts the conversation as first sent: the file's block, the question, the answer
    wait_meter(page, reference["prompt_tokens"]([{"role": "user", "content": block(name, text) + "\n\n" + question},
                                                 {"role": "assistant", "content": messages[1]["content"]}]))


PASTE_FILE = """name => {
  const transfer = new DataTransfer();
  transfer.items.add(new File(["Fact 2."], name, {type: "text/plain"}));
  document.getElementById("input").dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true,
                                                                             cancelable: true}));
}"""


def test_chips_wrap_on_a_phone_sized_screen(page):
    page.set_viewport_size(PHONE)
    names = ["quarterly-report-for-the-board-%d.txt" % i for i in range(3)]
    page.set_input_files("#attach-file", files=[{"name": n, "mimeType": "text/plain", "buffer": b"Fact %d." % i}
                                                for i, n in enumerate(names[:2])])
    page.evaluate(PASTE_FILE, names[2])  # a file pasted into the input joins them
    wait_counted(page, 3)
    assert [name for name, _ in chips(page)] == names and page.input_value("#input") == ""
    layout = page.evaluate("""() => ({width: innerWidth, scrollWidth: document.documentElement.scrollWidth,
        chips: [...document.querySelectorAll('#attachments .chip')].map((c) => c.getBoundingClientRect().toJSON()),
        input: document.getElementById('input').getBoundingClientRect().toJSON()})""")
    assert layout["scrollWidth"] <= layout["width"] == PHONE["width"]  # nothing sticks out sideways
    assert all(0 <= c["left"] and c["right"] <= layout["width"] for c in layout["chips"])
    assert len({round(c["top"]) for c in layout["chips"]}) > 1  # on more than one row
    assert all(c["bottom"] <= layout["input"]["top"] for c in layout["chips"])  # above the input
    for name in names:
        page.get_by_role("button", name="Remove " + name).click()
    assert chips(page) == []
