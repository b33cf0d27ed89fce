"""Tools through the model's own chat template (issue 21), checked against independent references:
- the prompt with `tools`, assistant tool_calls and tool results is the text transformers' apply_chat_template
  renders from the same template (llama.cpp's copies of the models' templates, read from its git bundle);
- llama.cpp's own tool-call parsing cases (tests/test-chat.cpp) read back as the calls llama.cpp expects, and a
  call transformers renders in each template reads back as that call, whatever the cut between streamed pieces;
- templates without tool support (SmolLM2's, Gemma's, the built-ins) keep the generic prompt.
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from pychat_wasm.api.options import api_messages
from pychat_wasm.api.tool_formats import GENERIC, template_format
from pychat_wasm.api.tool_messages import for_template
from pychat_wasm.api.tools import CallReader, ToolPlan
from pychat_wasm.chat.template import CHATML_TEMPLATE, ChatTemplate
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers import load_tokenizer

from hf_chat import BOS, EOS, hf_render  # tests/support/
from llama_cpp_chat import parse_cases, template_source

FORMAT_OF = {  # template -> the format its calls are written in (what llama.cpp's parser for it reads)
    "Qwen-Qwen2.5-7B-Instruct": "hermes",
    "Qwen-Qwen3-0.6B": "hermes",
    "Qwen-QwQ-32B": "hermes",
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": "hermes",
    "MiMo-VL": "hermes",
    "meta-llama-Llama-3.1-8B-Instruct": "llama3_json",
    "meta-llama-Llama-3.2-3B-Instruct": "llama3_json",
    "meta-llama-Llama-3.3-70B-Instruct": "llama3_json",
    "mistralai-Mistral-Nemo-Instruct-2407": "mistral",
}
GENERIC_TEMPLATES = ["microsoft-Phi-3.5-mini-instruct", "HuggingFaceTB-SmolLM3-3B"]  # SmolLM3 reads xml_tools
DATE = "26 Jul 2024"  # Llama's templates print a date: both renderers get the same one

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
CALL_ID = "abcde1234"  # 9 letters and digits: Mistral's templates take no other ids


def openai_conversation(arguments: str = '{"city": "Paris", "unit": "celsius"}'):
    """A conversation as OpenAI's client sends it: arguments a JSON text, content None beside the calls."""
    return [{"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": CALL_ID, "content": "18 C, sunny"},
            {"role": "assistant", "content": "It is 18 C and sunny."},  # (Mistral's roles must alternate)
            {"role": "user", "content": "And the time?"}]


def hf_conversation():
    """The same conversation as transformers' documentation writes it: arguments an object."""
    conversation = json.loads(json.dumps(openai_conversation()))
    call = conversation[2]
    call["content"] = ""
    call["tool_calls"][0]["function"]["arguments"] = {"city": "Paris", "unit": "celsius"}
    return conversation


def our_prompt(template: ChatTemplate, messages, tools, tool_choice="auto", add_generation_prompt=True):
    """The prompt as LLM.create_chat_completion renders it."""
    plan = ToolPlan(tools, tool_choice, template_format(template))
    conversation = plan.messages(for_template(api_messages(messages), template))
    return template.render(conversation, add_generation_prompt, tools=plan.template_tools(), date_string=DATE)


def hf_prompt(source: str, messages, tools, add_generation_prompt=True):
    return hf_render(source, messages, tools, add_generation_prompt, date_string=DATE)


@pytest.mark.parametrize("name", sorted(FORMAT_OF))
def test_the_template_s_format_is_recognised(name):
    assert template_format(ChatTemplate(template_source(name), BOS, EOS)).name == FORMAT_OF[name]


@pytest.mark.parametrize("name", GENERIC_TEMPLATES)
def test_templates_without_tool_calls_keep_the_generic_prompt(name):
    template = ChatTemplate(template_source(name), BOS, EOS)
    assert template_format(template) is GENERIC
    prompt = our_prompt(template, [{"role": "user", "content": "Hi"}], [WEATHER])
    assert "You can call these functions" in prompt and '"name": "get_weather"' in prompt


