"""The training loop both kinds of training share: phases, batches, one optimizer step, validation.

A run is a list of phases, each a set of encoded examples trained for a number of steps at a peak learning
rate. `TrainingRun.step()` runs one AdamW step (gradient accumulation over micro-batches, global-norm
clipping, warm-up + cosine learning rate per phase) and returns a record for progress displays; the
command line and the browser worker both drive it one step at a time. Everything a step uses follows
from (seed, step): the batch of step s is fixed by the seed's shuffles, so a run resumed from a
checkpoint (checkpoint.py) continues to exactly the numbers an uninterrupted run gives.

Subclasses say what is trained from what: scratch.py (a new model and tokenizer, pretraining then chat)
and finetune.py (LoRA adapters or all weights of a GGUF model, on chats).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Any, Dict, List, NamedTuple, Optional, Set

import numpy as np

from ..errors import InvalidSettingError
from ..gguf.writer import GGUFWriter
from ..model.config import ModelConfig
from . import transformer
from .batches import Batch, make_batch
from .data import Conversation, Example, encode_conversation, encode_document
from .optim import AdamW, clip_grad_norm, learning_rate

WARMUP_FRACTION = 0.05
LENGTH_GROUP = 8  # micro-batches whose examples are sorted by length together (less padding)


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """How every run steps, whatever it trains."""

    seed: int = 0
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 96  # longest training sequence; longer examples are cut
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    eval_every: int = 100  # steps between validation runs (and at the end of each phase)

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "seq_len", "eval_every"):
            if getattr(self, name) < 1:
                raise InvalidSettingError("%s must be at least 1, got %r" % (name, getattr(self, name)))


class Phase(NamedTuple):
    name: str
    examples: List[Example]
    validation: List[Example]
    steps: int
    lr: float


class TrainingRun:
    """State of one run: model, optimizer, position, log. Subclasses build it and export it."""

    kind = ""  # "scratch" or "finetune": what a checkpoint was made by
    pack = False  # micro-batches packed over their examples' shared prefix (batches.make_batch) where it saves

    def __init__(self, loop: LoopSettings, config: ModelConfig, params: transformer.Params, tokenizer: Any,
                 template: Any, trainable: Optional[Set[str]] = None, lora_scale: float = 1.0):
        self.loop, self.config, self.params = loop, config, params
        self.tokenizer, self.template = tokenizer, template
        self.trainable, self.lora_scale = trainable, lora_scale  # trainable None: every parameter
        self.phases: List[Phase] = []
        self.optimizer = AdamW(weight_decay=loop.weight_decay)
        self.step_count = 0
        self.log: List[Dict[str, Any]] = []
        self._orders: Dict[tuple, np.ndarray] = {}

    # ---- data ----------------------------------------------------------------------------------------------

    def encode_documents(self, documents: List[str], end_id: int) -> List[Example]:
        cut = self.loop.seq_len + 1  # inputs and targets overlap by all but one token
        return [Example(e.ids[:cut], e.mask[:cut]) for e in
                (encode_document(self.tokenizer, d, end_id) for d in documents)]

    def encode_chats(self, conversations: List[Conversation]) -> List[Example]:
        """Encoded conversations cut to seq_len; those left without an answer token are dropped."""
        cut = self.loop.seq_len + 1
        examples = (encode_conversation(self.tokenizer, self.template, c) for c in conversations)
        return [Example(e.ids[:cut], e.mask[:cut]) for e in examples if sum(e.mask[1:cut])]

    # ---- where the run stands -------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

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

    def fingerprint(self) -> str:
        """sha256 of the step plan and every encoded example: a checkpoint resumes only the same run."""
        h = hashlib.sha256(json.dumps([self.kind, dataclasses.asdict(self.loop)]).encode())
        for phase in self.phases:
            h.update(json.dumps([phase.name, phase.steps, phase.lr, [e.ids for e in phase.examples],
                                 [e.mask for e in phase.examples]]).encode())
        return h.hexdigest()

    # ---- training -------------------------------------------------------------------------------------------

    def batch(self, phase: Phase, micro_batch: int) -> Batch:
        """The Batch of a phase's micro-batch number: a pure function of the seed.

        Epoch e visits the examples in the order of a permutation seeded by (seed, phase, e). Each run of
        LENGTH_GROUP micro-batches is sorted by length before it is cut, so that a batch holds examples
        of similar length; sequences are padded at the end (padding is masked out of the loss), or with `pack`
        the batch is packed over its examples' shared prefix (batches.make_batch).
        """
        n, size = len(phase.examples), self.loop.batch_size
        group = micro_batch // LENGTH_GROUP
        stream = []
        for i in range(group * LENGTH_GROUP * size, (group + 1) * LENGTH_GROUP * size):
            epoch, position = divmod(i, n)
            stream.append(phase.examples[self._epoch_order(phase, epoch)[position]])
        stream.sort(key=lambda e: len(e.ids))  # stable: ties keep the shuffled order
        first = (micro_batch % LENGTH_GROUP) * size
        return make_batch(stream[first:first + size], self.tokenizer.eos_id, self.pack)

    def _epoch_order(self, phase: Phase, epoch: int) -> np.ndarray:
        key = (phase.name, epoch)
        if key not in self._orders:
            phase_id = [p.name for p in self.phases].index(phase.name)
            self._orders = {k: v for k, v in self._orders.items() if k[1] >= epoch - 1}  # recent epochs only
            rng = np.random.default_rng([self.loop.seed, phase_id, epoch])
            self._orders[key] = rng.permutation(len(phase.examples))
        return self._orders[key]

    def step(self) -> Dict[str, Any]:
        """One optimizer step; returns {"step", "phase", "loss", "lr", "grad_norm", "tokens", "seconds"}
        and, at validation steps, "validation": {"loss", "perplexity", ...}."""
        started = time.perf_counter()
        phase, phase_step = self.phase_at(self.step_count)
        accum = self.loop.grad_accum
        grads: Dict[str, np.ndarray] = {}
        loss_sum, tokens = 0.0, 0
        for j in range(accum):
            batch = self.batch(phase, phase_step * accum + j)
            loss, micro = transformer.loss_and_grads(self.config, self.params, batch.ids, batch.targets, batch.mask,
                                                     self.lora_scale, self.trainable, batch.layout)
            loss_sum += loss
            tokens += batch.tokens
            for name, g in micro.items():
                grads[name] = g if name not in grads else grads[name] + g
        if accum > 1:
            grads = {name: g / np.float32(accum) for name, g in grads.items()}
        grad_norm = clip_grad_norm(grads, self.loop.clip_norm)
        lr = learning_rate(phase_step, phase.steps, phase.lr, max(1, int(phase.steps * WARMUP_FRACTION)))
        self.optimizer.step(self.params, grads, lr)
        self.step_count += 1
        record = {"step": self.step_count, "phase": phase.name, "loss": loss_sum / accum, "lr": lr,
                  "grad_norm": grad_norm, "tokens": tokens, "seconds": time.perf_counter() - started}
        self.log.append(record)
        if phase_step + 1 == phase.steps or self.step_count % self.loop.eval_every == 0:
            record["validation"] = self.validate(phase)
        return record

    def validate(self, phase: Phase) -> Optional[Dict[str, Any]]:
        """Loss and perplexity on the phase's held-out examples (None if it holds none out)."""
        if not phase.validation:
            return None
        total, count = 0.0, 0.0
        for i in range(0, len(phase.validation), self.loop.batch_size):
            batch = make_batch(phase.validation[i:i + self.loop.batch_size], self.tokenizer.eos_id, self.pack)
            s, c = transformer.loss_only(self.config, self.params, batch.ids, batch.targets, batch.mask,
                                         self.lora_scale, batch.layout)
            total, count = total + s, count + c
        loss = total / max(count, 1.0)
        result = {"step": self.step_count, "phase": phase.name, "loss": loss, "perplexity": math.exp(min(loss, 50))}
        self.log.append({"validation": result})
        return result

    # ---- what subclasses provide ---------------------------------------------------------------------------

    def gguf_writer(self, ggml_type: str = "F32") -> GGUFWriter:
        """The model as it stands, as a complete GGUF: .write(path) or .to_bytes()."""
        raise NotImplementedError

    def checkpoint_params(self) -> Dict[str, np.ndarray]:
        """The parameters a checkpoint must hold to resume (all of them, or only what is trained)."""
        raise NotImplementedError

    def checkpoint_extra(self) -> Dict[str, Any]:
        """JSON-able facts a resumed run is rebuilt from (settings, vocabulary, base model...)."""
        raise NotImplementedError
