"""Structured output (issue 21): `response_format` and a GBNF `grammar` through `pychat-wasm serve`, driven by
the official `openai` client, and through the Python LLM. Every constrained answer of SmolLM2, greedy and
sampled, must be complete JSON that the `jsonschema` package validates under the schema asked for (or text
that Python's `re` matches, for a grammar); a schema or grammar that cannot constrain is OpenAI's 400 error
naming the argument."""
from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from pychat_wasm import LLM
from pychat_wasm.errors import InvalidRequestError

from openai_server import running_server  # tests/support/openai_server.py

pytestmark = pytest.mark.slow

MAX_TOKENS = 96  # every schema below bounds its strings and arrays, so an answer ends well within this

SCHEMAS = {
    "enums": {"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "string", "enum": ["small", "medium", "large"]}},
        "required": ["color", "size"], "additionalProperties": False},
    "integer_ranges": {"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "floor": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 40}},
        "required": ["age", "floor"], "additionalProperties": False},
    "array_bounds": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 10},
                 "minItems": 2, "maxItems": 3}},
        "required": ["tags"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "city": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 16},
            "population": {"type": "integer", "minimum": 0, "maximum": 99999999},
            "capital": {"type": "boolean"}},
            "required": ["name", "population", "capital"], "additionalProperties": False}},
        "required": ["city"], "additionalProperties": False},
    "dates": {"type": "object", "properties": {
        "event": {"type": "string", "maxLength": 20},
        "date": {"type": "string", "format": "date"}},
        "required": ["event", "date"], "additionalProperties": False},
    "pattern_and_const": {"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        "version": {"const": 2},
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 12}]}},
        "required": ["code", "version", "note"], "additionalProperties": False},
}
PROMPTS = {
    "enums": "Describe a T-shirt as JSON with its color and size.",
    "integer_ranges": "Give a person's age and the floor they live on, as JSON.",
    "array_bounds": "List some tags for a blog post about cooking, as JSON.",
    "nested": "Describe Paris as JSON.",
    "dates": "Name a historic event and its date, as JSON.",
    "pattern_and_const": "Make up a product code, as JSON.",
}
YES_NO = 'root ::= "yes" | "no"'
CODE_GRAMMAR = 'root ::= [A-Z] [a-z]{2,5} " " [0-9]{1,3}\n'  # a word and a number: no answer SmolLM2 gives unasked
CODE_PATTERN = r"[A-Z][a-z]{2,5} [0-9]{1,3}"
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


def json_schema_format(name: str) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}


def assert_valid(text: str, schema: dict) -> None:
    value = json.loads(text)
    jsonschema.validate(value, schema, format_checker=FORMAT_CHECKER)


@pytest.fixture(scope="module")
def client(smollm2_path):
    with running_server(smollm2_path, "--context", "512") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)


def ask(client, name: str, **sampling):
    return client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": PROMPTS[name]}], max_tokens=MAX_TOKENS,
        response_format=json_schema_format(name), **sampling)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_greedy_answers_validate(client, name):
    reply = ask(client, name, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    assert_valid(choice.message.content, SCHEMAS[name])


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_sampled_answers_validate(client, name):
    reply = ask(client, name, temperature=1.0, seed=7)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    assert_valid(choice.message.content, SCHEMAS[name])


def test_json_schema_streamed_answer_validates(client):
    chunks = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": PROMPTS["nested"]}], max_tokens=MAX_TOKENS,
        response_format=json_schema_format("nested"), temperature=0.7, seed=3, stream=True)
    text, reasons = "", []
    for chunk in chunks:
        text += chunk.choices[0].delta.content or ""
        reasons.append(chunk.choices[0].finish_reason)
    assert reasons[-1] == "stop"
    assert_valid(text, SCHEMAS["nested"])


def test_json_object_mode_answers_an_object(client):
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Give the name and age of a cat as JSON."}],
        max_tokens=MAX_TOKENS, temperature=0, response_format={"type": "json_object"})
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(json.loads(choice.message.content), dict)


def test_text_mode_is_unconstrained(client):
    """{"type": "text"} answers as without response_format: SmolLM2's greedy answer is a sentence, no "yes"/"no"."""
    messages = [{"role": "user", "content": "Is the sky blue?"}]
    plain = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12, temperature=0)
    text = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12, temperature=0,
                                          response_format={"type": "text"})
    assert text.choices[0].message.content == plain.choices[0].message.content
    assert plain.choices[0].message.content not in ("yes", "no")


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_gbnf_grammar_extra_body_constrains(client, temperature):
    messages = [{"role": "user", "content": "Is the sky blue?"}]
    yes_no = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=8, seed=5,
                                            temperature=temperature, extra_body={"grammar": YES_NO})
    assert yes_no.choices[0].message.content in ("yes", "no")
    assert yes_no.choices[0].finish_reason == "stop"
    code = client.completions.create(model="smollm2", prompt="My favourite thing is", max_tokens=16, seed=5,
                                     temperature=temperature, extra_body={"grammar": CODE_GRAMMAR})
    assert code.choices[0].finish_reason == "stop"
    assert re.fullmatch(CODE_PATTERN, code.choices[0].text), code.choices[0].text


