"""The chat product in the real page in Chromium: the page owns the conversation and Python answers what it
is sent (checked by asking Python what its last answer used), regenerate and edit-and-resend give the native
engine's greedy answers, conversations survive reloads, switch, rename, delete, export and import, settings
are checked by the engine's own code (the API's pychat_wasm.api.options.api_settings: a turn is a
chat.completions request), Escape stops, stop strings cut the answer. References:
pychat_wasm.chat.session.ChatSession natively, the tiny model's ChatML token counts."""
from __future__ import annotations

import json

import pytest
from e2e_helpers import (ANSWER_TIMEOUT_MS, GREEDY, alert_texts, ask, chatml_tokens, page_fixture, python_messages,
                         saved_messages, set_settings, settings_dialog, shown_messages, wait_ready)
from texts import GOLDEN_QUESTION
from tiny_models import write_tiny_gguf

from pychat_wasm.api.options import api_settings
from pychat_wasm.errors import InvalidRequestError
from pychat_wasm.chat.sampler import SETTING_RULES, SamplingSettings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EDITED = "What is the capital of Italy? Answer in one sentence."


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def native(smollm2_path):
    """The native engine's greedy answer to a conversation (a list of messages ending with the user's)."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.chat.sampler import SamplingSettings
    from pychat_wasm.chat.session import ChatSession

    session = ChatSession.from_gguf(GGUFFile.open(str(smollm2_path)))
    return lambda messages: list(session.reply(messages, SamplingSettings(**GREEDY)))[-1].text


page = page_fixture("server", **GREEDY)


def new_chat(page):
    page.click("#new-chat")
    page.wait_for_selector("#messages .message", state="detached")


def wait_answered(page, count):
    """Until the page shows `count` finished answers and takes the next message."""
    page.wait_for_function("n => document.querySelectorAll('.message[data-role=assistant][data-done]').length === n",
                           arg=count, timeout=ANSWER_TIMEOUT_MS)
    wait_ready(page)


def titles(page):
    return page.locator("#conversation-list li .title").all_text_contents()


def test_regenerate_and_edit_and_resend_give_the_native_engines_greedy_answers(page, native):
    new_chat(page)
    answer, _ = ask(page, GOLDEN_QUESTION)
    assert answer == native([user(GOLDEN_QUESTION)])
    page.get_by_role("button", name="Regenerate").click()
    wait_answered(page, 1)
    stats = page.text_content(".message[data-role=assistant] .stats")
    assert "prompt 1 new + 41 cached tokens" in stats  # the prompt was still in the KV cache
    assert shown_messages(page) == [user(GOLDEN_QUESTION), assistant(answer)] == saved_messages(page)
    page.locator(".message[data-role=user]").get_by_role("button", name="Edit").click()
    page.fill(".message[data-role=user] .editor textarea", EDITED)
    page.press(".message[data-role=user] .editor textarea", "Enter")
    wait_answered(page, 1)
    edited = [user(EDITED), assistant(native([user(EDITED)]))]
    assert shown_messages(page) == edited == saved_messages(page) == python_messages(page)
    assert "Rome" in edited[1]["content"]


def test_a_setting_out_of_range_is_refused_with_the_engines_message_and_nothing_is_lost(page):
    before = saved_messages(page)
    with pytest.raises(InvalidRequestError) as refused:  # the page's turn is a chat.completions request
        api_settings({"max_tokens": 0}, context_length=4096)
    set_settings(page, max_tokens=0)
    page.fill("#input", "Hello there")
    page.press("#input", "Enter")
    page.wait_for_selector(".alert[data-kind=error]")
    assert alert_texts(page, "error") == [str(refused.value)]
    wait_ready(page)
    assert saved_messages(page) == before == shown_messages(page)
    assert page.input_value("#input") == "Hello there"  # back where it was typed
    page.evaluate("document.querySelectorAll('.alert').forEach((a) => a.remove())")
    page.fill("#input", "")
    set_settings(page, **GREEDY)


def test_the_sampling_form_holds_the_engines_settings_with_their_bounds_and_defaults(page):
    """Every setting of the engine is in the form, bounded as its SETTING_RULES entry says, and Defaults brings
    back SamplingSettings' values: the page keeps no copy of either (both come through manifest.json)."""
    form = page.eval_on_selector_all("#settings input[name]", "inputs => inputs.map((i) => [i.name, i.min, i.max])")
    assert sorted(name for name, _, _ in form) == sorted(SETTING_RULES)
    for name, low, high in form:
        rule = SETTING_RULES[name]
        assert float(low) == rule.low and (high == "" if rule.high == float("inf") else float(high) == float(rule.high)), name
    with settings_dialog(page):
        page.click("#settings-reset")
    values = dict(page.eval_on_selector_all("#settings input[name]", "inputs => inputs.map((i) => [i.name, i.value])"))
    for name, default in vars(SamplingSettings()).items():
        assert (values[name] == "") if default is None else float(values[name]) == default, name
    set_settings(page, **GREEDY)


