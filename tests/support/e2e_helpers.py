"""Helpers for the browser end-to-end tests: a recording test server, tiny GGUF files, page actions.

Test-only behaviour (cutting a download half-way) lives here, in a subclass of the product's request
handler, never in build/serve.py itself.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import threading
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PAGE_TIMEOUT_MS = 90_000   # start-up: Python boot + model download/verify/load on 2 busy cores
ANSWER_TIMEOUT_MS = 120_000


def load_build_module(name: str):
    """build/<name>.py by path (build/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pychat_build_" + name, REPO / "build" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve = load_build_module("serve")


def copy_checkout(directory: Path) -> Path:
    """The engine's sources as build_site(sources=...) reads them, copied into `directory` for a test to change."""
    import shutil

    shutil.copytree(REPO / "pychat_wasm", directory / "pychat_wasm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, directory / name)
    return directory


# ---- the server ------------------------------------------------------------------------------------------

class RecordingHandler(serve.SiteHandler):
    """The product's handler, plus a request log and an optional cut of the next model download."""

    def send_head(self):
        self.server.log.append({"path": self.path, "range": self.headers.get("Range")})
        return super().send_head()

    def copyfile(self, source, outputfile):
        cut = self.server.cut_model_after
        if cut is None or not self.path.endswith(".gguf") or self.span_length <= cut:
            return super().copyfile(source, outputfile)
        self.server.cut_model_after = None  # only once
        outputfile.write(source.read(cut))
        outputfile.flush()
        self.close_connection = True
        raise ConnectionAbortedError("test server: connection cut after %d bytes" % cut)

    def log_message(self, format, *args):  # noqa: A002
        pass


class SiteServer:
    """The built site on 127.0.0.1 in a background thread, recording every request; stop() and start()
    take the whole server away and bring it back on the same port (the browser sees a dead network).
    `handler` is a serve.SiteHandler subclass (the benchmark adds its own mounts)."""

    def __init__(self, site: Path, handler=RecordingHandler):
        self.site = site
        self.handler = handler
        self.log: List[Dict[str, Optional[str]]] = []
        self.port = 0
        self.start()
        self.url = "http://127.0.0.1:%d/" % self.port

    def start(self) -> None:
        self.httpd = serve.make_server(self.site, self.port, self.handler)
        self.httpd.log = self.log
        self.httpd.cut_model_after = None
        self.httpd.handle_error = lambda request, address: None  # the cut connection is on purpose
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def model_requests(self, since: int = 0) -> List[Dict[str, Optional[str]]]:
        return [entry for entry in self.log[since:] if entry["path"].endswith(".gguf")]

    def downloads(self, since: int = 0) -> List[Dict[str, Optional[str]]]:
        """The model requests that are no fit check's read of the header (web/fit_check.js)."""
        return [entry for entry in self.model_requests(since) if not is_header_read(entry)]

    def cut_next_model_download(self, after_bytes: int) -> None:
        self.httpd.cut_model_after = after_bytes


def is_header_read(entry: Dict[str, Optional[str]]) -> bool:
    """A fit check's Range request for the first bytes of a model: bytes=0-N (a download asks bytes=N-)."""
    return bool(entry.get("range") and re.match(r"bytes=0-\d+$", entry["range"]))


# ---- tiny GGUF models --------------------------------------------------------------------------------------

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_level(text: str) -> str:
    """GPT-2's byte-to-printable-character spelling of `text` (a space becomes 'Ġ')."""
    from pychat_wasm.tokenizers.bpe import bytes_to_unicode

    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def write_tiny_gguf(path: Path, payload: str, arch: str = "llama", weight_type: str = "F32",
                    head_dim: int = 4, context_length: int = 256, then_stop: bool = False,
                    padding: int = 0) -> Path:
    """A one-layer byte-level BPE model that answers `payload` (one token) over and over, greedily, or once
    and then <|im_end|> with `then_stop`.

    Every layer weight is zero, so the residual stream is just the token embedding; the output head is the
    embedding (tied), and the payload's embedding row points the same way as every other row but ten times
    longer, so its logit wins after any token. With `then_stop` the payload's row also points along the last
    axis, and <|im_end|>'s row only along it, three times longer: after the payload that logit wins (300 to
    200). `arch`/`weight_type` make files the engine must reject; a large `head_dim` and `context_length`
    make a small file whose KV cache does not fit in memory.
    `padding` adds a metadata string of that many random hex digits: a bigger file whose every stretch
    differs, so bytes stored at a wrong offset cannot pass for the right ones.
    """
    import gguf
    from pychat_wasm.tokenizers.bpe import bytes_to_unicode

    dim = 8 if weight_type == "F32" else 256  # quantized rows are whole 256-weight blocks
    ffn, n_heads, n_kv = 2 * dim, 2, 1
    head_dim = max(head_dim, dim // n_heads)
    byte_tokens = [bytes_to_unicode()[b] for b in range(256)]  # every text can be encoded
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + byte_tokens + [byte_level(payload)]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    payload_id = len(tokens) - 1

    rng = np.random.default_rng(0)
    embedding = np.zeros((len(tokens), dim), np.float32)
    embedding[:, 0] = 1.0
    embedding[:, 1:] = rng.normal(0, 0.05, (len(tokens), dim - 1))
    embedding[payload_id] = 0
    embedding[payload_id, 0] = 10.0
    if then_stop:
        embedding[payload_id, -1] = 10.0
        embedding[2] = 0
        embedding[2, -1] = 30.0

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny payload model")
    writer.add_context_length(context_length)
    writer.add_embedding_length(dim)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([byte_level(" ") + " " + byte_level("a")])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    if padding:
        writer.add_string("pychat_test.padding", np.random.default_rng(padding).bytes((padding + 1) // 2).hex()[:padding])

    quant = gguf.GGMLQuantizationType[weight_type]

    def add(name: str, array: np.ndarray, matrix: bool = False) -> None:
        if matrix and weight_type != "F32":
            raw = np.zeros(gguf.quant_shape_to_byte_shape(array.shape, quant), np.uint8)
            writer.add_tensor(name, raw, raw_dtype=quant)
        else:
            writer.add_tensor(name, array.astype(np.float32))

    add("token_embd.weight", embedding)
    add("output_norm.weight", np.ones(dim))
    add("blk.0.attn_norm.weight", np.ones(dim))
    add("blk.0.ffn_norm.weight", np.ones(dim))
    add("blk.0.attn_q.weight", np.zeros((n_heads * head_dim, dim)), matrix=True)
    add("blk.0.attn_k.weight", np.zeros((n_kv * head_dim, dim)), matrix=True)
    add("blk.0.attn_v.weight", np.zeros((n_kv * head_dim, dim)), matrix=True)
    add("blk.0.attn_output.weight", np.zeros((dim, n_heads * head_dim)), matrix=True)
    add("blk.0.ffn_gate.weight", np.zeros((ffn, dim)), matrix=True)
    add("blk.0.ffn_up.weight", np.zeros((ffn, dim)), matrix=True)
    add("blk.0.ffn_down.weight", np.zeros((dim, ffn)), matrix=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---- page actions ------------------------------------------------------------------------------------------

POOL_SIZE = os.cpu_count() or 1  # the page's default: one worker per core the browser reports


def chatml_tokens(messages, generation_prompt=True):
    """Tokens of `messages` in the tiny model's ChatML with its byte-level vocabulary: one per special token,
    one per byte of everything else (the messages avoid " a", its only merge)."""
    per_message = [2 + len(("%s\n%s" % (m["role"], m["content"])).encode()) + 1 for m in messages]
    return sum(per_message) + (1 + len(b"assistant\n") if generation_prompt else 0)


def ready_status(model_name: str, workers: int = POOL_SIZE) -> str:
    """The status line once `model_name` is loaded into `workers` workers."""
    return "Ready: %s · %d worker%s" % (model_name, workers, "s" if workers > 1 else "")


def wait_ready(page, timeout: int = PAGE_TIMEOUT_MS) -> None:
    page.wait_for_selector("#status[data-phase=ready]", timeout=timeout)


def set_settings(page, **values) -> None:
    """Fill the sampling form: set_settings(page, temperature=0, max_tokens=8)."""
    for name, value in values.items():
        page.fill("#" + name.replace("_", "-"), "" if value is None else str(value))


def ask(page, text: str, timeout: int = ANSWER_TIMEOUT_MS):
    """Send `text` with Enter and wait for the streamed answer to finish; returns (answer, stats line)."""
    answers_before = page.locator(".message[data-role=assistant]").count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    page.wait_for_function(  # this answer's end (an earlier answer may have been cut off by an error)
        "n => (document.querySelectorAll('.message[data-role=assistant]')[n] || {dataset: {}}).dataset.done",
        arg=answers_before, timeout=timeout)
    answer = page.locator(".message[data-role=assistant]").nth(answers_before)
    return shown_messages(page, "assistant")[answers_before]["content"], answer.locator(".stats").text_content()


def shown_messages(page, role: Optional[str] = None) -> List[Dict[str, str]]:
    """The messages on the page [{role, content}] (of `role` only, if given), each with the text it shows as
    written (Markdown source) rather than as rendered."""
    return page.evaluate("""(role) => pychat.chat.view.messages.map((m) => ({role: m.root.dataset.role, content: m.text}))
                                        .filter((m) => !role || m.role === role)""", role)


# The conversation on the page as IndexedDB holds it: [{role, content}, ...].
SAVED_MESSAGES = """async () => {
  const saved = await pychat.conversations.get(pychat.conversation.id);
  return saved ? saved.messages.map(({role, content}) => ({role, content})) : [];
}"""


def saved_messages(page) -> List[Dict[str, str]]:
    return page.evaluate(SAVED_MESSAGES)


# The messages the last answer's prompt kept and the answer, as its "done" event reported them (budget.dropped:
# how many of the oldest messages the prompt left out; text: the whole answer) and the page saved them.
PROMPT_MESSAGES = """async () => {
  const saved = await pychat.conversations.get(pychat.conversation.id);
  return saved ? saved.messages.slice(saved.dropped || 0).map(({role, content}) => ({role, content})) : [];
}"""


def python_messages(page) -> List[Dict[str, str]]:
    """What Python's last answer used (Python keeps no conversation): the messages its prompt kept, then the
    answer, by the "done" event's count of dropped messages and whole answer."""
    return page.evaluate(PROMPT_MESSAGES)


def drop_files(page, selector: str, files: Dict[str, bytes]) -> None:
    """Drop files {name: bytes} on the element at `selector`, as dragging them from the desktop does."""
    transfer = page.evaluate_handle(
        "files => { const t = new DataTransfer();"
        " for (const [name, bytes] of files) t.items.add(new File([new Uint8Array(bytes)], name));"
        " return t; }", [[name, list(data)] for name, data in files.items()])
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@contextlib.contextmanager
def new_context(browser):
    """A browser context of its own (storage, caches, service worker: a first visit), closed afterwards."""
    context = browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


def alert_texts(page, kind: str) -> List[str]:
    """The texts of the alerts of `kind` ("error" | "notice") on the page, without their buttons."""
    return page.locator(".alert[data-kind=%s] > span" % kind).all_text_contents()


def chat_workers(page):
    """The page's chat workers in rank order (Playwright's handles: evaluate() runs code inside one)."""
    workers = [w for w in page.workers if w.url.endswith("/worker.js")]
    return sorted(workers, key=lambda w: w.evaluate("pool.rank"))


def chat_worker(page):
    """The first chat worker: the one whose events the page shows."""
    return chat_workers(page)[0]


def open_ready_page(context, url: str, init_script: str, **settings):
    """A new page of `context` with `init_script` installed, at `url`, ready to chat, with `settings` set."""
    page = context.new_page()
    page.add_init_script(init_script)
    page.goto(url)
    wait_ready(page)
    set_settings(page, **settings)
    return page


# ---- what the page stored ----------------------------------------------------------------------------------

# Every record of the page's model store with the sha256 of the bytes actually stored for it.
STORED_MODELS = """async () => {
  const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  const out = [];
  for (const record of await pychat.store.list()) {
    const bytes = await pychat.store.readAll(record);
    out.push({id: record.id, complete: record.complete, received: record.received, stored: bytes.byteLength,
              sha256: hex(await crypto.subtle.digest("SHA-256", bytes)), recorded_sha256: record.sha256});
  }
  return out;
}"""


def check_stored_models(page, files: Dict[str, bytes]) -> Dict[str, dict]:
    """Assert that every model the page stored is a prefix of its true file (`files`: id -> bytes), and a
    complete one all of it under its own sha256: never a corrupt copy. Returns the records by id."""
    import hashlib

    records = {r["id"]: r for r in page.evaluate(STORED_MODELS)}
    for model_id, record in records.items():
        true = files[model_id]
        assert record["stored"] == record["received"] <= len(true), record
        assert record["sha256"] == hashlib.sha256(true[:record["received"]]).hexdigest(), record
        if record["complete"]:
            assert record["received"] == len(true) and record["recorded_sha256"] == record["sha256"], record
    return records
