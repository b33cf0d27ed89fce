"""Tool calls without a model: CallReader turns an answer's pieces into OpenAI's streamed deltas, whatever the
cut between pieces, and their arguments put together are the call's arguments text (json.loads reads them);
tool_messages renders earlier calls and results through a template that writes them, else generically."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pychat_wasm.api.tool_messages import for_template
from pychat_wasm.api.tools import CallReader

FUNCTIONS = {"get_weather": {"name": "get_weather"}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris", "where": {"unit": "celsius"}}}'


def deltas_of(pieces, incremental, functions=FUNCTIONS):
    reader = CallReader(functions, incremental)
    deltas = [d for piece in pieces for d in reader.feed(piece)] + reader.finish()
    return deltas, reader


def put_together(deltas):
    content = "".join(d.get("content", "") for d in deltas)
    calls = [c for d in deltas for c in d.get("tool_calls", ())]
    return content, calls


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(CALL)])
@pytest.mark.parametrize("incremental", [True, False])
def test_a_call_streams_the_same_whatever_the_pieces(size, incremental):
    deltas, reader = deltas_of([CALL[i:i + size] for i in range(0, len(CALL), size)], incremental)
    content, calls = put_together(deltas)
    assert reader.is_call and content == ""
    head, rest = calls[0], calls[1:]
    assert head["index"] == 0 and head["type"] == "function" and head["id"].startswith("call")
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    arguments = "".join(c["function"]["arguments"] for c in rest)
    assert json.loads(arguments) == json.loads(CALL)["arguments"] and arguments == CALL[CALL.index('{"city'):-1]
    if incremental and size < 8:
        assert len(rest) > 3  # written as they came, not at the end


@pytest.mark.parametrize("text", ["Paris is sunny.", '{"city": "Paris"}', '{"name": "launch", "arguments": {}}',
                                  '{"name": "get_weather", "arguments": {"city": "Paris"}} and more'])
def test_an_answer_that_is_not_a_whole_call_stays_content(text):
    deltas, reader = deltas_of([text[i:i + 4] for i in range(0, len(text), 4)], incremental=False)
    assert put_together(deltas) == (text, []) and not reader.is_call


def test_without_functions_every_piece_is_content_at_once():
    reader = CallReader({})
    assert reader.feed('{"name"') == [{"content": '{"name"'}] and not reader.may_call


def template(calls: bool, results: bool):
    return SimpleNamespace(renders_tool_calls=calls, renders_tool_results=results)


CONVERSATION = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "tool_call_id": "a", "content": "18 C"},
    {"role": "tool", "tool_call_id": "b", "content": "21 C"},
]


def test_the_generic_format_writes_calls_and_results_as_json_lines():
    generic = for_template(CONVERSATION, template(False, False))
    assert [m["role"] for m in generic] == ["user", "assistant", "user"]
    assert [json.loads(line) for line in generic[1]["content"].splitlines()] == [
        {"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]
    assert [json.loads(line) for line in generic[2]["content"].splitlines()] == [
        {"name": "get_weather", "result": "18 C"}, {"name": "get_weather", "result": "21 C"}]


def test_a_template_that_writes_tool_messages_gets_them_with_object_arguments():
    native = for_template(CONVERSATION, template(True, True))
    assert native[2:] == CONVERSATION[2:]
    assert [c["function"]["arguments"] for c in native[1]["tool_calls"]] == [{"city": "Paris"}, {"city": "Rome"}]
    assert CONVERSATION[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'  # the caller's copy


def test_a_conversation_without_tool_messages_does_not_probe_the_template():
    """Each probe renders the template: a hostile one may take its full time bound per render, so a plain chat
    must not pay for two probes it does not need (the fuzzer's case 397,538 of seed 0 spent them)."""
    class Unprobed:
        def __getattr__(self, name):
            raise AssertionError("the template was probed for " + name)

    plain = CONVERSATION[:1] + [{"role": "assistant", "content": "Let me look."}]
    assert for_template(plain, Unprobed()) == plain
    with pytest.raises(AssertionError, match="probed"):
        for_template(CONVERSATION, Unprobed())
