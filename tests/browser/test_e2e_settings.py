"""The Settings dialog and the header in Chromium: the header's Settings button opens a modal dialog that Escape
closes (without stopping the answer being written), which lists the keyboard shortcuts the page has; its Model
section's context length and workers per token take effect on Apply (the engine's context length and the
pool's size, as the page reports them; the model's own context read from the file by gguf-py, at most the
engine's default cap) and are kept over a reload; the response format (Text / JSON / JSON Schema) and its schema
persist over a reload and are OpenAI's shapes (the openai package's own types, validated by pydantic); an invalid
schema or tools text shows its message as it is typed; the header's model picker lists the stored models and
switches between them; an answer's tool calls are shown as blocks (name, arguments indented as Python's
json.dumps indents them).
"""
from __future__ import annotations

import json

import jsonschema
import pytest
from e2e_helpers import (ANSWER_TIMEOUT_MS, GREEDY, POOL_SIZE, REPO, alert_texts, apply_model_settings, ask,
                         page_fixture, ready_status, set_settings, settings_dialog, wait_ready)
from gguf import GGUFReader
from openai.types.chat import ChatCompletionToolParam
from openai.types.shared_params import ResponseFormatJSONObject, ResponseFormatJSONSchema
from pydantic import TypeAdapter
from pychat_wasm.model.config import DEFAULT_CONTEXT_CAP
from texts import GOLDEN_ANSWER, GOLDEN_QUESTION
from tiny_models import write_tiny_gguf

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                              "parameters": {"type": "object",
                                                             "properties": {"city": {"type": "string"}}}}}]
DEFAULT_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"

page = page_fixture("server", **GREEDY)

# form.responseFormat() and form.tools() as the page gives them, or the message of what they throw.
FORM_VALUES = """() => {
  const call = (method) => { try { return {value: pychat.chat.form[method]()}; }
                             catch (error) { return {error: error.message, name: error.name}; } };
  return {format: call("responseFormat"), tools: call("tools")};
}"""


def dialog_open(page) -> bool:
    return page.evaluate("document.getElementById('settings-dialog').open")


def choose_format(page, label: str) -> None:
    page.locator("#response-format").get_by_label(label, exact=True).check()


def test_the_settings_button_opens_the_dialog_and_escape_closes_it(page):
    assert not dialog_open(page) and page.is_hidden("#system-prompt")
    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    dialog.wait_for()
    for field in ("#system-prompt", "#temperature", "#stop-strings", "#settings-reset", "#context-length", "#workers",
                  "#model-settings-apply"):
        assert page.is_visible(field), field
    assert page.locator("main #context-length, main #workers").count() == 0  # no longer in the Models panel
    shortcuts = page.text_content("#shortcuts")
    for key in ("Enter", "Shift+Enter", "Escape"):  # chat.js's: send, a new line, stop
        assert key in shortcuts, shortcuts
    page.keyboard.press("Escape")
    page.wait_for_selector("#settings-dialog", state="hidden")
    assert not dialog_open(page)


def test_escape_in_the_dialog_closes_it_and_leaves_the_answer_running(page):
    set_settings(page, max_tokens=24)
    page.fill("#input", "Write a long story about a dragon.")
    page.press("#input", "Enter")
    page.wait_for_function("() => pychat.generating")
    page.get_by_role("button", name="Settings", exact=True).click()
    page.wait_for_selector("#settings-dialog[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#settings-dialog", state="hidden")
    page.wait_for_function("() => !pychat.generating", timeout=ANSWER_TIMEOUT_MS)
    stats = page.locator(".message[data-role=assistant] .stats").last.text_content()
    assert stats.startswith("24 tokens") and "stopped" not in stats, stats
    set_settings(page, **GREEDY)


# The engine as the page reports it: the context length the workers loaded the model with, and how many there are.
ENGINE = "() => ({context: pychat.model.info.context_length, workers: pychat.python.workers})"
APPLIED = "Applied: %s is reloaded with them." % DEFAULT_MODEL


def wait_status(page, text: str) -> None:
    page.wait_for_function("s => document.getElementById('status').textContent === s", arg=text,
                           timeout=ANSWER_TIMEOUT_MS)


