"""End to end: LoRA adapters in the page (web/adapters.js) on the default model, SmolLM2, split across the page's
chat workers.

An adapter file is written here natively (pychat_wasm.model.lora's writer, on random A and B big enough to change
the greedy answer); the reference for what it does is the native engine with the same adapter,
LLM(path, lora=[...]), whose application tests/oracle/test_lora_adapter.py checks against PEFT and llama.cpp.
The tests go in order on one page: the file added and listed under SmolLM2, applied, removed, applied again,
kept over a reload without network, and another base's adapter refused. A test that needs an earlier one's
state gets there itself, so each also runs alone with -k. "Without reloading the base" is checked twice: the
page sends the workers no "load" request, and each worker's model keeps the very weight arrays it loaded.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from e2e_helpers import (GREEDY, ask, drop_files, page_fixture, reloaded_offline, set_settings, wait_ready,
                         worker_states)
from texts import GOLDEN_QUESTION
from tiny_models import write_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BASE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_ID = "default/" + BASE
ADAPTER = "noisy.lora.gguf"
ADAPTER_ID = "adapter/%s/%s" % (BASE_ID, ADAPTER)
OTHER = "other-base.lora.gguf"
RANK, SPREAD = 4, 0.35  # B's entries: N(0, SPREAD); the greedy answer changes ("The answer is: ...")

# Every request the page sends its chat workers from now on, by type, in window.__requests (to the pool in use).
REQUEST_RECORDER = """() => {
  const pool = pychat.python;
  if (!pool.recorded) {
    const send = pool.request.bind(pool);
    pool.request = (type, ...rest) => { window.__requests.push(type); return send(type, ...rest); };
    pool.recorded = true;
  }
  window.__requests = [];
}"""


def random_adapter(base_path, path, arch_base=None):
    """A rank-RANK adapter of SmolLM2's attn_v and ffn_down with random A and B, recording `arch_base` (default:
    SmolLM2 itself) as the base it was made for."""
    from pychat_wasm.gguf.reader import GGUFFile
    from pychat_wasm.model.lora import adapter_writer

    base = GGUFFile.open(str(base_path))
    rng = np.random.default_rng(0)
    pairs = {}
    for name, info in base.tensors.items():
        if name.endswith(("attn_v.weight", "ffn_down.weight")):
            rows, columns = info.shape
            pairs[name] = (rng.standard_normal((RANK, columns)).astype(np.float32) / np.sqrt(columns),  # A [r, in]
                           rng.standard_normal((rows, RANK)).astype(np.float32) * SPREAD)  # B [out, r]
    recorded = GGUFFile.open(str(arch_base)) if arch_base else base
    adapter_writer(recorded, RANK, pairs, path.name).write(str(path))  # alpha = rank: B @ A as it is
    return path


@pytest.fixture(scope="module")
def adapters(smollm2_path, tmp_path_factory):
    """{"noisy": SmolLM2's adapter, "other": the same tensors recorded as made for a tiny llama model}."""
    folder = tmp_path_factory.mktemp("adapters")
    tiny = write_tiny_model(folder / "tiny.gguf", "llama", chat=True)
    return {"noisy": random_adapter(smollm2_path, folder / ADAPTER),
            "other": random_adapter(smollm2_path, folder / OTHER, arch_base=tiny)}


@pytest.fixture(scope="module")
def native(smollm2_path, adapters):
    """The native engine's greedy answers to GOLDEN_QUESTION: {"base", "adapted"}."""
    from pychat_wasm import LLM

    settings = dict(temperature=GREEDY["temperature"], repeat_penalty=GREEDY["repeat_penalty"],
                    max_tokens=GREEDY["max_tokens"])
    messages = [{"role": "user", "content": GOLDEN_QUESTION}]

    def answer(llm):
        return llm.create_chat_completion(messages, **settings)["choices"][0]["message"]["content"]

    answers = {"base": answer(LLM(str(smollm2_path))),
               "adapted": answer(LLM(str(smollm2_path), lora=[str(adapters["noisy"])]))}
    assert answers["adapted"] != answers["base"], answers  # the adapter is noticeable
    return answers


page = page_fixture("server", "", **GREEDY)


def golden_answer(page) -> str:
    page.click("#new-chat")
    return ask(page, GOLDEN_QUESTION)[0]


def adapter_item(page, name):
    """The adapter's entry in the model list, under SmolLM2's entry."""
    return page.locator("#models > li", has_text=BASE).locator(".adapters > li", has_text=name)


def applied_box(page, name=ADAPTER):
    return page.get_by_role("checkbox", name="Apply adapter " + name)


def wait_applied(page, applied: bool):
    page.wait_for_selector("#models li[data-id='%s'][data-applied=%s]" % (ADAPTER_ID, str(applied).lower()))
    wait_ready(page)


def start_recording(page):
    page.evaluate(REQUEST_RECORDER)
    return worker_states(page)


def ensure_added(page, adapters):
    if not page.locator("#models li[data-id='%s']" % ADAPTER_ID).count():
        page.set_input_files("#model-file", str(adapters["noisy"]))
        wait_applied(page, True)


def test_an_added_adapter_is_listed_under_its_base_and_applied_without_a_reload(page, adapters, native):
    assert golden_answer(page) == native["base"]
    weights = [state[0] for state in start_recording(page)]
    page.set_input_files("#model-file", str(adapters["noisy"]))
    wait_applied(page, True)
    entry = adapter_item(page, ADAPTER).text_content()
    assert entry.startswith(ADAPTER + "LoRA adapter · ") and "applied" in entry, entry
    assert applied_box(page).is_checked() and applied_box(page).is_enabled()
    assert golden_answer(page) == native["adapted"]
    assert "load" not in page.evaluate("__requests")
    assert page.evaluate("__requests").count("applyLora") == 1
    assert worker_states(page) == [(w, [ADAPTER]) for w in weights]  # every worker: same weights, the adapter


def test_removing_the_adapter_gives_the_base_answer_again(page, adapters, native):
    ensure_added(page, adapters)
    weights = [state[0] for state in start_recording(page)]
    applied_box(page).uncheck()
    wait_applied(page, False)
    assert not applied_box(page).is_checked()
    assert golden_answer(page) == native["base"]
    assert worker_states(page) == [(w, []) for w in weights]
    assert page.evaluate("__requests").count("removeLora") == 1 and "load" not in page.evaluate("__requests")
    assert adapter_item(page, ADAPTER).count() == 1  # removed from the model, still in the list


def test_an_applied_adapter_is_applied_again_after_a_reload_without_network(page, adapters, native, server):
    ensure_added(page, adapters)
    if not applied_box(page).is_checked():
        applied_box(page).check()
        wait_applied(page, True)
    with reloaded_offline(page, server):
        wait_applied(page, True)
        assert applied_box(page).is_checked()
        assert all(names == [ADAPTER] for _, names in worker_states(page))
        set_settings(page, **GREEDY)
        assert golden_answer(page) == native["adapted"]


def test_an_adapter_for_another_base_is_refused_with_both_names_and_changes_nothing(page, adapters, native):
    ensure_added(page, adapters)
    before = worker_states(page)
    models = page.text_content("#models")
    drop_files(page, "#drop-zone", {OTHER: adapters["other"].read_bytes()})
    alert = page.locator(".alert[data-kind=error] > span", has_text=OTHER)
    alert.wait_for()
    wait_ready(page)
    message = alert.text_content()
    assert message.startswith("The adapter %s was refused: %s was made for tiny-random-llama (sha256 " % (OTHER, OTHER))
    assert ("not for %s (sha256 " % BASE) in message, message
    assert worker_states(page) == before and page.text_content("#models") == models
    assert page.evaluate("async (id) => Boolean(await pychat.store.get(id))", "adapter/%s/%s" % (BASE_ID, OTHER)) is False


def test_a_deleted_adapter_leaves_the_list_and_the_model(page, adapters):
    ensure_added(page, adapters)
    weights = [state[0] for state in worker_states(page)]
    page.get_by_role("button", name="Delete adapter " + ADAPTER).click()
    page.wait_for_selector("#models li[data-id='%s']" % ADAPTER_ID, state="detached")
    wait_ready(page)
    assert worker_states(page) == [(w, []) for w in weights]
    assert page.evaluate("async (id) => Boolean(await pychat.store.get(id))", ADAPTER_ID) is False
