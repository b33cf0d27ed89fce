"""Fine-tuning a GGUF chat model on a user's conversations: LoRA adapters on a frozen copy, or every weight.

    base GGUF --dequantize--> float32 parameters (frozen)  +  LoRA adapters A [r, in], B [out, r]
    loss on the assistant tokens of conversations rendered with the model's own chat template
    export: W + (alpha / r) * B @ A for every adapted matrix, written with the base's metadata; or the
            adapters alone as llama.cpp's LoRA adapter GGUF (adapter_writer: model/lora.py)

The adapters start as in the LoRA paper: A uniform in +-1/sqrt(in), B zero, so training starts exactly at
the base model. Architectures: those the trainer implements (llama, qwen2); the shared loop is run.py.
How often each conversation is trained on, what LoRA adapts, how the replay is mixed in, the validation split
and when to stop early follow the data's size (finetune_plan.py).

    >>> run = FinetuneRun(FinetuneSettings(), GGUFFile.open("SmolLM2.gguf"), data)          # doctest: +SKIP
    >>> while not run.finished: run.step()                                                  # doctest: +SKIP
    >>> run.gguf_writer("F32").write("tuned.gguf")                                          # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..gguf import quants
from ..errors import CheckpointError, InvalidSettingError, TrainingDataError, UnsupportedArchitectureError
from ..gguf.reader import GGUFFile
from ..gguf.writer import GGUFWriter
from ..model.config import ModelConfig, layer_tensors
from ..model.load_plan import LoadPlan
from ..model.lora import adapter_writer, file_sha256
from . import transformer
from .batches import make_batch
from .data import Conversation, TrainingData, encode_conversation
from .export import model_writer
from .finetune_plan import CHECKED, MIN_LOSS_DROP, FinetunePlan, choose_plan
from .replay import replay_plan
from .run import LoopSettings, Phase, TrainingRun

# What LoRA adapts: a layer's matrices (model/config.py's LAYER_TENSORS) whose names begin so.
TARGETS = {"attn": ("attn_",), "attn+mlp": ("attn_", "ffn_")}
TRAINABLE_ARCHITECTURES = ("llama", "qwen2")
# Keys the export sets itself rather than copying from the base model.
OWN_KEYS = ("general.architecture", "general.file_type", "general.alignment")


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    rank: int = 8
    alpha: float = 16.0
    targets: Optional[str] = None  # a key of TARGETS; None: as the data's size calls for (finetune_plan.py)
    epochs: Optional[int] = None  # times each conversation is trained on; None: as its size calls for
    lr: float = 1.5e-3
    seq_len: int = 256
    batch_size: int = 4
    full: bool = False  # train every weight instead of adapters (small models)
    seed: int = 0
    grad_accum: int = 1
    replay: Optional[int] = None  # general questions the base model answers first, learned beside the data
    # (replay.py); None: all 48 (finetune_plan.py keeps their answers to at most half of each pass)
    early_stop: bool = True  # end once the training answers come back and the loss stops falling

    def __post_init__(self) -> None:
        if self.targets is not None and self.targets not in TARGETS:
            raise InvalidSettingError("targets must be one of %s, got %r" % (", ".join(TARGETS), self.targets))
        for name in ("rank", "epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidSettingError("%s must be at least 1, got %r" % (name, getattr(self, name)))
        if self.replay is not None and self.replay < 0:
            raise InvalidSettingError("replay must be 0 or more questions, got %r" % self.replay)
        if not self.lr > 0:
            raise InvalidSettingError("the learning rate must be positive, got %r" % self.lr)

    def loop(self) -> LoopSettings:
        # No weight decay towards zero on a pretrained model's weights; adapters do not need it either.
        return LoopSettings(seed=self.seed, batch_size=self.batch_size, grad_accum=self.grad_accum,
                            seq_len=self.seq_len, weight_decay=0.0 if self.full else 0.01)


def base_parameters(gguf: GGUFFile) -> Dict[str, np.ndarray]:
    """Every tensor of the file dequantized to float32, under its GGUF name."""
    return {name: np.ascontiguousarray(quants.dequantize(gguf.tensor_bytes(name), info.type_id, info.shape),
                                       dtype=np.float32)
            for name, info in gguf.tensors.items()}


def lora_projections(cfg: ModelConfig, targets: str) -> Tuple[str, ...]:
    """The projections LoRA adapts in each layer, e.g. ("attn_q", "attn_k", "attn_v", "attn_output")."""
    return tuple(spec.name[:-len(".weight")] for spec, shape, required in layer_tensors(cfg)
                 if required and len(shape) == 2 and spec.name.startswith(TARGETS[targets]))


def init_adapters(cfg: ModelConfig, params: Dict[str, np.ndarray], targets: str, rank: int,
                  seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, rank])
    adapters = {}
    for i in range(cfg.n_layers):
        for projection in lora_projections(cfg, targets):
            name = "blk.%d.%s" % (i, projection)
            out_dim, in_dim = params[name + ".weight"].shape
            bound = 1.0 / np.sqrt(in_dim)
            adapters[name + ".lora_a"] = rng.uniform(-bound, bound, (rank, in_dim)).astype(np.float32)
            adapters[name + ".lora_b"] = np.zeros((out_dim, rank), np.float32)
    return adapters


def estimated_bytes(cfg: ModelConfig, n_params: int, settings: FinetuneSettings) -> int:
    """Roughly the memory a fine-tuning run needs: float32 weights, what trains (gradients, AdamW moments),
    and the activations the backward pass keeps for one micro-batch."""
    weights = 4 * n_params
    trained = 3 * weights if settings.full else 0  # gradient, first and second moment of every weight
    tokens = settings.batch_size * settings.seq_len
    per_token = cfg.n_layers * (8 * cfg.dim + 6 * cfg.ffn_dim + 2 * cfg.n_heads * settings.seq_len)
    logits = 3 * tokens * cfg.vocab_size  # softmax temporaries at the counted positions (at most all of them)
    # +10%: measured peaks (bench/bench_finetune.py) run up to 5% above the sum of these parts
    return int(1.1 * (weights + trained + 4 * (tokens * per_token + logits)))


def file_fingerprint(gguf: GGUFFile) -> str:
    """sha256 of the base model's bytes: adapters resume only onto the model they were trained on."""
    return file_sha256(gguf)