def test_the_model_settings_take_effect_on_apply_and_are_kept_over_a_reload(page):
    field = GGUFReader(REPO / "models" / DEFAULT_MODEL).fields["llama.context_length"]
    trained = int(field.parts[field.data[0]][0])  # as gguf-py reads the file: 8192
    own_context = min(trained, DEFAULT_CONTEXT_CAP)  # an empty field: the engine's default for it
    assert page.evaluate(ENGINE) == {"context": own_context, "workers": POOL_SIZE}
    with settings_dialog(page):
        assert (page.input_value("#context-length"), page.input_value("#workers")) == ("", "auto")
        assert page.is_disabled("#model-settings-apply")
        page.fill("#context-length", "512")
        assert page.is_enabled("#model-settings-apply")
        assert page.text_content("#model-settings-status") == \
            "Not in effect yet: Apply reloads the model in use with them."
    with settings_dialog(page):  # closed without Apply: the fields are what is in effect
        assert page.input_value("#context-length") == "" and page.is_disabled("#model-settings-apply")
    assert page.evaluate("localStorage.getItem('pychat.context')") is None
    assert page.evaluate(ENGINE) == {"context": own_context, "workers": POOL_SIZE}

    assert apply_model_settings(page, context_length=512, workers="1") == APPLIED
    wait_status(page, ready_status(DEFAULT_MODEL, 1))  # a fresh Python of one worker, the model loaded again
    assert page.evaluate(ENGINE) == {"context": 512, "workers": 1}
    try:
        page.reload()
        wait_ready(page)
        assert page.text_content("#status") == ready_status(DEFAULT_MODEL, 1)
        assert page.evaluate(ENGINE) == {"context": 512, "workers": 1}
        with settings_dialog(page):
            assert (page.input_value("#context-length"), page.input_value("#workers")) == ("512", "1")
        page.click("#new-chat")
        assert ask(page, GOLDEN_QUESTION)[0].strip() == GOLDEN_ANSWER  # one worker, 512 positions: the same answer
    finally:  # the model's own context and the default pool for the other tests
        assert apply_model_settings(page, context_length="", workers="auto") == APPLIED
        wait_status(page, ready_status(DEFAULT_MODEL))
    assert page.evaluate(ENGINE) == {"context": own_context, "workers": POOL_SIZE}


def test_the_response_format_and_its_schema_persist_over_a_reload(page):
    with settings_dialog(page):
        assert page.is_checked("#response-format input[value=text]") and page.is_hidden("#response-schema")
        choose_format(page, "JSON")
        assert page.is_hidden("#response-schema")
    values = page.evaluate(FORM_VALUES)
    assert values == {"format": {"value": {"type": "json_object"}}, "tools": {"value": None}}
    TypeAdapter(ResponseFormatJSONObject).validate_python(values["format"]["value"])

    schema_text = json.dumps(PERSON, indent=2)
    with settings_dialog(page):
        choose_format(page, "JSON Schema")
        page.fill("#response-schema", schema_text)
        page.fill("#tools", json.dumps(WEATHER))
    page.reload()
    wait_ready(page)
    with settings_dialog(page):
        assert page.is_checked("#response-format input[value=json_schema]")
        assert page.input_value("#response-schema") == schema_text and page.input_value("#tools") == json.dumps(WEATHER)
        assert page.is_hidden("#response-schema-message") and page.is_hidden("#tools-message")
    values = page.evaluate(FORM_VALUES)
    expected = {"type": "json_schema", "json_schema": {"name": "response", "schema": PERSON, "strict": True}}
    assert values == {"format": {"value": expected}, "tools": {"value": WEATHER}}
    TypeAdapter(ResponseFormatJSONSchema).validate_python(expected)  # OpenAI's shapes, by the openai package
    TypeAdapter(list[ChatCompletionToolParam]).validate_python(values["tools"]["value"])
    with settings_dialog(page):  # back to Text for the other tests; the editors keep what was typed
        choose_format(page, "Text")
        page.fill("#tools", "")
    assert page.evaluate(FORM_VALUES) == {"format": {"value": None}, "tools": {"value": None}}


def test_an_invalid_schema_or_tools_text_shows_its_message_as_it_is_typed(page):
    with settings_dialog(page):
        choose_format(page, "JSON Schema")
        page.fill("#response-schema", '{"type": "object",')
        message = page.locator("#response-schema-message")
        message.wait_for()
        assert message.text_content().startswith("The JSON Schema is not valid JSON: ")
        assert message.get_attribute("aria-live") == "polite"  # read out, without interrupting the typing
        page.fill("#response-schema", "[1, 2]")
        assert message.text_content() == "The JSON Schema must be an object {...}, not an array."
        page.fill("#tools", '[{"type": "function"}]')
        assert page.text_content("#tools-message") == \
            'Tool 1 must be {"type": "function", "function": {"name": "...", ...}}.'
    values = page.evaluate(FORM_VALUES)
    assert values["format"] == {"error": "The JSON Schema must be an object {...}, not an array.",
                                "name": "SettingsError"}
    assert values["tools"]["name"] == "SettingsError"
    with settings_dialog(page):
        page.fill("#response-schema", json.dumps(PERSON))
        message.wait_for(state="hidden")
        page.fill("#tools", "")
        page.wait_for_selector("#tools-message", state="hidden")
        choose_format(page, "Text")
    assert page.evaluate(FORM_VALUES) == {"format": {"value": None}, "tools": {"value": None}}


