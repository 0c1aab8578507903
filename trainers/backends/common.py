"""What both backends share: the ``Backend`` contract the loop programs against, and the choice of
device, precision and compilation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

import torch

from trainers.config import ResolvedRun
from trainers.errors import ConfigError


class Backend(Protocol):
    model: torch.nn.Module  # the bare model, on ``device``
    device: torch.device

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step on this process's share (B_local, T) of the global batch; targets
        equal to -100 are not scored. Returns the loss as a 0-dim tensor on ``device`` (not
        synchronized, so the loop decides when to wait)."""

    def forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of a (B, T) batch, for evaluation (the caller disables gradients)."""

    def mean_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        """Average ``values`` over the run's processes (identity for one process)."""

    def sum_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` over the run's processes (identity for one process)."""

    def save(self, directory: Path) -> None:
        """Write model and optimizer state into ``directory`` (a fresh, empty folder)."""

    def load(self, directory: Path) -> None:
        """Restore what ``save`` wrote."""

    def close(self) -> None: ...


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA GPU is visible")
    return torch.device(requested)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def compile_if_asked(run: ResolvedRun, model: torch.nn.Module, device: torch.device) -> None:
    """``train.compile``: compile the model's training forwards (``Transformer.compile_training``)."""
    if not run.config.train.compile:
        return
    # Inductor builds C++ kernels on a CPU; without a compiler it would fail at the first step.
    compilers = (os.environ.get("CXX"), "g++", "clang++")
    if device.type == "cpu" and not any(c and shutil.which(c) for c in compilers):
        raise ConfigError(
            "train.compile: torch.compile on a CPU needs a C++ compiler (g++ or clang++, or $CXX)"
        )
    model.compile_training()