@pytest.mark.parametrize("model", ["smollm2_path", "gemma3_path"])
def test_smollm2_and_gemma3_keep_the_generic_prompt(model, request):
    gguf = GGUFFile.open(str(request.getfixturevalue(model)))
    assert template_format(ChatTemplate.from_gguf(gguf, load_tokenizer(gguf))) is GENERIC


def test_the_built_in_templates_keep_the_generic_prompt():
    assert template_format(ChatTemplate(CHATML_TEMPLATE, "", "<|im_end|>", builtin="chatml")) is GENERIC


@pytest.mark.parametrize("name", sorted(FORMAT_OF))
def test_tools_calls_and_results_render_as_transformers_renders_them(name):
    source = template_source(name)
    template = ChatTemplate(source, BOS, EOS)
    tools = [WEATHER, TIME]
    ours = our_prompt(template, openai_conversation(), tools)
    assert ours == hf_prompt(source, hf_conversation(), tools)
    assert "get_time" in ours and "18 C, sunny" in ours and "You can call these functions" not in ours
    first = [{"role": "user", "content": "Weather in Paris?"}]  # the first turn: only the tools are new
    assert our_prompt(template, first, tools) == hf_prompt(source, first, tools)


def streamed(fmt, text, names, size):
    """(content, [(name, arguments)], ids) put together from a CallReader fed `text` in pieces of `size`."""
    reader = CallReader({name: {"name": name} for name in names}, False, fmt)
    deltas = [d for i in range(0, len(text), size) for d in reader.feed(text[i:i + size])] + reader.finish()
    content = "".join(d.get("content", "") for d in deltas)
    calls = {}
    for part in (c for d in deltas for c in d.get("tool_calls", ())):
        call = calls.setdefault(part["index"], {"id": part.get("id"), "name": part["function"].get("name"),
                                                "arguments": ""})
        call["arguments"] += part["function"]["arguments"]
    ordered = [calls[i] for i in sorted(calls)]
    return content, [(c["name"], json.loads(c["arguments"])) for c in ordered], [c["id"] for c in ordered]


LLAMA_CPP_CASES = parse_cases(sorted(FORMAT_OF))


def test_llama_cpp_has_call_cases_for_each_family():
    formats = {FORMAT_OF[case.template] for case in LLAMA_CPP_CASES if case.calls}
    assert {"hermes", "mistral"} <= formats  # its Llama 3.x cases are content only: the next test covers calls


@pytest.mark.parametrize("size", [1, 3, 1000])
@pytest.mark.parametrize("case", LLAMA_CPP_CASES, ids=lambda c: "%s:%s" % (c.template, c.output[:24]))
def test_llama_cpp_s_parsing_cases(case, size):
    fmt = template_format(ChatTemplate(template_source(case.template), BOS, EOS))
    names = {"special_function", "special_function_with_opt", "python"}
    content, calls, ids = streamed(fmt, case.output, names if case.with_tools else set(), size)
    assert content == case.content
    assert calls == [(name, json.loads(arguments)) for name, arguments, _ in case.calls]
    if fmt.id_length:  # llama.cpp keeps the model's id; ours are made fresh, in the shape the template takes
        assert all(len(ident) == fmt.id_length and ident.isalnum() for ident in ids)


