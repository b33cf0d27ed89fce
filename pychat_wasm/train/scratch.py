"""Training a chat model from scratch: presets, the tokenizer, pretraining, then instruction tuning.

    pretrain   every token of each document (factual sentences): next-token prediction
    chat       conversations in ChatML; the loss counts the assistant's answers only

A new run trains a byte-level BPE tokenizer on its data (bpe.py), initialises a llama model from the seed
(transformer.py) and steps through both phases with the shared loop (run.py). The result is an ordinary
GGUF with tokenizer, merges and ChatML template (export.py).

    >>> run = ScratchRun.create(TrainSettings(preset="quick", steps=4), builtin_corpus())  # doctest: +SKIP
    >>> while not run.finished: print(run.step()["loss"])                                 # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np

from ..chat.template import CHATML_TEMPLATE, ChatTemplate
from ..errors import CheckpointError, InvalidSettingError, TrainingDataError
from ..gguf.writer import GGUFWriter
from ..tokenizers.bpe import BPETokenizer
from . import transformer
from .bpe import BPEVocabulary, gguf_tokenizer_metadata, train_bpe
from .data import TrainingData, split_validation
from .export import gguf_writer_for
from .run import LoopSettings, Phase, TrainingRun


@dataclasses.dataclass(frozen=True)
class Preset:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    seq_len: int
    batch_size: int
    pretrain_steps: int
    chat_steps: int
    pretrain_lr: float
    chat_lr: float
    max_examples: Optional[int] = None  # train on the first N documents and N conversations only


PRESETS = {
    # quick and tiny are sized for the browser (numpy without BLAS; a chat step costs about twice a pretraining
    # step): there quick trains in about a minute and tiny in about 7 on 2 cores. quick shows a model learning:
    # a slice of the data, a small model.
    "quick": Preset(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192, vocab_size=512, seq_len=96,
                    batch_size=16, pretrain_steps=80, chat_steps=320, pretrain_lr=3e-3, chat_lr=3e-3,
                    max_examples=64),
    "tiny": Preset(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, vocab_size=1024, seq_len=96,
                   batch_size=16, pretrain_steps=200, chat_steps=450, pretrain_lr=2e-3, chat_lr=2e-3),
    # natively only: a larger model for larger data
    "small": Preset(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_dim=768, vocab_size=2048, seq_len=128,
                    batch_size=16, pretrain_steps=2000, chat_steps=3000, pretrain_lr=1e-3, chat_lr=5e-4),
}
DEFAULT_PRESET = "tiny"
END_OF_TEXT, END_OF_TURN = "<|endoftext|>", "<|im_end|>"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    preset: str = DEFAULT_PRESET
    steps: Optional[int] = None  # total optimizer steps, split between the phases as the preset splits them
    seed: int = 0
    grad_accum: int = 1
    name: str = "pychat-wasm-tiny"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InvalidSettingError("unknown preset %r; choose one of %s" % (self.preset, ", ".join(PRESETS)))
        if self.steps is not None and self.steps < 1:
            raise InvalidSettingError("steps must be at least 1, got %d" % self.steps)

    @property
    def spec(self) -> Preset:
        return PRESETS[self.preset]

    def loop(self) -> LoopSettings:
        return LoopSettings(seed=self.seed, batch_size=self.spec.batch_size, grad_accum=self.grad_accum,
                            seq_len=self.spec.seq_len)


def chat_template() -> ChatTemplate:
    return ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token=END_OF_TURN)


def _phase_steps(settings: TrainSettings, has_documents: bool, has_chats: bool) -> List[int]:
    spec = settings.spec
    wanted = [spec.pretrain_steps if has_documents else 0, spec.chat_steps if has_chats else 0]
    if settings.steps is None:
        return wanted
    pretrain = int(round(settings.steps * wanted[0] / max(1, sum(wanted))))
    return [pretrain, settings.steps - pretrain]


class ScratchRun(TrainingRun):
    kind = "scratch"

    def __init__(self, settings: TrainSettings, data: TrainingData, vocabulary: BPEVocabulary,
                 params: Optional[transformer.Params] = None):
        if not data.documents and not data.conversations:
            raise TrainingDataError("there is nothing to train on")
        limit = settings.spec.max_examples
        data = TrainingData(data.documents[:limit], data.conversations[:limit])
        self.settings, self.data, self.vocabulary = settings, data, vocabulary
        self.tokenizer_metadata = gguf_tokenizer_metadata(vocabulary)
        tokenizer = BPETokenizer(self.tokenizer_metadata)
        spec = settings.spec
        config = transformer.llama_config(dim=spec.dim, n_layers=spec.n_layers, n_heads=spec.n_heads,
                                          n_kv_heads=spec.n_kv_heads, ffn_dim=spec.ffn_dim,
                                          vocab_size=len(vocabulary.tokens), context_length=max(256, spec.seq_len))
        if params is None:
            params = transformer.init_params(config, settings.seed)
        super().__init__(settings.loop(), config, params, tokenizer, chat_template())
        self.phases = self._phases()

    @classmethod
    def create(cls, settings: TrainSettings, data: TrainingData) -> "ScratchRun":
        """A new run: trains the tokenizer on the data, then initialises the model from the seed."""
        template = chat_template()
        limit = settings.spec.max_examples
        data = TrainingData(data.documents[:limit], data.conversations[:limit])
        texts = list(data.documents) + [template.render(c, add_generation_prompt=False) for c in data.conversations]
        return cls(settings, data, train_bpe(texts, settings.spec.vocab_size))

    def _phases(self) -> List[Phase]:
        """Hold out a validation split of each kind of data, encode, and plan the steps of each phase."""
        docs, held_docs = split_validation(self.data.documents)
        chats, held_chats = split_validation(self.data.conversations)
        self.trained_on, self.held_out = TrainingData(docs, chats), TrainingData(held_docs, held_chats)
        spec = self.settings.spec
        steps = _phase_steps(self.settings, bool(docs), bool(chats))
        end_of_text = self.tokenizer.token_ids[END_OF_TEXT]
        phases = [Phase("pretrain", self.encode_documents(docs, end_of_text),
                        self.encode_documents(held_docs, end_of_text), steps[0], spec.pretrain_lr),
                  Phase("chat", self.encode_chats(chats), self.encode_chats(held_chats), steps[1], spec.chat_lr)]
        if chats and not phases[1].examples:
            raise TrainingDataError("no assistant answer fits within %d tokens" % spec.seq_len)
        return [p for p in phases if p.steps > 0 and p.examples]

    def gguf_writer(self, ggml_type: str = "F32") -> GGUFWriter:
        metadata = dict(self.tokenizer_metadata)
        metadata["tokenizer.chat_template"] = CHATML_TEMPLATE
        return gguf_writer_for(self.config, self.params, metadata, self.settings.name, ggml_type)

    def checkpoint_params(self) -> Dict[str, np.ndarray]:
        return self.params

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {"settings": dataclasses.asdict(self.settings), "vocabulary": self.vocabulary._asdict()}

    @classmethod
    def from_checkpoint(cls, extra: Dict[str, Any], params: Dict[str, np.ndarray], data: TrainingData) -> "ScratchRun":
        try:
            settings, vocabulary = TrainSettings(**extra["settings"]), BPEVocabulary(**extra["vocabulary"])
        except (KeyError, TypeError):
            raise CheckpointError("the checkpoint does not say which run it belongs to: it is damaged or not "
                                  "from pychat-wasm train") from None
        return cls(settings, data, vocabulary, params)
