"""Training a chat model from scratch: presets, the two phases, one optimizer step at a time.

    pretrain   every token of each document (factual sentences), next-token prediction
    chat       conversations in ChatML; the loss counts the assistant's answers only

`Trainer.step()` runs one AdamW step (gradient accumulation over micro-batches, global-norm clipping,
warm-up + cosine learning rate per phase) and returns a record for progress displays; the command line
and the browser worker both drive it. Everything a step uses follows from (seed, step): the batch of
step s is fixed by the seed's shuffles, so a run resumed from a checkpoint (checkpoint.py) continues to
exactly the numbers an uninterrupted run gives.

    >>> trainer = Trainer.create(TrainSettings(preset="quick", steps=4), builtin_corpus())  # doctest: +SKIP
    >>> while not trainer.finished: print(trainer.step()["loss"])                          # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np

from ..chat_template import CHATML_TEMPLATE, ChatTemplate
from ..errors import InvalidSettingError, TrainingDataError
from ..gguf_writer import GGUFWriter
from ..model import ModelConfig
from ..tokenizer_bpe import BPETokenizer
from . import transformer
from .bpe import BPEVocabulary, gguf_tokenizer_metadata, train_bpe
from .export import gguf_writer_for
from .data import Conversation, Example, TrainingData, encode_conversation, encode_document, split_validation
from .optim import AdamW, clip_grad_norm, learning_rate


@dataclasses.dataclass(frozen=True)
class Preset:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    seq_len: int  # longest training sequence; longer examples are cut
    batch_size: int  # sequences per micro-batch
    pretrain_steps: int
    chat_steps: int
    pretrain_lr: float
    chat_lr: float


PRESETS = {
    # sized for the browser (numpy without BLAS): quick in about 2 minutes, tiny in about 15
    "quick": Preset(64, 2, 4, 2, 192, 512, 96, 16, 120, 240, 3e-3, 2e-3),
    "tiny": Preset(128, 4, 4, 2, 384, 1024, 96, 16, 300, 600, 2e-3, 2e-3),
    # natively only: a larger model for larger data
    "small": Preset(256, 6, 8, 4, 768, 2048, 128, 16, 2000, 3000, 1e-3, 5e-4),
}
DEFAULT_PRESET = "tiny"
WARMUP_FRACTION = 0.05
LENGTH_GROUP = 8  # micro-batches whose examples are sorted by length together (less padding)
CHAT_TEMPLATE = CHATML_TEMPLATE
END_OF_TEXT, END_OF_TURN = "<|endoftext|>", "<|im_end|>"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    preset: str = DEFAULT_PRESET
    steps: Optional[int] = None  # total optimizer steps, split between the phases as the preset splits them
    seed: int = 0
    grad_accum: int = 1  # micro-batches per optimizer step
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    eval_every: int = 100  # steps between validation runs (and at the end of each phase)
    name: str = "pychat-wasm-tiny"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InvalidSettingError("unknown preset %r; choose one of %s" % (self.preset, ", ".join(PRESETS)))
        if self.steps is not None and self.steps < 1:
            raise InvalidSettingError("steps must be at least 1, got %d" % self.steps)
        if self.grad_accum < 1:
            raise InvalidSettingError("grad_accum must be at least 1, got %d" % self.grad_accum)

    @property
    def spec(self) -> Preset:
        return PRESETS[self.preset]


class Phase(NamedTuple):
    name: str
    examples: List[Example]
    validation: List[Example]
    steps: int
    lr: float


def chat_template() -> ChatTemplate:
    return ChatTemplate(CHAT_TEMPLATE, bos_token="", eos_token=END_OF_TURN)


def _phase_steps(settings: TrainSettings, has_documents: bool, has_chats: bool) -> List[int]:
    spec = settings.spec
    wanted = [spec.pretrain_steps if has_documents else 0, spec.chat_steps if has_chats else 0]
    if settings.steps is None:
        return wanted
    pretrain = int(round(settings.steps * wanted[0] / max(1, sum(wanted))))
    return [pretrain, settings.steps - pretrain]


class Trainer:
    def __init__(self, settings: TrainSettings, data: TrainingData, vocabulary: BPEVocabulary,
                 params: Optional[transformer.Params] = None):
        if not data.documents and not data.conversations:
            raise TrainingDataError("there is nothing to train on")
        self.settings, self.data, self.vocabulary = settings, data, vocabulary
        self.tokenizer_metadata = gguf_tokenizer_metadata(vocabulary)
        self.tokenizer = BPETokenizer(self.tokenizer_metadata)
        self.template = chat_template()
        spec = settings.spec
        self.config: ModelConfig = transformer.llama_config(
            spec.dim, spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.ffn_dim, len(vocabulary.tokens),
            context_length=max(256, spec.seq_len))
        self.phases = self._phases()
        self.total_steps = sum(p.steps for p in self.phases)
        self.params = params if params is not None else transformer.init_params(self.config, settings.seed)
        self.optimizer = AdamW(weight_decay=settings.weight_decay)
        self.step_count = 0
        self.log: List[Dict[str, Any]] = []
        self._orders: Dict[tuple, np.ndarray] = {}

    @classmethod
    def create(cls, settings: TrainSettings, data: TrainingData) -> "Trainer":
        """A new run: trains the tokenizer on the data, then initialises the model from the seed."""
        template = chat_template()
        texts = list(data.documents) + [template.render(c, add_generation_prompt=False) for c in data.conversations]
        vocabulary = train_bpe(texts, settings.spec.vocab_size)
        return cls(settings, data, vocabulary)

    def _phases(self) -> List[Phase]:
        """Hold out a validation split of each kind of data, encode, and plan the steps of each phase."""
        docs, held_docs = split_validation(self.data.documents)
        chats, held_chats = split_validation(self.data.conversations)
        self.trained_on, self.held_out = TrainingData(docs, chats), TrainingData(held_docs, held_chats)
        spec = self.settings.spec
        steps = _phase_steps(self.settings, bool(docs), bool(chats))
        phases = [Phase("pretrain", self._encode_documents(docs), self._encode_documents(held_docs), steps[0],
                        spec.pretrain_lr),
                  Phase("chat", self._encode_chats(chats), self._encode_chats(held_chats), steps[1], spec.chat_lr)]
        if chats and not phases[1].examples:
            raise TrainingDataError("no assistant answer fits within %d tokens" % spec.seq_len)
        return [p for p in phases if p.steps > 0 and p.examples]

    def _encode_documents(self, documents: List[str]) -> List[Example]:
        cut = self.settings.spec.seq_len + 1  # inputs and targets overlap by all but one token
        end_of_text = self.tokenizer.token_ids[END_OF_TEXT]
        examples = [encode_document(self.tokenizer, d, end_of_text) for d in documents]
        return [Example(e.ids[:cut], e.mask[:cut]) for e in examples]

    def _encode_chats(self, conversations: List[Conversation]) -> List[Example]:
        cut = self.settings.spec.seq_len + 1
        examples = [encode_conversation(self.tokenizer, self.template, c) for c in conversations]
        return [Example(e.ids[:cut], e.mask[:cut]) for e in examples if sum(e.mask[1:cut])]

    # ---- where the run stands -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.step_count >= self.total_steps

    def phase_at(self, step: int) -> tuple:
        """(phase, step within the phase) of a global step."""
        for phase in self.phases:
            if step < phase.steps:
                return phase, step
            step -= phase.steps
        raise InvalidSettingError("step %d is past the end of training (%d steps)" % (step, self.total_steps))

    def data_fingerprint(self) -> str:
        """sha256 of every encoded example and the step plan: a checkpoint resumes only the same run."""
        h = hashlib.sha256()
        for phase in self.phases:
            h.update(json.dumps([phase.name, phase.steps, phase.lr, [e.ids for e in phase.examples],
                                 [e.mask for e in phase.examples]]).encode())
        return h.hexdigest()

    def gguf_writer(self, ggml_type: str = "F32") -> GGUFWriter:
        """The model as it stands, with its tokenizer and chat template: .write(path) or .to_bytes()."""
        metadata = dict(self.tokenizer_metadata)
        metadata["tokenizer.chat_template"] = CHAT_TEMPLATE
        return gguf_writer_for(self.config, self.params, metadata, self.settings.name, ggml_type)

    # ---- training -------------------------------------------------------------------------------------------

    def batch(self, phase: Phase, micro_batch: int) -> "Batch":
        """The Batch of a phase's micro-batch number: a pure function of the seed.

        Epoch e visits the examples in the order of a permutation seeded by (seed, phase, e). Each run of
        LENGTH_GROUP micro-batches is sorted by length before it is cut, so that a batch holds examples
        of similar length; sequences are padded at the end, and padding is masked out of the loss.
        """
        n, size = len(phase.examples), self.settings.spec.batch_size
        group = micro_batch // LENGTH_GROUP
        stream = []
        for i in range(group * LENGTH_GROUP * size, (group + 1) * LENGTH_GROUP * size):
            epoch, position = divmod(i, n)
            stream.append(phase.examples[self._epoch_order(phase, epoch)[position]])
        stream.sort(key=lambda e: len(e.ids))  # stable: ties keep the shuffled order
        first = (micro_batch % LENGTH_GROUP) * size
        return pad_batch(stream[first:first + size], self.tokenizer.eos_id)

    def _epoch_order(self, phase: Phase, epoch: int) -> np.ndarray:
        key = (phase.name, epoch)
        if key not in self._orders:
            phase_id = [p.name for p in self.phases].index(phase.name)
            self._orders = {k: v for k, v in self._orders.items() if k[1] >= epoch - 1}  # a group spans 2 at most
            rng = np.random.default_rng([self.settings.seed, phase_id, epoch])
            self._orders[key] = rng.permutation(len(phase.examples))
        return self._orders[key]

    def step(self) -> Dict[str, Any]:
        """One optimizer step; returns {"step", "phase", "loss", "lr", "grad_norm", "tokens", "seconds"}."""
        started = time.perf_counter()
        phase, phase_step = self.phase_at(self.step_count)
        accum = self.settings.grad_accum
        grads: Dict[str, np.ndarray] = {}
        loss_sum, tokens = 0.0, 0
        for j in range(accum):
            batch = self.batch(phase, phase_step * accum + j)
            loss, micro = transformer.loss_and_grads(self.config, self.params, batch.ids, batch.targets, batch.mask)
            loss_sum += loss
            tokens += batch.tokens
            for name, g in micro.items():
                grads[name] = g if name not in grads else grads[name] + g
        if accum > 1:
            grads = {name: g / np.float32(accum) for name, g in grads.items()}
        grad_norm = clip_grad_norm(grads, self.settings.clip_norm)
        warmup = max(1, int(phase.steps * WARMUP_FRACTION))
        lr = learning_rate(phase_step, phase.steps, phase.lr, warmup)
        self.optimizer.step(self.params, grads, lr)
        self.step_count += 1
        record = {"step": self.step_count, "phase": phase.name, "loss": loss_sum / accum, "lr": lr,
                  "grad_norm": grad_norm, "tokens": tokens, "seconds": time.perf_counter() - started}
        self.log.append(record)
        end_of_phase = phase_step + 1 == phase.steps
        if end_of_phase or self.step_count % self.settings.eval_every == 0:
            record["validation"] = self.validate(phase)
        return record

    def validate(self, phase: Phase) -> Optional[Dict[str, Any]]:
        """Loss and perplexity on the phase's held-out examples (None if it holds none out)."""
        if not phase.validation:
            return None
        total, count = 0.0, 0.0
        size = self.settings.spec.batch_size
        for i in range(0, len(phase.validation), size):
            batch = pad_batch(phase.validation[i:i + size], self.tokenizer.eos_id)
            s, c = transformer.loss_only(self.config, self.params, batch.ids, batch.targets, batch.mask)
            total, count = total + s, count + c
        loss = total / max(count, 1.0)
        result = {"step": self.step_count, "phase": phase.name, "loss": loss, "perplexity": math.exp(min(loss, 50))}
        self.log.append({"validation": result})
        return result


