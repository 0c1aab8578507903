"""The engines that step a model: plain torch (one process) and DeepSpeed ZeRO (one or more).

Both hide behind ``Backend``: the loop hands it inputs, targets and a learning rate and never learns
which one it has.
"""

from __future__ import annotations

import torch

from trainers.backends.common import Backend
from trainers.config import ResolvedRun
from trainers.distributed import DistInfo


def make_backend(run: ResolvedRun, model: torch.nn.Module, dist: DistInfo) -> Backend:
    if run.config.train.backend == "deepspeed":
        from trainers.backends.deepspeed_backend import DeepSpeedBackend

        return DeepSpeedBackend(run, model, dist)
    from trainers.backends.torch_backend import TorchBackend

    return TorchBackend(run, model)
