"""AdamW with decoupled weight decay λ, and the learning-rate schedules.

Decoupled decay (Loshchilov & Hutter, 2019) as in torch.optim.AdamW: θ ← θ − lr·λ·θ at every
step, so λ is comparable across learning rates only through lr·λ; the γ-init papers pair γ = 1
with λ = 1 against γ = 0.5 with λ = 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainers.errors import ConfigError
from trainers.schema import added_later


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.1  # λ, decoupled
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    decay_embeddings: bool = True  # apply λ to the embedding table (and LM head) too
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_fraction: float = 0.05  # share of steps with linear warmup from 0
    # Warmup as a number of tokens, whatever the run's length (replaces warmup_fraction when
    # set): WSD runs of different D then share their warmup and stable phase step for step.
    warmup_tokens: int | None = added_later(None)
    decay_fraction: float = 0.2  # wsd: share of steps in the final linear decay
    min_lr_ratio: float = 0.1  # final lr as a share of the peak

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip", "eps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        for name in ("warmup_fraction", "decay_fraction", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.warmup_tokens is not None and self.warmup_tokens < 0:
            raise ConfigError(f"warmup_tokens: must be >= 0, got {self.warmup_tokens}")
        if self.schedule == "wsd" and self.warmup_fraction + self.decay_fraction > 1:
            raise ConfigError("decay_fraction: warmup_fraction + decay_fraction must be <= 1 for wsd")


def param_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """Two AdamW groups: decayed (weight matrices) and not decayed (norm gains, biases, and the
    embedding table and LM head unless ``decay_embeddings``)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    embedding_ids |= {id(p) for name, p in model.named_parameters() if name.startswith("lm_head")}
    decay, no_decay = [], []
    for param in model.parameters():
        is_embedding = id(param) in embedding_ids
        if param.ndim < 2 or (is_embedding and not config.decay_embeddings):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``param_groups(model)``; build it after the model is on its device.

    On a GPU it uses torch's fused kernel, which updates every parameter in a few launches: at
    350M parameters on an H100 a step takes 3.5 ms against 9.9 ms for the multi-tensor (foreach)
    one, a saving of 7% of a compiled 16k-token training step. Elsewhere it uses foreach.
    """
    on_gpu = all(param.is_cuda for param in model.parameters())
    return torch.optim.AdamW(
        param_groups(model, config),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        **({"fused": True} if on_gpu else {"foreach": True}),
    )


def warmup_steps(total_steps: int, config: OptimConfig, tokens_per_step: int) -> int:
    """Steps of linear warmup: ``warmup_tokens`` worth of steps when set, else a share of the run."""
    if config.warmup_tokens is not None:
        return math.ceil(config.warmup_tokens / tokens_per_step)
    return round(config.warmup_fraction * total_steps)


def decay_start(total_steps: int, config: OptimConfig) -> int:
    """wsd: the first step of the final decay (the stable phase ends before it)."""
    return total_steps - round(config.decay_fraction * total_steps)


def lr_at(step: int, total_steps: int, config: OptimConfig, tokens_per_step: int) -> float:
    """Learning rate for ``step`` (0-based) of ``total_steps``: a pure function, so resuming
    needs no scheduler state. ``tokens_per_step`` (batch × sequence) turns ``warmup_tokens``
    into steps.

    cosine: linear warmup, then cosine from lr to min_lr_ratio·lr at the last step.
    wsd:    linear warmup, constant (stable), then linear decay to min_lr_ratio·lr over the last
            decay_fraction of steps (warmup-stable-decay; Hu et al. 2024, MiniCPM).
    constant: linear warmup, then constant.
    """
    peak, floor = config.lr, config.lr * config.min_lr_ratio
    warmup = warmup_steps(total_steps, config, tokens_per_step)
    if step < warmup:
        return peak * (step + 1) / warmup
    if config.schedule == "constant":
        return peak
    if config.schedule == "cosine":
        span = max(total_steps - 1 - warmup, 1)
        progress = min((step - warmup) / span, 1.0)
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    start = decay_start(total_steps, config)
    if step < start:
        return peak
    progress = (step - start + 1) / max(total_steps - start, 1)
    return peak + (floor - peak) * min(progress, 1.0)