class Batch(NamedTuple):
    ids: np.ndarray  # [B, T] inputs
    targets: np.ndarray  # [B, T] the next token of each input
    mask: np.ndarray  # [B, T] 1.0 where the loss counts the target
    tokens: int  # input positions that are not padding


def pad_batch(examples: List[Example], pad_id: int) -> Batch:
    """Inputs and targets [B, T], T the longest example less one; shorter ones are padded at the end.

    >>> b = pad_batch([Example([5, 6, 7], [1, 1, 1]), Example([8, 9], [0, 1])], pad_id=2)
    >>> b.ids.tolist(), b.targets.tolist(), b.mask.tolist(), b.tokens
    ([[5, 6], [8, 9]], [[6, 7], [9, 2]], [[1.0, 1.0], [1.0, 0.0]], 3)
    """
    length = max(len(e.ids) for e in examples) - 1
    ids = np.full((len(examples), length + 1), pad_id, dtype=np.int64)
    mask = np.zeros((len(examples), length + 1), dtype=np.float32)
    for row, e in enumerate(examples):
        ids[row, :len(e.ids)] = e.ids
        mask[row, :len(e.mask)] = e.mask
    tokens = sum(len(e.ids) - 1 for e in examples)
    return Batch(ids[:, :-1], ids[:, 1:], mask[:, 1:], tokens)  # the mask belongs to the target token
