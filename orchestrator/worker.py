"""What runs inside Ray workers: one grid point's training, in one process or as a gang.

These functions are plain Python; ``orchestrator.scheduler`` wraps them as Ray tasks. A task
records its attempt (``attempts.jsonl`` in the run folder: attempt number, rank, pid, host),
then calls ``trainers.loop.train`` on the run folder, which resumes from the latest
checkpoint. The run's main process writes ``metrics.jsonl``; the driver reads it. Nothing here
writes to the tracking store.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from orchestrator.grids.expand import RunSpec
from trainers.callbacks import JsonlLogger, read_jsonl
from trainers.distributed import DistInfo, free_port
from trainers.run_folder import METRICS_FILE

ATTEMPTS_FILE = "attempts.jsonl"


class GangWorkerDied(RuntimeError):
    """A process of a multi-process run died (not an exception in training): retry the gang."""


def train_point(
    spec: RunSpec,
    attempt: str,
    rank: int = 0,
    world_size: int = 1,
    master: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Train ``spec`` (or one rank of it) into its run folder; returns ``RunResult.to_dict()``.

    ``attempt`` names this attempt (``<submission>:<n>``) in ``attempts.jsonl``. A run whose
    folder already holds its summary returns it without training, so a task that runs twice
    does no work twice.
    """
    from trainers.loop import read_summary, train

    out = Path(spec.out_dir)
    done = read_summary(out)
    if done is not None and done.run_id == spec.run_id:
        return done.to_dict()
    record_attempt(out, attempt, rank)
    if spec.resources.gpus == 0:
        # Ray leaves CUDA_VISIBLE_DEVICES alone for CPU-only tasks: keep them off the GPUs.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if master is None:
        # A one-process DeepSpeed run still opens a process group: give it a port of its own.
        dist = DistInfo(master_port=free_port())
    else:
        # Ray gives each process its own GPU(s) through CUDA_VISIBLE_DEVICES: it is device 0 there.
        dist = DistInfo(
            rank=rank, world_size=world_size, local_rank=0, master_addr=master[0], master_port=master[1]
        )
    callbacks = [JsonlLogger(out / METRICS_FILE, attempt=attempt)] if rank == 0 else []
    return train(spec.config, out, callbacks, dist, checkpoint_at=spec.checkpoint_at).to_dict()


def run_gang(spec: RunSpec, attempt: str, placement_group: Any) -> dict[str, Any]:
    """Run a multi-process (DeepSpeed) run as a gang, one Ray task per process, each in its own
    bundle of ``placement_group``; returns rank 0's result.

    If a process dies, the others are stopped at once (they would otherwise wait in a collective
    until its timeout) and :class:`GangWorkerDied` asks the driver for a retry of the whole
    gang, which resumes from the last checkpoint. An exception in a process fails the run.
    """
    import ray
    from ray.exceptions import RayError, RayTaskError
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.get(placement_group.ready())
    resources = {"num_cpus": spec.resources.cpus, "num_gpus": spec.resources.gpus}

    def bundle(index: int) -> dict[str, Any]:
        strategy = PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=index)
        return {**resources, "scheduling_strategy": strategy, "max_retries": 0}

    master = ray.get(
        ray.remote(rendezvous).options(name=f"{spec.task_name}/rendezvous", **bundle(0)).remote()
    )
    world = spec.processes
    # A fresh process per rank (max_calls=1): a worker reused by a second gang would carry the
    # first one's torch.distributed and DeepSpeed state and fail ("Group ... is not registered").
    task = ray.remote(max_calls=1)(train_point)
    refs = [
        task.options(name=f"{spec.task_name}/rank{rank}", **bundle(rank)).remote(
            spec, attempt, rank, world, master
        )
        for rank in range(world)
    ]
    results: dict[Any, dict[str, Any]] = {}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                results[done[0]] = ray.get(done[0])
            except RayTaskError as error:
                cause = getattr(error, "cause", None) or error
                rank = refs.index(done[0])
                raise RuntimeError(
                    f"process {rank} of {world}: {type(cause).__name__}: {_first_line(cause)}"
                ) from None
            except RayError as error:
                rank = refs.index(done[0])
                raise GangWorkerDied(f"process {rank} of {world} died: {type(error).__name__}") from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return results[refs[0]]


def rendezvous() -> tuple[str, int]:
    """Run in a gang's first bundle: the address and a free port for its process group."""
    import ray

    address = ray.util.get_node_ip_address()
    return address, free_port(address)


def record_attempt(out: Path, attempt: str, rank: int) -> None:
    """Append who runs this attempt, so the driver sees it start and a test can find the pid."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "attempt": attempt,
        "rank": rank,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "node_id": _node_id(),
        "time": time.time(),
    }
    with open(out / ATTEMPTS_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def read_attempts(out_dir: str | Path) -> list[dict[str, Any]]:

    return read_jsonl(Path(out_dir) / ATTEMPTS_FILE)


def _node_id() -> str | None:
    """The Ray node this process runs on; None outside Ray (tests and benchmarks call
    ``train_point`` directly), where asking the runtime context would start a Ray cluster."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


@functools.cache
def remote_function(kind: str) -> Any:
    """The Ray function of ``kind``: "train" (one process, workers reused across runs), "fresh"
    (one process, a new worker per run: DeepSpeed keeps process-wide state, groups and
    communicators, that a second run in the same process trips over) or "gang"."""
    import ray

    if kind == "gang":
        return ray.remote(run_gang)
    return ray.remote(max_calls=1)(train_point) if kind == "fresh" else ray.remote(train_point)


def ended_tasks(refs: list[Any], timeout: float) -> set[Any]:
    """The tasks of ``refs`` that have ended, waiting up to ``timeout`` seconds for the first."""
    import ray

    if not refs:
        return set()
    ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
    if not ready:
        return set()
    more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)  # everything else that ended too
    return {*ready, *more}


def import_training_modules() -> None:
    """Import what a run needs before its first step: torch, the trainer, and the torch._dynamo
    that torch.optim imports at its first step (about 3.5 s of CPU in all)."""
    import torch._dynamo  # noqa: F401

    import trainers.loop  # noqa: F401


def warm_up_workers(count: int) -> None:
    """Have ``count`` idle workers of a fresh local cluster import the trainer now, without waiting.

    Each worker would otherwise pay the imports at its first run; started here, they overlap the
    driver's own start (the tracking store, the plan) and the runs find warm workers, which Ray
    reuses for "train" tasks.
    """
    import ray

    warm_up = ray.remote(num_cpus=1)(import_training_modules)
    for _ in range(count):
        warm_up.remote()  # fire and forget: nothing waits on the result
