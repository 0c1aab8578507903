"""Start a run's processes on this machine: in this process for one, spawned workers for several.

The orchestrator starts the processes of a multi-node run itself (one Ray actor per rank) and
calls ``trainers.loop.train`` in each with its ``DistInfo``; this module is the single-machine
path used by ``gammaray train``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.multiprocessing as mp

from trainers.callbacks import Callback
from trainers.config import RunConfig
from trainers.distributed import DistInfo, free_port
from trainers.errors import TrainingError
from trainers.loop import RunResult, read_summary, train


def run_local(config: RunConfig, out_dir: str | Path, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train ``config`` on this machine; rank 0 runs the callbacks.

    A torch run trains in this process. A DeepSpeed run always gets ``train.processes`` fresh
    processes, even for one: DeepSpeed keeps process-wide state (groups, communicators) that a
    second engine in the same process would trip over.
    """
    processes = config.train.processes
    port = free_port()
    if config.train.backend != "deepspeed":
        return train(config, out_dir, callbacks, DistInfo(master_port=port))
    context = mp.start_processes(
        _worker,
        args=(config, str(out_dir), list(callbacks), processes, port),
        nprocs=processes,
        join=False,
        start_method="spawn",
    )
    try:
        while not context.join():
            pass
    except mp.ProcessRaisedException as error:
        raise TrainingError(f"a training process failed: {str(error).strip().splitlines()[-1]}") from error
    except mp.ProcessExitedException as error:
        raise TrainingError(f"a training process died: {error}") from error
    result = read_summary(Path(out_dir))
    if result is None:
        raise TrainingError(f"{out_dir}: the run ended without a summary")
    return result


def _worker(
    rank: int, config: RunConfig, out_dir: str, callbacks: list[Callback], world_size: int, port: int
) -> None:
    dist = DistInfo(rank=rank, world_size=world_size, local_rank=rank, master_port=port)
    # Each process gets an equal share of the cores, so processes do not fight over threads.
    if not config.train.threads:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    train(config, out_dir, callbacks if rank == 0 else (), dist)
