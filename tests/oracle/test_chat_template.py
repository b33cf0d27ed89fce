"""Chat templates against transformers' own rendering, the sandbox, and the built-in fallbacks."""
from __future__ import annotations

import re

import pytest

from pychat_wasm.chat.template import CHATML_TEMPLATE, ChatTemplate, encode_chat
from pychat_wasm.errors import TemplateError
from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.tokenizers import load_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Écris «bonjour» 🙂\n\tcode"}],
]


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    gguf_file = GGUFFile.open(str(smollm2_path))
    return gguf_file, load_tokenizer(gguf_file)


@pytest.fixture(scope="module")
def gemma3(gemma3_path):
    gguf_file = GGUFFile.open(str(gemma3_path))
    return gguf_file, load_tokenizer(gguf_file)


@pytest.mark.slow
@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_file_template_renders_like_transformers(smollm2, hf_smollm2_tokenizer, messages, add_generation_prompt):
    gguf_file, tokenizer = smollm2
    ours = ChatTemplate.from_gguf(gguf_file, tokenizer)
    assert ours.builtin is None
    expected = hf_smollm2_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.render(messages, add_generation_prompt=add_generation_prompt) == expected


@pytest.mark.slow
def test_golden_prompt_ids(smollm2, hf_smollm2_tokenizer):
    """The golden prompt (transformers) is 42 ids, [1, 9690, 198, 2683, 359, 253, ...] ... [2, 198, 1, 520, 9531, 198]."""
    gguf_file, tokenizer = smollm2
    messages = CONVERSATIONS[0]
    ids = encode_chat(tokenizer, ChatTemplate.from_gguf(gguf_file, tokenizer).render(messages))
    assert len(ids) == 42
    assert ids[:6] == [1, 9690, 198, 2683, 359, 253] and ids[-6:] == [2, 198, 1, 520, 9531, 198]
    expected = hf_smollm2_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    assert ids == list(getattr(expected, "input_ids", expected))


def test_gemma_fallback_turn_format_and_single_bos(gemma3):
    gguf_file, tokenizer = gemma3
    template = ChatTemplate.from_gguf(gguf_file, tokenizer)
    assert template.builtin == "gemma"
    text = template.render(CONVERSATIONS[1])
    assert text == ("<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello.<end_of_turn>\n"
                    "<start_of_turn>user\nÉcris «bonjour» 🙂\n\tcode<end_of_turn>\n<start_of_turn>model\n")
    ids = encode_chat(tokenizer, text)
    assert tokenizer.add_bos and ids[0] == tokenizer.bos_id != ids[1]  # the template's BOS, not two
    assert ids[1] == tokenizer.encode("<start_of_turn>", add_special=False)[0] == 105


def test_encode_chat_adds_bos_when_template_does_not(gemma3):
    _, tokenizer = gemma3
    ids = encode_chat(tokenizer, "<start_of_turn>user\nHi<end_of_turn>\n")
    assert ids[:2] == [tokenizer.bos_id, 105]


def test_chatml_fallback_for_files_without_template(smollm2):
    gguf_file, tokenizer = smollm2

    class NoTemplate:
        metadata = {k: v for k, v in gguf_file.metadata.items() if k != "tokenizer.chat_template"}

    template = ChatTemplate.from_gguf(NoTemplate, tokenizer)
    assert template.builtin == "chatml" and template.source == CHATML_TEMPLATE
    assert template.render(CONVERSATIONS[0]) == (
        "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{% set _ = messages.append(1) %}",
    "{{ cycler.__init__.__globals__.os }}",
])
def test_sandbox_blocks_python_internals(source):
    with pytest.raises(TemplateError):
        ChatTemplate(source).render(CONVERSATIONS[0])


def test_raise_exception_becomes_template_error():
    template = ChatTemplate("{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}")
    with pytest.raises(TemplateError, match="system first"):
        template.render(CONVERSATIONS[0])


def test_syntax_error_is_template_error():
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


def test_helpers_real_templates_use():
    template = ChatTemplate("{{ strftime_now('%Y') }}|{{ messages[0] | tojson }}|{{ bos_token }}{{ eos_token }}|"
                            "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{% endfor %}"
                            "{{ tools | length if tools else 'none' }}", bos_token="<s>", eos_token="</s>")
    out = template.render([{"role": "user", "content": "é"}])
    year, as_json, special, tools = out.split("|")
    assert re.fullmatch(r"\d{4}", year)
    assert as_json == '{"role": "user", "content": "é"}'
    assert special == "<s></s>" and tools == "none"
    assert template.render([{"role": "user", "content": "x"}], tools=[{"name": "f"}]).endswith("|1")
