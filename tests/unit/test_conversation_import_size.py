"""web/conversation_store.js: an import file over the limit is refused from its size, before it is read.

The script runs in Node with a File stand-in that records whether its text was asked for.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"
SCRIPTS = [WEB / "conversation_tree.js", WEB / "conversation_store.js"]  # the store and what it reads
RUN = r"""
const fs = require("fs"), vm = require("vm");
const context = {self: {}, console, crypto};
vm.createContext(context);
for (const path of process.argv.slice(1)) vm.runInContext(fs.readFileSync(path, "utf8"), context);
const {readImport} = context.self.Pychat.ConversationStore;
const file = (size, text) => ({size, read: false, async text() { this.read = true; return text; }});
const big = file(51 * 1024 * 1024, "{}"), small = file(70, JSON.stringify({messages: [{role: "user", content: "Hi"}]}));
(async () => {
  const result = {};
  try { await readImport(big); result.big = "accepted"; } catch (error) { result.big = error.message; }
  result.bigRead = big.read;
  result.small = (await readImport(small)).length;
  result.smallRead = small.read;
  console.log(JSON.stringify(result));
})();
"""


def test_an_oversize_import_is_refused_without_reading_it():
    out = subprocess.run(["node", "-e", RUN, *map(str, SCRIPTS)], capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(out.stdout)
    assert "too large to be a conversation export" in result["big"] and result["bigRead"] is False
    assert result["small"] == 1 and result["smallRead"] is True
