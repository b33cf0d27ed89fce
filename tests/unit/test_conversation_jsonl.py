"""The page's JSONL export (web/conversation_export.js, run in Node) is fine-tuning data: each line validates as
OpenAI's chat messages (the official openai package's ChatCompletionMessageParam types, through pydantic) and
`pychat-wasm finetune --data` reads it (pychat_wasm.train.data.read_training_files, the reader its load_data
calls) as the same conversations. And JSONL written by Python's json module is read back by the page."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import List

import pydantic
from openai.types.chat import ChatCompletionMessageParam

from pychat_wasm.cli.train import load_data

WEB = Path(__file__).resolve().parents[2] / "web"
SCRIPTS = ["util.js", "conversation_tree.js", "conversation_store.js", "conversation_export.js"]
RUN = r"""
const fs = require("fs"), vm = require("vm");
const [web, scripts, call, input] = process.argv.slice(1);
const context = {self: {}, console, crypto, localStorage: {getItem: () => null}};
context.self = context;
vm.createContext(context);
for (const name of JSON.parse(scripts)) vm.runInContext(fs.readFileSync(web + "/" + name, "utf8"), context);
const {ConversationExport} = context.Pychat;
const value = JSON.parse(input);
const out = call === "toJsonl" ? ConversationExport.toJsonl(value).text
  : ConversationExport.parseJsonl(value).map(({system_prompt, messages}) => ({system_prompt, messages}));
process.stdout.write(typeof out === "string" ? out : JSON.stringify(out));
"""

ODD = "line\u2028sep\u0085nel\u2029para\r\nwindows\x0bvt\x1cfs \"quoted\" \\ é ✓ 🙂 </s>"
CONVERSATIONS = [
    {"id": "a", "title": "Capitals", "system_prompt": "Be brief.", "created": 1, "updated": 2,
     "messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "**Paris**."},
                  {"role": "user", "content": "And Italy?"}, {"role": "assistant", "content": "Rome.", "stats": {}}]},
    {"id": "b", "title": "Unanswered", "system_prompt": "", "created": 3, "updated": 4,
     "messages": [{"role": "user", "content": "Hello?"}]},
    {"id": "c", "title": "Odd", "system_prompt": "", "created": 5, "updated": 6,
     "messages": [{"role": "user", "content": ODD}, {"role": "assistant", "content": ODD[::-1]}]},
]
# What the export must hold: the answered conversations, the system prompt first, role and content only
EXPECTED = [
    [{"role": "system", "content": "Be brief."}] + [{"role": m["role"], "content": m["content"]}
                                                    for m in CONVERSATIONS[0]["messages"]],
    CONVERSATIONS[2]["messages"],
]


def run_page(call: str, value) -> str:
    node = shutil.which("node")
    assert node, "node is not installed (scripts/setup.sh installs Node 20)"
    done = subprocess.run([node, "-e", RUN, str(WEB), json.dumps(SCRIPTS), call, json.dumps(value)],
                          capture_output=True, text=True, encoding="utf-8", check=True, timeout=60)
    return done.stdout


def test_the_export_is_openai_chat_messages_one_conversation_a_line():
    text = run_page("toJsonl", CONVERSATIONS)
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 3
    messages_type = pydantic.TypeAdapter(List[ChatCompletionMessageParam])
    for line, expected in zip(lines, EXPECTED):
        record = json.loads(line)
        assert list(record) == ["messages"]
        assert messages_type.validate_python(record["messages"]) == record["messages"] == expected


def test_finetune_reads_the_export_as_the_same_conversations(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_bytes(run_page("toJsonl", CONVERSATIONS).encode("utf-8"))  # as the browser saves the download
    data = load_data([str(path)])  # what `pychat-wasm finetune --data export.jsonl` trains on
    assert data.documents == [] and data.conversations == EXPECTED


def test_the_page_reads_jsonl_that_python_wrote():
    for ensure_ascii in (True, False):
        text = "".join(json.dumps({"messages": m}, ensure_ascii=ensure_ascii) + "\n" for m in EXPECTED)
        back = json.loads(run_page("parseJsonl", text))
        assert back == [{"system_prompt": "Be brief.", "messages": EXPECTED[0][1:]},
                        {"system_prompt": "", "messages": EXPECTED[1]}]
