"""DeepSpeed ZeRO (stage 0–3) over one or more processes: gloo on a CPU, NCCL on GPUs.

Every process of a run builds the same model from the same seed, then hands it to
``deepspeed.initialize``, which shards optimizer state (stage ≥ 1), gradients (≥ 2) and
parameters (3) across the processes. The loop gives each process rows ``rank::world`` of the
global batch, so the gradient ZeRO averages is the full batch's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trainers.backends.common import compile_if_asked, pick_device, pick_dtype
from trainers.config import ResolvedRun
from trainers.distributed import DistInfo
from trainers.optim import build_optimizer

CHECKPOINT_TAG = "state"


def _import_deepspeed(device: torch.device):
    # DeepSpeed picks its accelerator at import; say "cpu" explicitly on a machine without a GPU.
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    return deepspeed


class DeepSpeedBackend:
    def __init__(self, run: ResolvedRun, model: torch.nn.Module, dist: DistInfo):
        train = run.config.train
        self.device = pick_device(train.device)
        deepspeed = _import_deepspeed(self.device)
        dist.export()
        if self.device.type == "cuda":
            torch.cuda.set_device(dist.local_rank)
            self.device = torch.device("cuda", dist.local_rank)
        deepspeed.init_distributed(
            dist_backend="nccl" if self.device.type == "cuda" else "gloo",
            auto_mpi_discovery=False,
            verbose=False,
        )
        self.world_size = dist.world_size
        dtype = pick_dtype(train.precision, self.device)
        ds_config = {
            "train_batch_size": train.batch_size,
            "train_micro_batch_size_per_gpu": train.batch_size // dist.world_size,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": train.zero_stage},
            "bf16": {"enabled": dtype == torch.bfloat16},
            "steps_per_print": 1 << 60,  # the loop does the logging
            "wall_clock_breakdown": False,
        }
        if run.config.optim.grad_clip > 0:
            ds_config["gradient_clipping"] = run.config.optim.grad_clip
        model = model.to(self.device)
        compile_if_asked(run, model, self.device)
        optimizer = build_optimizer(model, run.config.optim)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config
        )
        self.model = self.engine.module

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.engine.train()
        loss = self.engine(
            inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        )
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach().float()

    def forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.engine.eval()
        return self.engine(
            inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        ).float()

    def mean_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        return self.sum_across_processes(values) / self.world_size

    def sum_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        values = values.to(self.device).clone()
        torch.distributed.all_reduce(values)
        return values

    def save(self, directory: Path) -> None:
        # Collective: every process writes its shard of the optimizer state into ``directory``.
        self.engine.save_checkpoint(str(directory), tag=CHECKPOINT_TAG, save_latest=False)

    def load(self, directory: Path) -> None:
        self.engine.load_checkpoint(str(directory), tag=CHECKPOINT_TAG, load_lr_scheduler_states=False)

    def close(self) -> None:
        if hasattr(self.engine, "destroy"):  # frees DeepSpeed's hooks and buffers (newer versions)
            self.engine.destroy()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