def transformers_call(source: str, fmt) -> str:
    """The answer part of a call turn as transformers renders it: after the prompt (the part the turn shares
    with a turn in words), before the end of the turn, from the format's opening mark (Qwen3 writes an empty
    <think></think> first, reasoning rather than content)."""
    question, call = hf_conversation()[1:3]
    prompt = hf_prompt(source, [question], [WEATHER])
    written = hf_prompt(source, [question, call], [WEATHER], add_generation_prompt=False)
    words = hf_prompt(source, [question, {"role": "assistant", "content": "WORDS"}], [WEATHER], False)
    end_of_turn = words[words.index("WORDS") + len("WORDS"):]
    assert written.endswith(end_of_turn)
    answer = written[len(os.path.commonprefix([prompt, written, words])):len(written) - len(end_of_turn)]
    return answer[answer.index(fmt.opens[0]):] if fmt.opens else answer


@pytest.mark.parametrize("size", [1, 5, 1000])
@pytest.mark.parametrize("name", sorted(FORMAT_OF))
def test_a_call_transformers_renders_reads_back_as_that_call(name, size):
    """A call as transformers renders it, with content before it where the format allows, reads back as the
    call (and the content)."""
    fmt = template_format(ChatTemplate(template_source(name), BOS, EOS))
    answer = transformers_call(template_source(name), fmt)
    expected = [("get_weather", {"city": "Paris", "unit": "celsius"})]
    assert streamed(fmt, answer, {"get_weather"}, size)[:2] == ("", expected)
    if fmt.opens:
        assert streamed(fmt, "Let me check.\n" + answer, {"get_weather"}, size)[:2] == ("Let me check.", expected)
    assert streamed(fmt, answer, {"get_time"}, size)[1] == []  # a function not offered is no call


def test_a_call_s_id_goes_back_through_the_template():
    """Mistral's template takes only 9-character ids: the ids our calls get for it render on the next turn."""
    source = template_source("mistralai-Mistral-Nemo-Instruct-2407")
    template = ChatTemplate(source, BOS, EOS)
    _, _, (ident,) = streamed(template_format(template), '[TOOL_CALLS][{"name": "get_weather", "arguments": '
                                                         '{"city": "Paris"}}]', {"get_weather"}, 1000)
    conversation = openai_conversation()
    conversation[2]["tool_calls"][0]["id"] = conversation[3]["tool_call_id"] = ident
    assert ident in our_prompt(template, conversation, [WEATHER])


@pytest.mark.parametrize("name", sorted(FORMAT_OF))
def test_a_required_call_s_grammar_writes_what_the_template_writes(name):
    """The grammar for tool_choice required accepts the call as transformers renders it (in the layout the
    template writes) and nothing else but a call."""
    from pychat_wasm.grammar import Grammar, Matcher

    source = template_source(name)
    plan = ToolPlan([WEATHER], "required", template_format(ChatTemplate(source, BOS, EOS)))
    matcher = Matcher(Grammar.parse(plan.gbnf()))
    answer = transformers_call(source, plan.fmt)
    calls = [answer[:n] for n in range(len(answer) + 1)
             if matcher.allows_end(matcher.accept_text(matcher.initial, answer[:n]))]
    assert calls, "the grammar accepts no prefix of %r" % answer
    assert streamed(plan.fmt, calls[-1], {"get_weather"}, 1000)[1] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"})]
    assert matcher.accept_text(matcher.initial, "Hello") == matcher.dead


def test_a_mark_that_is_one_special_token_is_written_as_that_token():
    """Qwen's vocabulary has <tool_call> as one user-defined token: the grammar names its id, so the model
    writes the token it was trained on rather than spelling the mark out of pieces."""
    ids = {"<tool_call>": [151657], "</tool_call>": [151658]}
    vocabulary = SimpleNamespace(encode=lambda text, add_special, parse_special: ids.get(text, [1, 2]),
                                 is_special=lambda token: token > 150000)
    fmt = template_format(ChatTemplate(template_source("Qwen-Qwen2.5-7B-Instruct"), BOS, EOS))
    root = ToolPlan([WEATHER], "required", fmt).gbnf(vocabulary).splitlines()[-1]
    assert root == 'root ::= <[151657]> "\\n" tool-call "\\n" <[151658]>'