def check_can_finetune(plan: LoadPlan, data: TrainingData) -> None:
    """Raise unless the trainer implements the base model's architecture and the data has conversations;
    callers check this before they spend time on replay answers."""
    if plan.config.arch not in TRAINABLE_ARCHITECTURES:
        raise UnsupportedArchitectureError("fine-tuning supports %s models; %s is %s"
                                           % (" and ".join(TRAINABLE_ARCHITECTURES), plan.gguf.name, plan.config.arch))
    if not data.conversations:
        raise TrainingDataError("fine-tuning needs conversations (JSONL {\"messages\": [...]} or "
                                "\"User: ... Assistant: ...\" strings)")


def plan_finetune(settings: FinetuneSettings, plan: LoadPlan, data: TrainingData) -> FinetunePlan:
    """The run's plan (finetune_plan.choose_plan) for `data` under `settings`, with the base model's
    tokenizer and template (`plan`: replay_plan's) measuring the answers."""
    answers = [sum(encode_conversation(plan.tokenizer, plan.template, c).mask) for c in data.conversations]
    return choose_plan(len(data.conversations), answers, settings.epochs, settings.replay, settings.batch_size,
                       settings.early_stop, settings.targets)


class FinetuneRun(TrainingRun):
    kind = "finetune"
    pack = True  # conversations rendered with the model's template share its first tokens (a system prompt)

    def __init__(self, settings: FinetuneSettings, gguf: GGUFFile, data: TrainingData,
                 trained: Optional[Dict[str, np.ndarray]] = None, replay: Sequence[Conversation] = (),
                 plan: Optional[LoadPlan] = None):
        """`replay`: the base model's own answers (replay.ReplayAnswers to plan_finetune's replay_questions),
        trained on beside `data`'s conversations (repeated within a pass so that they outweigh the replay) and
        never held out for validation.
        `plan`: the base model's replay_plan when the caller has made it already (its config, tokenizer and
        template)."""
        plan = plan or replay_plan(gguf)
        check_can_finetune(plan, data)
        config, tokenizer = plan.config, plan.tokenizer
        self.settings, self.gguf, self.data, self.replay = settings, gguf, data, list(replay)
        self.plan = plan_finetune(settings, plan, data)
        params = base_parameters(gguf)
        if settings.full:
            trainable = None
        else:
            params.update(init_adapters(config, params, self.plan.targets, settings.rank, settings.seed))
            trainable = {name for name in params if name.endswith((".lora_a", ".lora_b"))}
        for name, value in (trained or {}).items():
            if name not in params or params[name].shape != value.shape:
                raise CheckpointError("the checkpoint's %s does not fit %s" % (name, gguf.name))
            params[name] = value
        super().__init__(settings.loop(), config, params, tokenizer, plan.template, trainable,
                         lora_scale=settings.alpha / settings.rank)
        chats, held = self.plan.split(data.conversations)
        self.trained_on, self.held_out = TrainingData([], chats), TrainingData([], held)
        self.examples = self.encode_chats(chats)
        if not self.examples:
            raise TrainingDataError("no assistant answer fits within %d tokens" % settings.seq_len)
        replayed = self.encode_chats(self.replay)
        self.repeats = self.plan.repeats(len(replayed))  # of each training conversation in a pass
        examples = self.examples * self.repeats + replayed
        self.steps_per_pass = -(-len(examples) // (settings.batch_size * settings.grad_accum))
        self.phases = [Phase("finetune", examples, self.encode_chats(held),
                             self.plan.passes(len(replayed)) * self.steps_per_pass, settings.lr)]
        self.planned_steps, self.replayed = self.total_steps, len(replayed)  # before any early stop
        self.first_check = self.plan.first_check(len(replayed)) * self.steps_per_pass  # a step count
        self.check_every = self.plan.check_every(settings.batch_size * settings.grad_accum)

    # ---- early stopping ---------------------------------------------------------------------------------------

    def step(self) -> Dict[str, Any]:
        """One optimizer step (run.TrainingRun.step); at the end of the plan's first_check pass, and every
        check_every steps after it, the answer check ("check" in the record), which ends the run when the
        plan's early stop says so."""
        record = super().step()
        since = self.step_count - self.first_check
        if self.plan.early_stop and since >= 0 and since % self.check_every == 0 and not self.finished:
            record["check"] = self.check_answers()
            if record["check"]["stop"]:
                self.phases[-1] = self.phases[-1]._replace(steps=self.step_count)  # the run is finished
        return record

    def check_answers(self) -> Dict[str, Any]:
        """{"step", "exact", "checked", "loss", "stop"}: how many of the first CHECKED training conversations
        the model answers greedily with their training answers (teacher-forced argmax: the same tokens); the
        loss watched (validation when some is held out, else these conversations'); whether to stop."""
        checked = self.examples[:CHECKED]
        exact, loss, count = 0, 0.0, 0
        for i in range(0, len(checked), self.loop.batch_size):
            batch = make_batch(checked[i:i + self.loop.batch_size], self.tokenizer.eos_id, self.pack)
            losses, counts, right = transformer.answer_scores(self.config, self.params, batch.ids, batch.targets,
                                                              batch.mask, self.lora_scale, batch.layout)
            exact, loss, count = exact + int(right.sum()), loss + float(losses.sum()), count + int(counts.sum())
        loss = loss / max(count, 1)
        validation = self.validate(self.phases[-1]) if self.phases[-1].validation else None
        watched = validation["loss"] if validation else loss
        before = [entry["check"]["watched"] for entry in self.log if "check" in entry]
        # a loss below MIN_LOSS_DROP cannot fall by as much any more: it counts as no longer falling
        stalled = watched < MIN_LOSS_DROP or bool(before) and watched > min(before) - MIN_LOSS_DROP
        stop = exact == len(checked) and stalled
        result = {"step": self.step_count, "exact": exact, "checked": len(checked), "loss": loss,
                  "watched": watched, "stop": stop}
        self.log.append({"check": result})
        return result

    @property
    def stopped_early(self) -> bool:
        return any(entry["check"]["stop"] for entry in self.log if "check" in entry)

    def merged_parameters(self) -> Dict[str, np.ndarray]:
        """The base tensors with every adapter folded in: W + scale * B @ A."""
        merged = {}
        for name, value in self.params.items():
            if name.endswith((".lora_a", ".lora_b")):
                continue
            stem = name[:-len(".weight")]
            if stem + ".lora_a" in self.params:
                a, b = self.params[stem + ".lora_a"], self.params[stem + ".lora_b"]
                value = value + np.float32(self.lora_scale) * (b @ a)  # [out, r] @ [r, in]
            merged[name] = value
        return merged

    def gguf_writer(self, ggml_type: str = "F32") -> GGUFWriter:
        metadata = {k: v for k, v in self.gguf.metadata.items() if k not in OWN_KEYS}
        return model_writer(self.config.arch, metadata, self.merged_parameters(), ggml_type)

    def adapter_writer(self, name: str) -> GGUFWriter:
        """The adapters alone as llama.cpp's LoRA GGUF (model/lora.py), recording the base model's identity."""
        if self.trainable is None:
            raise InvalidSettingError("a full fine-tune trains every weight: it has no LoRA adapter to write")
        stems = [name[:-len(".lora_a")] for name in self.params if name.endswith(".lora_a")]  # "blk.0.attn_q"
        pairs = {stem + ".weight": (self.params[stem + ".lora_a"], self.params[stem + ".lora_b"]) for stem in stems}
        return adapter_writer(self.gguf, self.settings.alpha, pairs, name)

    def checkpoint_params(self) -> Dict[str, np.ndarray]:
        """Only what is trained: the adapters (or every weight with --full)."""
        if self.trainable is None:
            return self.params
        return {name: self.params[name] for name in sorted(self.trainable)}

    def checkpoint_extra(self) -> Dict[str, Any]:
        return {"settings": dataclasses.asdict(self.settings), "base": file_fingerprint(self.gguf),
                "base_name": self.gguf.name, "replay": self.replay}

    @classmethod
    def from_checkpoint(cls, extra: Dict[str, Any], params: Dict[str, np.ndarray], gguf: GGUFFile,
                        data: TrainingData) -> "FinetuneRun":
        if extra.get("base") != file_fingerprint(gguf):
            raise CheckpointError("this checkpoint was trained on another base model (%s), not on %s"
                                  % (extra.get("base_name"), gguf.name))
        return cls(FinetuneSettings(**extra["settings"]), gguf, data, params, extra.get("replay", []))

