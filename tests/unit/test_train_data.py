"""Training data: every format people have parses into the right documents and conversations, bad data gets
a TrainingDataError that says what is wrong, and a conversation's loss mask covers exactly the assistant's
answers and their end-of-turn tokens (checked against a rendering built here from the ChatML structure)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pychat_wasm.chat.template import CHATML_TEMPLATE, ChatTemplate
from pychat_wasm.errors import TrainingDataError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers import load_tokenizer
from pychat_wasm.tokenizers.bpe import BPETokenizer
from pychat_wasm.train import data as data_module
from pychat_wasm.train.bpe import gguf_tokenizer_metadata, train_bpe
from pychat_wasm.train.data import (TrainingData, builtin_corpus, encode_conversation, encode_document,
                                    parse_training_text, read_training_file, read_training_files)


def chat(*turns):
    """chat("q", "a", ...) -> [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, ...]"""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rustgpt_small"
SYSTEM = {"role": "system", "content": "You are terse."}
MULTI_TURN = "User: What is 2+2? Assistant: It is 4. User: And 3+3? Assistant: It is 6."

FORMATS = {
    "rustgpt pretraining": (
        json.dumps(["The sun rises in the east.", "  Cats purr when they are happy.  ", "", "Ice melts."]),
        ["The sun rises in the east.", "Cats purr when they are happy.", "Ice melts."], []),
    "rustgpt chat, multi-turn": (
        json.dumps(["User: What color is the barn? Assistant: The barn is red.", MULTI_TURN]),
        [], [chat("What color is the barn?", "The barn is red."),
             chat("What is 2+2?", "It is 4.", "And 3+3?", "It is 6.")]),
    "rustgpt with its </s> end markers": (  # RustGPT's own data files end every string with " </s>"
        json.dumps(["Water flows downhill due to gravity </s>",
                    "User: What causes rain? Assistant: Water vapor condensing into droplets </s>"]),
        ["Water flows downhill due to gravity"], [chat("What causes rain?", "Water vapor condensing into droplets")]),
    "rustgpt mixed, not-quite-chats stay documents": (
        json.dumps(["User: only a question", "Assistant: only an answer", "User: Hi Assistant:",
                    "User: Hi? Assistant: Hello!"]),
        ["User: only a question", "Assistant: only an answer", "User: Hi Assistant:"], [chat("Hi?", "Hello!")]),
    "json array of messages and text": (
        json.dumps([{"messages": [SYSTEM] + chat("Hi", "Hello.")}, {"text": "A document."},
                    {"messages": chat("One?", "1", "Two?", "2")}]),
        ["A document."], [[SYSTEM] + chat("Hi", "Hello."), chat("One?", "1", "Two?", "2")]),
    "jsonl mixed text and messages, blank lines": (
        "\n".join([json.dumps({"text": "First document."}), "",
                   json.dumps({"messages": [SYSTEM] + chat("Name a colour.", "Blue.")}), "   ",
                   json.dumps({"text": "Second document, ünïcödé 🙂."}),
                   json.dumps({"messages": chat("Größe?", "Groß.")}, ensure_ascii=False), ""]),
        ["First document.", "Second document, ünïcödé 🙂."],
        [[SYSTEM] + chat("Name a colour.", "Blue."), chat("Größe?", "Groß.")]),
    "plain text with a chat line and blank lines": (
        "The farm has a red barn.\n\n   \nUser: Where is the barn? Assistant: Next to the road.\n"
        "Cows live in the barn.\r\n",
        ["The farm has a red barn.", "Cows live in the barn."], [chat("Where is the barn?", "Next to the road.")]),
    "utf-8 bom before a json array": (
        "\ufeff" + json.dumps(["Bread is made from flour."]), ["Bread is made from flour."], []),
    "utf-8 bom before jsonl": (
        "\ufeff" + json.dumps({"messages": chat("Hi", "Hello.")}) + "\n", [], [chat("Hi", "Hello.")]),
    "utf-8 bom before plain text": ("\ufeffOne line.\nTwo lines.\n", ["One line.", "Two lines."], []),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_formats_parse_into_documents_and_conversations(tmp_path, name):
    text, documents, conversations = FORMATS[name]
    path = tmp_path / "data.txt"  # the format is recognised from the content, not the name
    path.write_text(text, encoding="utf-8", newline="")
    assert read_training_file(str(path)) == TrainingData(documents, conversations)
    assert parse_training_text(text, "data.txt") == TrainingData(documents, conversations)


def test_shipped_and_example_corpora_parse():
    corpus = builtin_corpus()
    assert len(corpus.documents) > 100 and len(corpus.conversations) > 100
    assert all(c[-1]["role"] == "assistant" and c[-1]["content"] for c in corpus.conversations)
    for name, documents, conversations in (("pretraining_data.json", 25, 0), ("chat_training_data.json", 0, 50)):
        parsed = read_training_file(str(EXAMPLES / name))
        assert (len(parsed.documents), len(parsed.conversations)) == (documents, conversations)


BAD = {
    "not json": (b"[1, 2", ["bad.json looks like JSON but does not parse"]),
    "jsonl broken line": (b'{"text": "fine"}\n\n{"text": "broken"\n{"text": "fine"}\n',
                          ["bad.json, line 3 is not JSON", "one object per line"]),
    "pretty-printed json object": (b'{\n  "text": "a"\n}\n', ["line 1 is not JSON"]),
    "array of numbers": (b"[1, 2]", ["bad.json, item 1: expected a string", "got 1"]),
    "object without text or messages": (b'[{"prompt": "x"}]', ["item 1", '{"prompt": "x"}']),
    "messages is a string": (b'{"messages": "hi"}', ["line 1", '"messages" must be a non-empty list']),
    "messages is empty": (b'[{"text": "ok"}, {"messages": []}]', ["item 2", "non-empty list"]),
    "message without role": (b'[{"messages": [{"content": "hi"}]}]', ['needs "role"', '{"content": "hi"}']),
    "message with an unknown role": (b'[{"messages": [{"role": "bot", "content": "hi"}]}]', ['needs "role"']),
    "message content not a string": (b'[{"messages": [{"role": "user", "content": 5}]}]', ['string "content"']),
    "no assistant message": (b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}',
                             ["line 1", "without an assistant message"]),
    "empty file": (b"", ["bad.json holds no training text"]),
    "whitespace only": (b"  \n\n\t \r\n", ["holds no training text"]),
    "empty json array": (b"[]", ["holds no training text"]),
    "only blank strings": (b'["", "   "]', ["holds no training text"]),
    "binary bytes": (bytes(range(0, 128)) * 8, ["is a binary file"]),
    "non-utf-8 bytes": ("Café au lait.\n".encode("latin-1"), ["is not UTF-8 text"]),
    "a png": (b"\x89PNG\r\n\x1a\n" + bytes(64), ["is not UTF-8 text"]),
    "deeply nested json": (b"[" * 100000 + b"]" * 100000, ["nests JSON too deeply to read"]),
    "deeply nested jsonl": (b'{"text": ' + b"[" * 100000 + b"]" * 100000 + b"}", ["line 1", "too deeply"]),
    "nested item": (b"[" + b"[" * 700 + b"]" * 700 + b"]", ["item 1: expected a string"]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_data_gets_a_helpful_error(tmp_path, name):
    contents, fragments = BAD[name]
    path = tmp_path / "bad.json"
    path.write_bytes(contents)
    with pytest.raises(TrainingDataError) as info:
        read_training_file(str(path))
    message = str(info.value)
    assert "bad.json" in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TrainingDataError, match="cannot read .*missing.json: No such file"):
        read_training_file(str(tmp_path / "missing.json"))
    with pytest.raises(TrainingDataError, match="cannot read"):
        read_training_file(str(tmp_path))


def test_files_over_the_total_size_limit(tmp_path, monkeypatch):
    """Each file within its limit, all of them together not: refused before any is read (CLI and page)."""
    paths = [tmp_path / ("part%d.json" % i) for i in range(3)]
    for path in paths:
        path.write_text(json.dumps(["A sentence of training text."] * 10))
    assert len(read_training_files([str(p) for p in paths]).documents) == 30
    monkeypatch.setattr(data_module, "MAX_TOTAL_DATA_BYTES", 2 * paths[0].stat().st_size)
    with pytest.raises(TrainingDataError, match=r"together; all files of a run are limited to"):
        read_training_files([str(p) for p in paths])
    from pychat_wasm.browser import train_worker
    files = json.dumps([{"name": p.name, "text": p.read_text()} for p in paths])
    reply = json.loads(train_worker.describe_files(files))
    assert reply["ok"] is False and "limited to" in reply["error"]["message"]


def test_file_over_the_size_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(["A sentence of training text."] * 10))
    assert len(read_training_file(str(path)).documents) == 10
    monkeypatch.setattr(data_module, "MAX_DATA_BYTES", 100)
    with pytest.raises(TrainingDataError, match=r"big.json is .* MB; training data is limited to"):
        read_training_file(str(path))


# ---- encoding ------------------------------------------------------------------------------------------------

TEMPLATE = ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="<|im_end|>")
CONVERSATIONS = [
    chat("What color is the barn?", "The barn is red."),
    chat("What is 2+2?", "It is 4.", "And 3+3?", "It is 6."),  # the multi-turn RustGPT chat above
    [SYSTEM] + chat("Name two colours.", "Red and blue.", "Why?", "Because they are primary.\nAlso common."),
    chat("Größe von 3 × 4?", "12 🙂 — zwölf."),
    chat("Say nothing more.", "Done.", "Thanks!"),  # ends with a user turn: that turn is not trained
]


@pytest.fixture(scope="module", params=["trained bpe", "smollm2"])
def tokenizer(request):
    if request.param == "smollm2":
        path = request.getfixturevalue("smollm2_path")
        return load_tokenizer(GGUFFile.open(str(path)))
    corpus = builtin_corpus()
    texts = corpus.documents[:100] + [TEMPLATE.render(c, add_generation_prompt=False)
                                      for c in corpus.conversations[:100]]
    return BPETokenizer(gguf_tokenizer_metadata(train_bpe(texts, 400)))


def expected_encoding(tokenizer, messages):
    """Ids and mask built here from ChatML's structure: <|im_start|>role\\n (0), content, <|im_end|>, \\n (0),
    with content and <|im_end|> trained for the assistant's turns only."""
    ids, mask = [], []
    for m in messages:
        answer = m["role"] == "assistant"
        for piece, trained in (("<|im_start|>" + m["role"] + "\n", False), (m["content"], answer),
                               ("<|im_end|>", answer), ("\n", False)):
            new = tokenizer.encode(piece, add_special=False, parse_special=True)
            ids += new
            mask += [int(trained)] * len(new)
    return ids, mask


