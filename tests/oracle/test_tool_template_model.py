"""A required tool call through a model whose chat template writes tools itself (issue 21): a tiny random qwen2
model carrying Qwen 2.5's template (llama.cpp's copy), through LLM.create_chat_completion and through the
official `openai` client against `pychat-wasm serve`. Its prompt is transformers' rendering of the conversation
with the tools, token for token, and its answer, forced by the grammar of Qwen's <tool_call> format, comes back
as tool_calls whose arguments `jsonschema` validates under the function's parameters schema."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from pychat_wasm import LLM

from hf_chat import hf_render  # tests/support/
from llama_cpp_chat import template_source
from openai_server import running_server
from tiny_models import TINY_SPECS, write_tiny_model

CONTEXT = 2048  # Qwen's tool prompt is ~1,000 tokens in the tiny byte-level vocabulary
MAX_TOKENS = 400  # the schemas bound every string, so a call ends well within this
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}},
                   "required": ["zone"], "additionalProperties": False}}}
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, TIME)}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
CHOICES = [("required", {"get_weather", "get_time"}),
           ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})]


@pytest.fixture(scope="module")
def qwen_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tools") / "tiny-qwen2.5-tools.gguf", "qwen2", chat=True,
                            spec=TINY_SPECS["qwen2"]._replace(context_length=CONTEXT),
                            chat_template=template_source("Qwen-Qwen2.5-7B-Instruct"))


@pytest.fixture(scope="module")
def llm(qwen_path):
    return LLM(qwen_path)


def assert_calls(message, names):
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] in names and call["id"].startswith("call")
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])


@pytest.mark.parametrize("temperature", [0, 1])
@pytest.mark.parametrize("tool_choice, names", CHOICES)
def test_a_required_call_is_openai_tool_calls_valid_under_the_schema(llm, tool_choice, names, temperature):
    reply = llm.create_chat_completion(QUESTION, tools=[WEATHER, TIME], tool_choice=tool_choice, seed=3,
                                       temperature=temperature, max_tokens=MAX_TOKENS)
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert_calls(choice["message"], names)
    prompt = hf_render(template_source("Qwen-Qwen2.5-7B-Instruct"), QUESTION, [WEATHER, TIME])
    assert reply["usage"]["prompt_tokens"] == len(llm.tokenize(prompt, add_bos=False, special=True))


def test_a_streamed_call_puts_together_as_the_whole_one(llm):
    request = dict(tools=[WEATHER, TIME], tool_choice="required", temperature=0, max_tokens=MAX_TOKENS)
    whole = llm.create_chat_completion(QUESTION, **request)["choices"][0]["message"]["tool_calls"][0]
    parts = [part for chunk in llm.create_chat_completion(QUESTION, stream=True, **request)
             for part in chunk["choices"][0]["delta"].get("tool_calls", ()) if chunk["choices"]]
    assert parts[0]["function"]["name"] == whole["function"]["name"] and len(parts) > 2  # written as they come
    assert "".join(part["function"]["arguments"] for part in parts) == whole["function"]["arguments"]


def test_a_call_and_its_result_go_back_through_the_template(llm):
    """The next turn carries the call and its result as Qwen's template writes them (transformers' rendering)."""
    first = llm.create_chat_completion(QUESTION, tools=[WEATHER], tool_choice="required", temperature=0,
                                       max_tokens=MAX_TOKENS)["choices"][0]["message"]
    (call,) = first["tool_calls"]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "18 C"}
    reply = llm.create_chat_completion(QUESTION + [first, result], tools=[WEATHER], tool_choice="none",
                                       temperature=0, max_tokens=1)
    hf_call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])}}]}
    prompt = hf_render(template_source("Qwen-Qwen2.5-7B-Instruct"), QUESTION + [hf_call, result], None)
    assert reply["usage"]["prompt_tokens"] == len(llm.tokenize(prompt, add_bos=False, special=True))


@pytest.mark.slow
def test_the_openai_client_gets_tool_calls_from_serve(qwen_path):
    with running_server(qwen_path, "--context", str(CONTEXT)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none")
        for tool_choice, names in CHOICES:
            request = dict(model="tiny", messages=QUESTION, tools=[WEATHER, TIME], tool_choice=tool_choice,
                           temperature=0, max_tokens=MAX_TOKENS)
            choice = client.chat.completions.create(**request).choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            assert_calls(choice.message.model_dump(), names)
            state = ChatCompletionStreamState()
            for chunk in client.chat.completions.create(stream=True, **request):
                state.handle_chunk(chunk)
            streamed = state.current_completion_snapshot.choices[0]
            assert streamed.finish_reason == "tool_calls"
            (streamed_call,), (call,) = streamed.message.tool_calls, choice.message.tool_calls
            assert (streamed_call.function.name, streamed_call.function.arguments) == (
                call.function.name, call.function.arguments)
