"""The one path by which a run goes to Ray and comes back: launch, outcome, release, stop.

The grid scheduler and the tuner both dispatch runs through here, so how a run is placed, which
runs get a fresh worker process, how GPUs are hidden from CPU runs and how an attempt's end is
read are decided once. What follows an outcome (retry, record, tell a trial) stays with the
caller.

- A one-process run is one Ray task named after the run; a multi-process (DeepSpeed) run is a
  gang: a leader of that name and one task per process in a placement group of the same name.
- ``outcome`` reads an ended task as a ``result``, a ``failure`` raised by training (training is
  deterministic: trying again would fail again), a ``dead`` worker (SIGKILL, out of memory, a
  lost node, a dead gang process: worth another attempt, which resumes from the checkpoint), a
  ``preempted`` run (its worker got SIGTERM and it stopped at a checkpoint: launch it again, no
  fault of the run's) or ``cancelled``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.grids.expand import RunSpec
from orchestrator.tracking.store import one_line
from orchestrator.worker import GangWorkerDied, remote_function
from trainers.preemption import Preempted


@dataclass
class Launched:
    """One attempt of a run, on Ray."""

    spec: RunSpec
    ref: Any  # the ObjectRef of the task (or the gang's leader)
    placement_group: Any  # for a gang, else None
    started: float  # time.monotonic() at launch


@dataclass(frozen=True)
class Outcome:
    kind: Literal["result", "failure", "dead", "preempted", "cancelled"]
    result: dict[str, Any] | None = None  # the run's RunResult as a dict, for ``result``
    reason: str | None = None  # one line, for ``failure``, ``dead`` and ``preempted``


def needs_fresh_worker(spec: RunSpec) -> bool:
    """DeepSpeed keeps process-wide state (process groups, communicators) and a GPU run leaves
    CUDA memory behind: such a run gets a worker process of its own, never a reused one."""
    return spec.config.train.backend == "deepspeed" or spec.resources.gpus > 0


def launch(spec: RunSpec, attempt: str, name: str, gpu_cluster: bool) -> Launched:
    """Start ``spec`` on Ray as task ``name``; ``attempt`` tags the start the worker records."""
    from ray.util.placement_group import placement_group

    options: dict[str, Any] = {"name": name, "max_retries": 0}  # retries are the caller's decision
    if spec.resources.gpus == 0 and gpu_cluster:
        # Ray leaves CUDA_VISIBLE_DEVICES as is for a task without GPUs: hide them.
        options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    group = None
    if spec.processes == 1:
        task = remote_function("fresh" if needs_fresh_worker(spec) else "train")
        ref = task.options(num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus, **options).remote(
            spec, attempt
        )
    else:
        bundle = {"CPU": spec.resources.cpus, **({"GPU": spec.resources.gpus} if spec.resources.gpus else {})}
        group = placement_group([bundle] * spec.processes, strategy="PACK", name=name)
        ref = remote_function("gang").options(num_cpus=0, **options).remote(spec, attempt, group)
    return Launched(spec, ref, group, time.monotonic())


def outcome(launched: Launched) -> Outcome:
    """How an ended attempt ended (call it once its task is done)."""
    import ray
    from ray.exceptions import RayError, RayTaskError, TaskCancelledError

    try:
        result = ray.get(launched.ref)
    except TaskCancelledError:
        return Outcome("cancelled")
    except RayTaskError as error:
        cause = getattr(error, "cause", None) or error
        if isinstance(cause, GangWorkerDied):
            return Outcome("dead", reason=str(cause))
        if isinstance(cause, Preempted):
            return Outcome("preempted", reason=str(cause))
        return Outcome("failure", reason=one_line(cause))
    except RayError as error:  # the worker died: SIGKILL, out of memory, a lost node
        return Outcome("dead", reason=f"worker died ({type(error).__name__})")
    return Outcome("result", result=result)


def release(launched: Launched) -> None:
    """Give back a gang's placement group (best effort: it may be gone with its tasks)."""
    if launched.placement_group is None:
        return
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(launched.placement_group)
    except Exception:
        pass


def stop(launched: Launched, graceful: bool = False) -> None:
    """Cancel the attempt's task and its children (best effort: it may have just ended).

    ``graceful``: ask instead of kill. Ray raises the interrupt in the task's main thread, where
    the trainer's SIGINT handler takes it as a stop request: the run stops at its next step with
    a checkpoint of it (``trainers.preemption``), and its task ends as cancelled.
    """
    import ray

    try:
        ray.cancel(launched.ref, force=not graceful, recursive=True)
    except Exception:
        pass
