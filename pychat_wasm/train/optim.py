"""AdamW, the learning-rate schedule and global gradient-norm clipping, as torch defines them.

The update follows torch.optim.AdamW step for step (decoupled weight decay, bias-corrected moments), and
clipping follows torch.nn.utils.clip_grad_norm_, so a run here and a run in torch from the same weights
give the same losses (tests/oracle/test_train_reference.py checks 10 steps).

    >>> [round(learning_rate(s, total=10, peak=1.0, warmup=2), 3) for s in range(10)]
    [0.5, 1.0, 1.0, 0.966, 0.868, 0.722, 0.55, 0.378, 0.232, 0.134]
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

MIN_LR_RATIO = 0.1  # the cosine decays to a tenth of the peak, as in nanoGPT and llm.c


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps to `peak`, then a cosine down to MIN_LR_RATIO * peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = MIN_LR_RATIO * peak
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def clip_grad_norm(grads: Dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most max_norm; return the norm before."""
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for name in grads:
            grads[name] = grads[name] * np.asarray(coef, grads[name].dtype)
    return total


def decays(name: str, value: np.ndarray) -> bool:
    """Weight decay applies to matrices (projections, embeddings, LoRA adapters), not to norms or biases."""
    return value.ndim >= 2


class AdamW:
    """AdamW over a dict of parameters; the moments are arrays of the same names (saved in checkpoints)."""

    def __init__(self, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.1):
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.m: Dict[str, np.ndarray] = {}
        self.v: Dict[str, np.ndarray] = {}
        self.steps = 0

    def step(self, params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray], lr: float) -> None:
        """Update params in place from grads (only the names in grads are trained)."""
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        step_size = lr / (1.0 - b1 ** self.steps)
        v_correction = math.sqrt(1.0 - b2 ** self.steps)
        for name, grad in grads.items():
            p = params[name]
            if name not in self.m:
                self.m[name], self.v[name] = np.zeros_like(p), np.zeros_like(p)
            m, v = self.m[name], self.v[name]
            if self.weight_decay and decays(name, p):
                p *= p.dtype.type(1.0 - lr * self.weight_decay)
            m *= p.dtype.type(b1)
            m += p.dtype.type(1.0 - b1) * grad
            v *= p.dtype.type(b2)
            v += p.dtype.type(1.0 - b2) * grad * grad
            p -= p.dtype.type(step_size) * m / (np.sqrt(v) / p.dtype.type(v_correction) + p.dtype.type(self.eps))

    def state(self) -> Dict[str, np.ndarray]:
        """Moments as flat {"m/name": array, "v/name": array}, for a checkpoint."""
        flat = {"m/" + k: a for k, a in self.m.items()}
        flat.update({"v/" + k: a for k, a in self.v.items()})
        return flat

    def load_state(self, flat: Dict[str, np.ndarray], steps: int) -> None:
        self.m = {k[2:]: np.array(a) for k, a in flat.items() if k.startswith("m/")}
        self.v = {k[2:]: np.array(a) for k, a in flat.items() if k.startswith("v/")}
        self.steps = steps