def trained_runs(ids, mask):
    """The ids of each maximal run of mask == 1."""
    runs, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_conversation_mask_covers_exactly_the_answers(tokenizer, index):
    messages = CONVERSATIONS[index]
    assert tokenizer.eos_id == tokenizer.token_ids["<|im_end|>"]
    example = encode_conversation(tokenizer, TEMPLATE, messages)
    assert len(example.ids) == len(example.mask) and set(example.mask) == {0, 1}
    whole = tokenizer.encode(TEMPLATE.render(messages, add_generation_prompt=False), add_special=False,
                             parse_special=True)
    assert example.ids == whole  # piece by piece encodes as the whole text does (ChatML)
    assert (example.ids, example.mask) == expected_encoding(tokenizer, messages)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = trained_runs(example.ids, example.mask)
    assert [tokenizer.decode(run) for run in runs] == [a + "<|im_end|>" for a in answers]
    assert all(run[-1] == tokenizer.eos_id and run.count(tokenizer.eos_id) == 1 for run in runs)


def test_conversation_prompt_is_what_a_chat_session_sends(tokenizer):
    """The untrained ids before each answer are the generation prompt a session renders for that history."""
    messages = CONVERSATIONS[2]
    example = encode_conversation(tokenizer, TEMPLATE, messages)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = tokenizer.encode(TEMPLATE.render(messages[:i], add_generation_prompt=True), add_special=False,
                                  parse_special=True)
        assert example.ids[:len(prompt)] == prompt
        assert example.mask[len(prompt) - 1] == 0 and example.mask[len(prompt)] == 1


def test_document_trains_every_token_and_ends_with_its_end_id(tokenizer):
    end = tokenizer.token_ids["<|endoftext|>"]
    example = encode_document(tokenizer, "Cats purr. <|im_end|> stays text.", end)
    assert example.ids[-1] == end and example.mask == [1] * len(example.ids)
    assert tokenizer.decode(example.ids[:-1]) == "Cats purr. <|im_end|> stays text."
    assert tokenizer.eos_id not in example.ids  # special-token text in a document is not parsed