def test_stop_strings_cut_the_answer_and_escape_stops_it(page):
    new_chat(page)
    with settings_dialog(page):
        page.fill("#stop-strings", "France")
    assert ask(page, GOLDEN_QUESTION)[0] == "The capital of "
    with settings_dialog(page):
        page.fill("#stop-strings", "")
    set_settings(page, max_tokens=200)
    page.fill("#input", "Write a long story about a dragon who learns to cook.")
    page.press("#input", "Enter")
    page.wait_for_function("() => (document.querySelectorAll('.message[data-role=assistant] .content')[1] || {})"
                           ".textContent", timeout=ANSWER_TIMEOUT_MS)
    page.keyboard.press("Escape")
    wait_answered(page, 2)
    stats = page.locator(".message[data-role=assistant] .stats").nth(1).text_content()
    assert stats.endswith("stopped") and int(stats.split(" tokens")[0]) < 20, stats
    set_settings(page, **GREEDY)


def test_conversations_survive_reloads_switch_rename_delete_export_and_import(page, tmp_path):
    new_chat(page)
    colour = ask(page, "Name a colour.")[0]
    new_chat(page)
    fruit = ask(page, "Name a fruit.")[0]
    assert titles(page)[:2] == ["Name a fruit.", "Name a colour."]  # newest first, titled by the first message
    item = page.locator("#conversation-list li", has_text="Name a colour.")
    item.get_by_role("button", name="Rename").click()
    page.fill("#conversation-list li input", "Colours")
    page.press("#conversation-list li input", "Enter")
    page.wait_for_selector("#conversation-list li .title:text-is('Colours')")

    page.reload()
    wait_ready(page)
    assert "Colours" in titles(page) and "Name a fruit." in titles(page)
    assert shown_messages(page) == [user("Name a fruit."), assistant(fruit)]  # the one in use before
    page.locator("#conversation-list li .title", has_text="Colours").click()
    page.wait_for_selector("#conversation-list li[aria-current=true] .title:text-is('Colours')")
    assert shown_messages(page) == [user("Name a colour."), assistant(colour)]
    set_settings(page, **GREEDY)
    ask(page, "Another one?")
    assert python_messages(page) == saved_messages(page) == shown_messages(page)  # this conversation was sent
    assert len(shown_messages(page)) == 4

    with page.expect_download() as download:
        page.click("#conversation-export")
    exported = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert exported["format"] == "pychat-conversations" and len(exported["conversations"]) == len(titles(page))
    count = len(titles(page))
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#conversation-list li", has_text="Colours").get_by_role("button", name="Delete").click()
    page.wait_for_function("n => document.querySelectorAll('#conversation-list li').length === n", arg=count - 1)
    assert "Colours" not in titles(page) and shown_messages(page) != []  # the newest other one is shown

    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported), encoding="utf-8")
    for _ in range(2):  # the deleted one comes back; the others, and then all, are already here
        page.evaluate("document.querySelectorAll('.alert').forEach((a) => a.remove())")
        page.set_input_files("#conversation-import", str(path))
        page.wait_for_selector(".alert[data-kind=notice]")
    assert alert_texts(page, "notice") == ["Imported 0 conversations from export.json (%d already here)." % count]
    assert len(titles(page)) == count
    page.locator("#conversation-list li .title", has_text="Colours").click()
    page.wait_for_selector("#conversation-list li[aria-current=true] .title:text-is('Colours')")
    assert len(shown_messages(page)) == 4

    bad = {"not-json.json": "{oops",
           "other.json": json.dumps({"hello": "world"}),
           "robot.json": json.dumps({"format": "pychat-conversations",
                                     "conversations": [{"messages": [{"role": "robot", "content": "x"}]}]})}
    messages = {"not-json.json": "Could not import not-json.json: The file is not JSON",
                "other.json": "Could not import other.json: The file is not a pychat-wasm conversation export",
                "robot.json": "Could not import robot.json: Conversation 1: message 1 has no role user or assistant"}
    for name, text in bad.items():
        page.evaluate("document.querySelectorAll('.alert').forEach((a) => a.remove())")
        (tmp_path / name).write_text(text, encoding="utf-8")
        page.set_input_files("#conversation-import", str(tmp_path / name))
        page.wait_for_selector(".alert[data-kind=error]")
        assert alert_texts(page, "error")[0].startswith(messages[name])
        assert len(titles(page)) == count  # nothing imported


