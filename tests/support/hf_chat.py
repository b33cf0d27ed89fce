"""transformers' rendering of a chat template given as text: the reference the tool-template tests compare our
prompts with. A tokenizer is built around the template (its tiny vocabulary does not matter), so no model is
downloaded; apply_chat_template then renders with transformers' own Jinja environment."""
from __future__ import annotations

from typing import Any, List, Optional

import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

BOS, EOS = "<s>", "</s>"


def hf_tokenizer(source: str, bos: str = BOS, eos: str = EOS) -> Any:
    """A transformers tokenizer carrying `source` as its chat template, with these BOS and EOS texts."""
    backend = Tokenizer(WordLevel({"<unk>": 0, bos: 1, eos: 2}, unk_token="<unk>"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                                unk_token="<unk>", chat_template=source)


def hf_render(source: str, messages: List[dict], tools: Optional[list], add_generation_prompt: bool = True,
              **extra: Any) -> str:
    """apply_chat_template's text of `messages` with `tools` (OpenAI's list, as transformers takes it)."""
    return hf_tokenizer(source).apply_chat_template(messages, tools=tools, tokenize=False,
                                                    add_generation_prompt=add_generation_prompt, **extra)
