"""Plain PyTorch: one process, CPU or one GPU, bf16 autocast on a GPU."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from trainers.backends.common import compile_if_asked, pick_device, pick_dtype
from trainers.config import ResolvedRun
from trainers.optim import build_optimizer

STATE_FILE = "state.pt"  # a checkpoint's model and optimizer state (trainers.export reads the model)


class TorchBackend:
    def __init__(self, run: ResolvedRun, model: torch.nn.Module):
        self.device = pick_device(run.config.train.device)
        self.model = model.to(self.device)
        compile_if_asked(run, self.model, self.device)
        self.optimizer = build_optimizer(self.model, run.config.optim)
        self.grad_clip = run.config.optim.grad_clip
        dtype = pick_dtype(run.config.train.precision, self.device)
        # Weights and optimizer state stay fp32; bf16 only inside the autocast region.
        self._autocast = (
            torch.autocast(self.device.type, dtype=dtype)
            if dtype != torch.float32
            else contextlib.nullcontext()
        )

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast:
            loss = self.model(
                inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            )
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self._autocast:
            return self.model(
                inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            )

    def mean_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def sum_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def save(self, directory: Path) -> None:
        torch.save(
            {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()},
            directory / STATE_FILE,
        )

    def load(self, directory: Path) -> None:
        state = torch.load(directory / STATE_FILE, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def close(self) -> None:
        pass