def start_long_answer(page, question):
    """Send `question` with room for a 200-token answer; returns once its first piece is on the page."""
    set_settings(page, max_tokens=200)
    answers = page.locator(".message[data-role=assistant]").count()
    page.fill("#input", question)
    page.press("#input", "Enter")
    page.wait_for_function("n => (document.querySelectorAll('.message[data-role=assistant] .content')[n] || {})"
                           ".textContent", arg=answers, timeout=ANSWER_TIMEOUT_MS)


def test_renaming_or_deleting_a_conversation_while_its_answer_streams_sticks(page):
    new_chat(page)
    ask(page, "Name a lighthouse.")  # the conversation is in the list once its first answer is saved
    start_long_answer(page, "Write a long story about its keeper.")
    page.locator("#conversation-list li[aria-current=true]").get_by_role("button", name="Rename").click()
    page.fill("#conversation-list li input", "Lighthouse")
    page.press("#conversation-list li input", "Enter")
    page.keyboard.press("Escape")
    wait_ready(page)
    page.wait_for_selector("#conversation-list li[aria-current=true] .title:text-is('Lighthouse')")
    assert page.evaluate("async () => (await pychat.conversations.get(pychat.conversation.id)).title") == "Lighthouse"

    start_long_answer(page, "And another one, about a baker.")
    count = len(titles(page))
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#conversation-list li", has_text="Lighthouse").get_by_role("button", name="Delete").click()
    page.wait_for_function("n => document.querySelectorAll('#conversation-list li').length === n", arg=count - 1)
    wait_ready(page)
    page.reload()
    wait_ready(page)
    assert "Lighthouse" not in titles(page) and len(titles(page)) == count - 1  # the stopped answer did not bring it back
    set_settings(page, **GREEDY)


def test_a_trim_and_a_failed_turn_leave_page_and_python_agreeing(page, tmp_path):
    """A 96-token model answering "zz" 3 times: after the trim Python used the newest messages of the page's
    conversation and the page marks the others; a message too long for the context fails and changes
    neither side."""
    path = write_tiny_gguf(tmp_path / "small.gguf", "zz", context_length=96)
    page.set_input_files("#model-file", files=[{"name": "small.gguf", "mimeType": "application/octet-stream",
                                                "buffer": path.read_bytes()}])
    page.wait_for_selector("#status[data-phase=ready]:has-text('small.gguf')")
    new_chat(page)
    set_settings(page, max_tokens=3)
    sent = []
    for i in range(3):
        sent.append(user("m%d 0123456789" % i))
        sent.append(assistant(ask(page, sent[-1]["content"])[0]))
    assert chatml_tokens(sent[:-1]) + 3 > 96 >= chatml_tokens(sent[2:-1]) + 3  # the 3rd prompt drops one turn
    assert saved_messages(page) == sent == shown_messages(page)
    assert python_messages(page) == sent[2:]
    dropped = page.locator("#messages .message").evaluate_all("ms => ms.map((m) => m.dataset.dropped === 'true')")
    assert dropped == [True, True, False, False, False, False]

    page.fill("#input", "x" * 200)  # its prompt alone is longer than the context
    page.press("#input", "Enter")
    page.wait_for_selector(".alert[data-kind=error]:has-text('too long')")
    wait_ready(page)
    assert saved_messages(page) == sent == shown_messages(page)
    assert python_messages(page) == sent[2:]
    assert page.input_value("#input") == "x" * 200
    page.fill("#input", "")
    sent += [user("m3"), assistant(ask(page, "m3")[0])]
    assert python_messages(page) == sent[-len(python_messages(page)):] and saved_messages(page) == sent
    marks = page.locator("#messages .message").evaluate_all("ms => ms.map((m) => m.dataset.dropped === 'true')")
    assert marks == [True] * (len(sent) - len(python_messages(page))) + [False] * len(python_messages(page))
    page.reload()
    wait_ready(page)
    assert page.locator("#messages .message").evaluate_all("ms => ms.map((m) => m.dataset.dropped === 'true')") == marks
    page.locator("#models li", has_text="small.gguf").get_by_role("button", name="Remove").click()
