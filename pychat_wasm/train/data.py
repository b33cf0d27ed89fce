"""Training data: reading the formats people have, and turning them into token ids with loss masks.

Formats (recognised from the content, not the file name):

    RustGPT          a JSON array of strings: sentences, or "User: ... Assistant: ..." chats (RustGPT's
                     end-of-sequence marker "</s>" at the end of a string is dropped: the model's own end
                     token takes its place)
    JSON             a JSON array of {"text": ...} or {"messages": [{"role", "content"}, ...]} objects
    JSONL            one such object per line
    plain text       one document per line (a line "User: ... Assistant: ..." is a chat)

A document trains every token; a conversation is rendered with the chat template and trains only the
assistant's tokens up to and including its end-of-turn token, exactly as a chat session later prompts it.

    >>> parse_training_text('["User: Hi? Assistant: Hello!", "Cats purr."]', "x.json")
    TrainingData(documents=['Cats purr.'], conversations=[[{'role': 'user', 'content': 'Hi?'}, {'role': 'assistant', 'content': 'Hello!'}]])
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterable, List, NamedTuple, Sequence

from ..errors import TrainingDataError

Conversation = List[Dict[str, str]]
MAX_DATA_BYTES = 64 * 2 ** 20  # a larger file would crowd the model out of the browser's wasm heap
MAX_TOTAL_DATA_BYTES = 128 * 2 ** 20  # all files of one run together: they are all held in memory at once
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
_TURN = re.compile(r"(?:^|\s)(User|Assistant):\s*")
RUSTGPT_END = "</s>"  # RustGPT's data ends every string with it


class TrainingData(NamedTuple):
    documents: List[str]
    conversations: List[Conversation]


class Example(NamedTuple):
    ids: List[int]
    mask: List[int]  # 1 where the token is a target the loss counts


def parse_rustgpt_chat(text: str) -> Conversation:
    """A "User: ... Assistant: ..." string as messages; [] if it is not one.

    >>> parse_rustgpt_chat("User: 2+2? Assistant: 4. User: And 3+3? Assistant: 6.")[2:]
    [{'role': 'user', 'content': 'And 3+3?'}, {'role': 'assistant', 'content': '6.'}]
    """
    parts = _TURN.split(text.strip())
    if len(parts) < 5 or parts[0].strip() or parts[1] != "User":
        return []
    messages = [{"role": role.lower(), "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]
    roles_alternate = all(m["role"] == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages))
    if not roles_alternate or messages[-1]["role"] != "assistant" or not all(m["content"] for m in messages):
        return []
    return messages


def _conversation(messages: Any, where: str) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise TrainingDataError("%s: \"messages\" must be a non-empty list of {\"role\", \"content\"}" % where)
    checked = []
    for m in messages:
        if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)):
            raise TrainingDataError("%s: each message needs \"role\" (system, user or assistant) and a string "
                                    "\"content\", got %s" % (where, _preview(m)))
        checked.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in checked):
        raise TrainingDataError("%s: a conversation without an assistant message teaches nothing" % where)
    return checked


def _add_item(item: Any, where: str, data: TrainingData) -> None:
    if isinstance(item, str):
        text = item.strip()
        if text.endswith(RUSTGPT_END):
            text = text[:-len(RUSTGPT_END)].rstrip()
        chat = parse_rustgpt_chat(text)
        if chat:
            data.conversations.append(chat)
        elif text:
            data.documents.append(text)
    elif isinstance(item, dict) and isinstance(item.get("text"), str):
        if item["text"].strip():
            data.documents.append(item["text"].strip())
    elif isinstance(item, dict) and "messages" in item:
        data.conversations.append(_conversation(item["messages"], where))
    else:
        raise TrainingDataError("%s: expected a string, {\"text\": ...} or {\"messages\": [...]}, got %s"
                                % (where, _preview(item)))


def _preview(value: Any) -> str:
    """The start of a value as JSON, for an error message (deeply nested values: their type)."""
    try:
        return json.dumps(value)[:80]
    except RecursionError:
        return "a %s nested too deeply to show" % type(value).__name__


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise TrainingDataError("%s nests JSON too deeply to read" % what) from None
    except ValueError as exc:
        raise TrainingDataError("%s: %s" % (what, exc)) from None


def parse_training_text(text: str, name: str) -> TrainingData:
    """Documents and conversations from the text of a training file (see the formats above)."""
    text = text.lstrip("\ufeff")
    data = TrainingData([], [])
    stripped = text.strip()
    if stripped.startswith("["):
        items = _load_json(stripped, "%s looks like JSON but does not parse" % name)
        for i, item in enumerate(items):
            _add_item(item, "%s, item %d" % (name, i + 1), data)
    elif stripped.startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            item = _load_json(line, "%s, line %d is not JSON (JSONL needs one object per line)" % (name, number))
            _add_item(item, "%s, line %d" % (name, number), data)
    else:
        if "\x00" in text[:4096]:
            raise TrainingDataError("%s is a binary file, not training text" % name)
        for line in text.splitlines():
            _add_item(line, name, data)
    if not data.documents and not data.conversations:
        raise TrainingDataError("%s holds no training text" % name)
    return data


def read_training_file(path: str) -> TrainingData:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise TrainingDataError("cannot read %s: %s" % (path, exc.strerror)) from None
    if size > MAX_DATA_BYTES:
        raise TrainingDataError("%s is %.0f MB; training data is limited to %d MB (it is held in memory)"
                                % (path, size / 1e6, MAX_DATA_BYTES // 2 ** 20))
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise TrainingDataError("%s is not UTF-8 text" % path) from None
    except OSError as exc:  # a directory, or no permission to read
        raise TrainingDataError("cannot read %s: %s" % (path, exc.strerror)) from None
    return parse_training_text(text, os.path.basename(path))


def check_total_size(sizes: Iterable[int]) -> None:
    """Refuse files whose sizes together pass MAX_TOTAL_DATA_BYTES (before any of them is read)."""
    total = sum(sizes)
    if total > MAX_TOTAL_DATA_BYTES:
        raise TrainingDataError("the training files take %.0f MB together; all files of a run are limited to %d MB"
                                " (they are held in memory)" % (total / 1e6, MAX_TOTAL_DATA_BYTES // 2 ** 20))


def read_training_files(paths: Sequence[str]) -> TrainingData:
    """All documents and conversations of several files, each and all together within the size limits."""
    sizes = []
    for path in paths:
        try:
            sizes.append(os.path.getsize(path))
        except OSError:
            sizes.append(0)  # read_training_file names the problem
    check_total_size(sizes)
    return merge_data(read_training_file(p) for p in paths)


def merge_data(parts: Iterable[TrainingData]) -> TrainingData:
    """All documents and all conversations of several files, in order."""
    data = TrainingData([], [])
    for part in parts:
        data.documents.extend(part.documents)
        data.conversations.extend(part.conversations)
    return data


def builtin_corpus() -> TrainingData:
    """The corpus shipped with pychat_wasm: original factual sentences and chat pairs (RustGPT format)."""
    documents = read_training_file(os.path.join(DATA_DIR, "pretrain.json")).documents
    conversations = read_training_file(os.path.join(DATA_DIR, "chat.json")).conversations
    return TrainingData(documents, conversations)


# ----------------------------------------------------------------------------------------------
# Encoding


def encode_document(tokenizer: Any, text: str, end_id: int) -> Example:
    ids = tokenizer.encode(text, add_special=False, parse_special=False) + [end_id]
    return Example(ids, [1] * len(ids))


def encode_conversation(tokenizer: Any, template: Any, messages: Conversation) -> Example:
    """Ids of the rendered conversation; the mask keeps each assistant answer through its end of turn.

    The text is encoded piece by piece, each piece being what one more message (or the generation prompt)
    adds to the rendering: so the answer's ids are those a chat session's prompt is followed by.
    """
    end_of_turn = tokenizer.eos_id
    ids: List[int] = []
    mask: List[int] = []
    rendered = ""

    def append(text: str, trained: bool) -> None:
        new = tokenizer.encode(text, add_special=False, parse_special=True)
        if trained and end_of_turn in new:
            cut = new.index(end_of_turn) + 1  # the glue after the end of turn is the template's, not the answer's
            mask.extend([1] * cut + [0] * (len(new) - cut))
        else:
            mask.extend([1 if trained else 0] * len(new))
        ids.extend(new)

    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = template.render(messages[:i], add_generation_prompt=True)
            append(prompt[len(rendered):], False)
            rendered = prompt
        full = template.render(messages[:i + 1], add_generation_prompt=False)
        if not full.startswith(rendered):
            raise TrainingDataError("the chat template renders a conversation differently as it grows; "
                                    "it cannot be used to mask answers")
        append(full[len(rendered):], message["role"] == "assistant")
        rendered = full
    return Example(ids, mask)


def split_validation(items: Sequence[Any], fraction: float = 0.05) -> tuple:
    """(train, validation): every 1/fraction-th item held out (none for fewer than 20 items).

    >>> train, validation = split_validation(list(range(40)))
    >>> len(train), validation
    (38, [10, 30])
    """
    every = int(round(1 / fraction))
    if len(items) < 20:
        return list(items), []
    held = set(range(every // 2, len(items), every))
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