@pytest.mark.parametrize("arguments, param, named", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}}, "response_format", "uniqueItems"),
    ({"response_format": {"type": "xml"}}, "response_format", "json_schema"),
    ({"extra_body": {"grammar": 'root ::= "a" undefined-rule'}}, "grammar", "undefined-rule"),
    ({"extra_body": {"grammar": 'root ::= "a" | '}, "response_format": {"type": "json_object"}}, "grammar", "both"),
])
def test_bad_schema_or_grammar_is_a_400_naming_it(client, arguments, param, named):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=4, **arguments)
    error = raised.value.body
    assert raised.value.status_code == 400 and error["param"] == param, error
    assert named in error["message"], error


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return LLM(smollm2_path, context_length=512)


def test_python_llm_takes_grammar_and_response_format(llm):
    messages = [{"role": "user", "content": "Is the sky blue?"}]
    reply = llm.create_chat_completion(messages, temperature=0, max_tokens=8, grammar=YES_NO)
    assert reply["choices"][0]["message"]["content"] in ("yes", "no")
    completion = llm.create_completion("My favourite thing is", temperature=0, max_tokens=16, grammar=CODE_GRAMMAR)
    assert re.fullmatch(CODE_PATTERN, completion["choices"][0]["text"]), completion
    reply = llm.create_chat_completion([{"role": "user", "content": PROMPTS["dates"]}], temperature=0,
                                       max_tokens=MAX_TOKENS, response_format=json_schema_format("dates"))
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert_valid(reply["choices"][0]["message"]["content"], SCHEMAS["dates"])
    with pytest.raises(InvalidRequestError) as raised:
        llm.create_chat_completion(messages, grammar='root ::= "a" (')
    assert raised.value.param == "grammar"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                   "required": ["zone"], "additionalProperties": False}}}


@pytest.mark.parametrize("tool_choice, names", [
    ("required", {"get_weather", "get_time"}),
    ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}),
])
def test_required_tool_calls_are_openai_tool_calls(client, tool_choice, names):
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        max_tokens=MAX_TOKENS, temperature=0, tools=[WEATHER, TIME], tool_choice=tool_choice)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name in names
    schema = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, TIME)}
    jsonschema.validate(json.loads(call.function.arguments), schema[call.function.name])


def test_tool_choice_none_answers_text(client):
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        max_tokens=8, temperature=0, tools=[WEATHER], tool_choice="none")
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content


def test_tool_choice_naming_an_unknown_function_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "launch"}})
    assert raised.value.body["param"] == "tool_choice"


def streamed_completion(client, **request):
    """The streamed answer put together by the openai client's own accumulator (ChatCompletionStreamState), and
    how many argument fragments the stream carried."""
    state, fragments = ChatCompletionStreamState(), 0
    for chunk in client.chat.completions.create(stream=True, **request):
        state.handle_chunk(chunk)
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            fragments += bool(call.function and call.function.arguments)
    return state.current_completion_snapshot, fragments  # (get_final_completion refuses a "length" answer)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}, "auto"])
def test_a_streamed_tool_call_reassembles_to_the_non_streamed_one(client, tool_choice):
    request = dict(model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                   max_tokens=MAX_TOKENS, temperature=0, tools=[WEATHER, TIME], tool_choice=tool_choice)
    whole = client.chat.completions.create(**request).choices[0]
    streamed, fragments = streamed_completion(client, **request)
    streamed = streamed.choices[0]
    assert streamed.finish_reason == whole.finish_reason and streamed.message.content == whole.message.content
    if tool_choice == "auto" and whole.message.tool_calls is None:
        return  # the model answered in words: the same words streamed, checked above
    assert whole.finish_reason == "tool_calls"
    (call,), (streamed_call,) = whole.message.tool_calls, streamed.message.tool_calls
    assert (streamed_call.type, streamed_call.function.name, streamed_call.function.arguments) == (
        call.type, call.function.name, call.function.arguments)
    assert streamed_call.id.startswith("call") and call.function.name in ("get_weather", "get_time")
    schema = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, TIME)}
    jsonschema.validate(json.loads(call.function.arguments), schema[call.function.name])
    if tool_choice != "auto":
        assert fragments > 1  # the arguments came as they were written, not in one piece at the end


def test_a_tool_result_is_taken_and_answered(client):
    """Turn 1: a required call; turn 2: that call and its result sent back (as OpenAI's client sends them), and
    the model answers in words."""
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.chat.completions.create(model="smollm2", messages=[question], max_tokens=MAX_TOKENS,
                                           temperature=0, tools=[WEATHER], tool_choice="required")
    (call,) = first.choices[0].message.tool_calls
    result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})}
    messages = [question, first.choices[0].message.model_dump(exclude_none=True), result]
    answer = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=48, temperature=0,
                                            tools=[WEATHER], tool_choice="none")
    assert answer.choices[0].message.content and answer.choices[0].message.tool_calls is None
    without_result = client.chat.completions.create(model="smollm2", messages=messages[:2] + [
        {"role": "user", "content": "And?"}], max_tokens=1, temperature=0, tools=[WEATHER], tool_choice="none")
    assert answer.usage.prompt_tokens > without_result.usage.prompt_tokens  # the result is in the prompt
    with pytest.raises(openai.BadRequestError) as raised:  # a tool message must say which call it answers
        client.chat.completions.create(model="smollm2", messages=messages[:2] + [
            {"role": "tool", "content": "18"}], max_tokens=4)
    assert raised.value.body["param"] == "messages"
