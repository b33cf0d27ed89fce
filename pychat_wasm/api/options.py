"""The library API's arguments, checked: sampling settings with OpenAI's defaults, stop strings, logprobs,
messages, prompts and embedding inputs. Every refusal is an InvalidRequestError naming the argument.

OpenAI's defaults, not the chat's: temperature 1, top_p 1, no top-k, min-p or repetition penalty, so
temperature=0 is plain greedy decoding. The ranges are the chat's (chat/sampler.py SETTING_RULES).

>>> api_settings({"temperature": 0, "max_tokens": None}, context_length=256).max_tokens
256
>>> api_settings({"top_p": 2}, context_length=256)
Traceback (most recent call last):
pychat_wasm.errors.InvalidRequestError: top_p: top-p must be a number above 0 and at most 1 (1 = off), not 2
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..chat.sampler import SamplingSettings, settings_from_mapping
from ..chat.stop_strings import stop_strings_from_values
from ..errors import InvalidRequestError, InvalidSettingsError
from .tool_messages import tool_fields

OPENAI_DEFAULTS = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
MAX_TOP_LOGPROBS = 20  # OpenAI's bound
STREAM_OPTIONS = ("include_usage", "continuous_usage_stats")  # OpenAI's, vLLM's
TRUNCATIONS = ("disabled", "auto")  # OpenAI's Responses API names: refuse what does not fit, or drop old turns


def api_settings(values: Mapping[str, Any], context_length: int) -> SamplingSettings:
    """SamplingSettings from the API's keyword arguments (None = OpenAI's default; max_tokens None = until the
    context is full), each checked by its rule."""
    settings = OPENAI_DEFAULTS
    values = dict(values)
    if values.get("max_tokens") is None:
        values["max_tokens"] = context_length
    for name, value in values.items():
        try:
            settings = settings_from_mapping({name: value}, settings)
        except InvalidSettingsError as exc:
            raise InvalidRequestError("%s: %s" % (name, exc), name) from None
    return settings


def api_stop_strings(stop: Union[None, str, Sequence[str]]) -> List[str]:
    """`stop` as OpenAI takes it: a text, a list of texts, or None."""
    try:
        return stop_strings_from_values([stop] if isinstance(stop, str) else stop)
    except InvalidSettingsError as exc:
        raise InvalidRequestError("stop: %s" % exc, "stop") from None


def drops_old_turns(truncation: Any) -> bool:
    """truncation "disabled" (the default: a conversation that does not fit is refused) or "auto" (drop the
    oldest turns, as the page's and the terminal's chats do)."""
    if truncation not in TRUNCATIONS:
        raise InvalidRequestError("truncation must be disabled or auto, not %r" % (truncation,), "truncation")
    return truncation == "auto"


def includes_usage(stream_options: Any, stream: bool) -> bool:
    """OpenAI's stream_options={"include_usage": true}: a last chunk with usage (and no choices)."""
    return _usage_options(stream_options, stream)[0]


def continuous_usage(stream_options: Any, stream: bool) -> bool:
    """vLLM's stream_options={"include_usage": true, "continuous_usage_stats": true}: every chunk carries the
    usage so far too (a chat's with its context_budget: the page's meter counts each token as it streams)."""
    include, continuous = _usage_options(stream_options, stream)
    return include and continuous


def _usage_options(stream_options: Any, stream: bool) -> Tuple[bool, bool]:
    if stream_options is None:
        return False, False
    if not stream:
        raise InvalidRequestError("stream_options is only allowed with stream=True", "stream_options")
    if not isinstance(stream_options, dict) or set(stream_options) - set(STREAM_OPTIONS) or not all(
            isinstance(stream_options.get(name, False), bool) for name in STREAM_OPTIONS):
        raise InvalidRequestError("stream_options must be {include_usage, continuous_usage_stats: true or false}, "
                                  "not %r" % (stream_options,), "stream_options")
    return tuple(stream_options.get(name, False) for name in STREAM_OPTIONS)


def top_logprobs_count(logprobs: Any, top_logprobs: Any) -> Optional[int]:
    """Chat: how many alternatives each token's logprobs list (None = no logprobs at all)."""
    if not isinstance(logprobs, bool):
        raise InvalidRequestError("logprobs must be true or false, not %r" % (logprobs,), "logprobs")
    if top_logprobs is None:
        return 0 if logprobs else None
    if not logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs=True", "top_logprobs")
    return whole_number_in_range(top_logprobs, "top_logprobs", 0, MAX_TOP_LOGPROBS)


def whole_number_in_range(value: Any, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError("%s must be a whole number from %d to %d, not %r" % (param, low, high, value),
                                  param)
    return value


def api_messages(messages: Any) -> List[Dict[str, Any]]:
    """OpenAI's messages as the session takes them: a content given as a list of text parts is joined, tool
    calls and tool results keep their fields (tool_messages.py checks them); the session checks the roles
    (InvalidConversationError)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {role, content} objects", "messages")
    plain = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError("messages[%d] must be an object with role and content" % i, "messages")
        content = message.get("content")
        if isinstance(content, list):
            content = _joined_text_parts(content, i)
        plain.append(dict(tool_fields(message, i), role=message.get("role"), content=content))
    return plain


def _joined_text_parts(parts: List[Any], index: int) -> str:
    texts = [part.get("text") for part in parts if isinstance(part, dict) and part.get("type") == "text"]
    if len(texts) != len(parts) or not all(isinstance(text, str) for text in texts):
        raise InvalidRequestError("messages[%d].content: only text parts ({type: text, text}) are supported"
                                  % index, "messages")
    return "".join(texts)


def api_prompt(prompt: Any) -> Union[str, List[int]]:
    """create_completion's prompt: a text, or token ids."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        return prompt
    raise InvalidRequestError("prompt must be a text or a non-empty list of token ids, not %r"
                              % (type(prompt).__name__,), "prompt")


def api_embedding_inputs(values: Any) -> List[str]:
    """create_embedding's input: a text or a non-empty list of texts, none empty."""
    texts = [values] if isinstance(values, str) else values
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise InvalidRequestError("input must be a non-empty text or a non-empty list of non-empty texts", "input")
    return texts
