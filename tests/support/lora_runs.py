"""Fine-tuning runs with LoRA adapters that matter: what the adapter tests share (tests/oracle/test_lora_*.py).

A fresh FinetuneRun's B matrices are zero (training starts at the base model); these runs set them at random,
so that the adapters change the logits without any training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pychat_wasm.gguf.reader import GGUFFile
from pychat_wasm.train.data import TrainingData
from pychat_wasm.train.finetune import FinetuneRun, FinetuneSettings

RANK, ALPHA = 4, 8.0
# Conversations the tiny "tokN" vocabulary encodes (only <s> and </s> parse): the run needs some to exist.
TOKEN_CHATS = [[{"role": "user", "content": "<s>" * (1 + i % 3)},
                {"role": "assistant", "content": "<s>" * (1 + i % 2) + "</s><s>"}] for i in range(6)]


def random_adapter_run(base: Path, seed: int = 3, size: float = 0.3) -> FinetuneRun:
    """A run on `base` with adapters on every projection whose B is random (not zero): they change the logits."""
    run = FinetuneRun(FinetuneSettings(rank=RANK, alpha=ALPHA, targets="attn+mlp"), GGUFFile.open(str(base)),
                      TrainingData([], TOKEN_CHATS))
    rng = np.random.default_rng(seed)
    for name in sorted(run.trainable):
        if name.endswith(".lora_b"):
            run.params[name][...] = size * rng.standard_normal(run.params[name].shape)
    return run