def test_the_model_picker_lists_the_stored_models_and_switches_between_them(page, tmp_path):
    picker = page.locator("#model-picker")
    stored = page.evaluate("async () => (await pychat.store.list()).filter((r) => !r.adapter && r.complete)"
                           ".map((r) => [r.id, r.name])")
    options = picker.locator("option").evaluate_all("os => os.map((o) => [o.value, o.textContent])")
    assert options == stored and [DEFAULT_MODEL] == [name for _, name in stored]
    assert picker.input_value() == "default/" + DEFAULT_MODEL

    path = write_tiny_gguf(tmp_path / "picked.gguf", "zz")
    page.set_input_files("#model-file", files=[{"name": "picked.gguf", "mimeType": "application/octet-stream",
                                                "buffer": path.read_bytes()}])
    page.wait_for_selector("#status[data-phase=ready]:has-text('picked.gguf')")
    page.wait_for_function("() => document.getElementById('model-picker').selectedOptions[0].text === 'picked.gguf'")
    assert sorted(picker.locator("option").all_text_contents()) == sorted([DEFAULT_MODEL, "picked.gguf"])

    picker.select_option(label=DEFAULT_MODEL)  # the model list's Use: fit check, load, ready
    page.wait_for_function("s => document.getElementById('status').textContent === s",
                           arg=ready_status(DEFAULT_MODEL), timeout=ANSWER_TIMEOUT_MS)
    assert page.evaluate("pychat.model.name") == DEFAULT_MODEL and picker.input_value() == "default/" + DEFAULT_MODEL
    assert ask(page, GOLDEN_QUESTION)[0].strip() == GOLDEN_ANSWER  # transformers' and llama.cpp's greedy answer
    page.locator("#models li", has_text="picked.gguf").get_by_role("button", name="Remove").click()
    page.wait_for_function("() => document.getElementById('model-picker').options.length === 1")


def test_an_answers_tool_calls_are_shown_as_blocks(page):
    arguments = {"city": "Paris", "days": [1, 2], "units": {"temperature": "C"}}
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(arguments)}},
             {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
    page.evaluate("""(calls) => pychat.chat.transcript.render(Pychat.ConversationStore.create({messages: [
                     {role: "user", content: "Weather in Paris?"}, {role: "assistant", content: "Let me check.", tool_calls: calls}]}))""",
                  calls)
    answer = page.locator(".message[data-role=assistant]").last
    assert answer.locator(".markdown").text_content().strip() == "Let me check."  # the content next to it, as usual
    blocks = answer.locator(".tool-call")
    assert blocks.count() == 2
    assert blocks.locator(".tool-call-name").all_text_contents() == ["get_weather", "get_time"]
    assert blocks.locator("pre.tool-call-arguments").all_text_contents() == [json.dumps(arguments, indent=2), "{}"]
    page.evaluate("() => pychat.chat.transcript.render(pychat.conversation)")  # the saved conversation again


def test_a_json_schema_chosen_in_the_dialog_constrains_the_answer(page):
    """The dialog's JSON Schema goes into the page's request as response_format: the answer (SmolLM2, greedy,
    free to write anything) is JSON that the jsonschema package validates against the schema typed."""
    with settings_dialog(page):
        choose_format(page, "JSON Schema")
        page.fill("#response-schema", json.dumps(PERSON))
    set_settings(page, max_tokens=64)
    try:
        answer, _ = ask(page, "Describe a person called Ann who is 30 years old.")
        jsonschema.validate(json.loads(answer), PERSON)
        saved = page.evaluate("() => pychat.conversation.messages.at(-1).content")
        assert json.loads(saved) == json.loads(answer)
    finally:
        with settings_dialog(page):
            choose_format(page, "Text")
        set_settings(page, max_tokens=GREEDY["max_tokens"])


def test_a_schema_that_is_no_json_is_refused_before_sending_and_the_message_kept(page):
    with settings_dialog(page):
        choose_format(page, "JSON Schema")
        page.fill("#response-schema", '{"type": "object",')
    answers = page.locator(".message[data-role=assistant]").count()
    try:
        page.fill("#input", "Hello")
        page.press("#input", "Enter")
        page.wait_for_selector(".alert[data-kind=error]")
        assert any("JSON" in text for text in alert_texts(page, "error"))
        assert page.input_value("#input") == "Hello"
        assert page.locator(".message[data-role=assistant]").count() == answers
    finally:
        with settings_dialog(page):
            choose_format(page, "Text")
