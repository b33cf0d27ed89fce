"""A conversation's tool calls and tool results as the model sees them: OpenAI's assistant messages carrying
`tool_calls` and "tool" messages (a function's result, with the `tool_call_id` it answers), checked, then
rendered through the model's chat template where the template writes them itself (ChatTemplate's
renders_tool_calls / renders_tool_results probes), else in the generic format:

    an assistant message's tool calls   its content: its text (if any), then one line per call,
                                        {"name": N, "arguments": {...}} (the form TOOLS_PROMPT asks for)
    tool results                        one user message, one line per result, {"name": N, "result": TEXT}
                                        (N: the function of the call it answers; consecutive results together)

A template that renders tool calls gets their arguments as an object (Hugging Face's convention), not a text.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from ..errors import InvalidRequestError


def tool_fields(message: Dict[str, Any], index: int) -> Dict[str, Any]:
    """The tool fields of messages[index] (OpenAI's shapes), checked: an assistant's `tool_calls` (a list of
    {id, type: function, function: {name, arguments: a JSON text}}), a tool message's `tool_call_id`."""
    where = "messages[%d]" % index
    if message.get("role") == "tool":
        if not isinstance(message.get("tool_call_id"), str):
            raise InvalidRequestError("%s: a tool message needs the tool_call_id it answers" % where, "messages")
        return {"tool_call_id": message["tool_call_id"]}
    calls = message.get("tool_calls")
    if message.get("role") != "assistant" or calls is None:
        return {}
    if not isinstance(calls, list) or not calls:
        raise InvalidRequestError("%s.tool_calls must be a non-empty list" % where, "messages")
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(call.get("id"), str) and call.get("type", "function") == "function"
                and isinstance(function, dict) and isinstance(function.get("name"), str)
                and isinstance(function.get("arguments"), str)):
            raise InvalidRequestError("%s.tool_calls[%d] must be {id, type: function, function: {name, arguments: "
                                      "a JSON text}}" % (where, i), "messages")
        try:
            json.loads(function["arguments"])
        except ValueError:
            raise InvalidRequestError("%s.tool_calls[%d].function.arguments is not JSON" % (where, i),
                                      "messages") from None
    return {"tool_calls": [{"id": c["id"], "type": "function", "function": dict(c["function"])} for c in calls]}


def for_template(conversation: List[Dict[str, Any]], template: Any) -> List[Dict[str, Any]]:
    """The conversation with its tool calls and results as the template renders them natively, or generic.
    Without either the template is not probed (each probe is a render: a hostile one may take its full bound)."""
    if not any(message.get("tool_calls") or message["role"] == "tool" for message in conversation):
        return list(conversation)
    names = {call["id"]: call["function"]["name"] for message in conversation
             for call in message.get("tool_calls") or ()}
    native_calls, native_results = template.renders_tool_calls, template.renders_tool_results
    out: List[Dict[str, Any]] = []
    for message in conversation:
        if message.get("tool_calls"):
            out.append(_native_call(message) if native_calls else _generic_call(message))
        elif message["role"] == "tool" and not native_results:
            line = json.dumps({"name": names.get(message["tool_call_id"], ""), "result": message["content"]},
                              ensure_ascii=False)
            if out and out[-1].get("generic_results"):
                out[-1]["content"] += "\n" + line
            else:
                out.append({"role": "user", "content": line, "generic_results": True})
        else:
            out.append(message)
    return [{key: value for key, value in message.items() if key != "generic_results"} for message in out]


def _native_call(message: Dict[str, Any]) -> Dict[str, Any]:
    calls = [{"id": call["id"], "type": "function", "function": {
        "name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])}}
        for call in message["tool_calls"]]
    return dict(message, content=message.get("content") or "", tool_calls=calls)  # Qwen3 reads content as text


def _generic_call(message: Dict[str, Any]) -> Dict[str, Any]:
    lines = [message["content"]] if message.get("content") else []
    lines += [json.dumps({"name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])},
                         ensure_ascii=False) for call in message["tool_calls"]]
    return {"role": "assistant", "content": "\n".join(lines)}
