"""What a grid will cost before it runs: time estimates, cluster capacity, the run order.

Estimates are deliberately simple: a run's work is its training tokens times the FLOPs per
token of every matmul (forward and backward), plus its evals at a third of that per token,
divided by a sustained rate per CPU core or per GPU, plus a fixed start-up. They order the runs
(largest first) and size the dry run's totals; they do not steer anything else.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import GridError
from orchestrator.grids.expand import RunSpec
from orchestrator.grids.parse import Grid

# Sustained training throughput in FLOP/s (all-matmul count). One core of the 2-core dev VM
# runs the tiny..400k presets at 22-37 GFLOP/s; 25 GFLOP/s is a round middle.
CPU_FLOPS_PER_CORE = 25e9
# One GPU: an H100 trains 125m-350m at 2.4e14 FLOP/s eager and 4.5e14 compiled (BENCHMARKS.md);
# an A100 has a third of its peak. 1e14 errs long for either: estimates only order and size.
GPU_FLOPS_PER_DEVICE = 1e14
STARTUP_S = 3.0  # worker start, data source, model build (per attempt)
EVALS_PER_RUN = 11  # the trainer's default: step 0, nine in between, the end


@dataclass(frozen=True)
class Capacity:
    """CPUs and GPUs of the cluster a grid runs on: in all, and on its largest node."""

    cpus: float
    gpus: float
    node_cpus: float
    node_gpus: float
    source: str  # "this machine" or "the cluster at HOST:PORT", for messages

    @classmethod
    def this_machine(cls) -> Capacity:
        cpus = float(_usable_cpus())
        gpus = float(_visible_gpus())
        return cls(cpus=cpus, gpus=gpus, node_cpus=cpus, node_gpus=gpus, source="this machine")

    @classmethod
    def from_nodes(cls, nodes: Iterable[dict[str, Any]], source: str) -> Capacity:
        """From ``ray.nodes()``: alive nodes only."""
        alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", True))]
        cpus = [float(r.get("CPU", 0)) for r in alive] or [0.0]
        gpus = [float(r.get("GPU", 0)) for r in alive] or [0.0]
        return cls(cpus=sum(cpus), gpus=sum(gpus), node_cpus=max(cpus), node_gpus=max(gpus), source=source)


def check_capacity(grid: Grid, specs: Sequence[RunSpec], capacity: Capacity) -> None:
    """GridError if some run can never be placed on ``capacity``."""
    where = f"{grid.source}: resources"
    for spec in specs:
        r, n = spec.resources, spec.processes
        if r.cpus > capacity.node_cpus:
            raise GridError(
                f"{where}.cpus: {r.cpus} per process, but the largest node of {capacity.source} "
                f"has {capacity.node_cpus:g} CPUs"
            )
        if r.gpus > capacity.node_gpus:
            raise GridError(
                f"{where}.gpus: {r.gpus} per process, but the largest node of {capacity.source} "
                f"has {capacity.node_gpus:g} GPUs"
            )
        if n * r.cpus > capacity.cpus:
            raise GridError(
                f"{where}: a run of {n} processes × {r.cpus} CPUs needs {n * r.cpus}, "
                f"{capacity.source} has {capacity.cpus:g}"
            )
        if n * r.gpus > capacity.gpus:
            raise GridError(
                f"{where}: a run of {n} processes × {r.gpus} GPUs needs {n * r.gpus}, "
                f"{capacity.source} has {capacity.gpus:g}"
            )


def estimate_seconds(spec: RunSpec) -> float:
    """Rough wall time of one run on its allotment (dedicated cores or GPUs), in seconds."""
    train = spec.config.train
    evals = (
        min(spec.steps, EVALS_PER_RUN - 1) + 1 if not train.eval_every else spec.steps // train.eval_every + 2
    )
    eval_tokens = evals * spec.config.data.eval_sequences * train.seq_len
    share = spec.tokens_to_train / spec.tokens  # a branch trains (and evaluates) only after its start
    work = share * (spec.tokens + eval_tokens / 3) * spec.flops_per_token
    if spec.resources.gpus:
        rate = spec.processes * spec.resources.gpus * GPU_FLOPS_PER_DEVICE
    else:
        rate = spec.processes * spec.resources.cpus * CPU_FLOPS_PER_CORE
    return STARTUP_S + work / rate


def largest_first(specs: Iterable[RunSpec]) -> list[RunSpec]:
    """Longest estimated runs first: the classic list-scheduling rule for a short makespan."""
    return sorted(specs, key=lambda s: (-estimate_seconds(s), s.run_id))


def concurrent_runs(specs: Sequence[RunSpec], capacity: Capacity, max_parallel: int | None) -> int:
    """How many runs of this grid fit at once (by CPUs and GPUs), capped by ``max_parallel``."""
    if not specs:
        return 0
    cpus = max(s.processes * s.resources.cpus for s in specs)
    gpus = max(s.processes * s.resources.gpus for s in specs)
    fit = int(capacity.cpus // cpus) if cpus else len(specs)
    if gpus:
        fit = min(fit, int(capacity.gpus // gpus))
    fit = max(1, min(fit, len(specs)))
    return min(fit, max_parallel) if max_parallel else fit


def makespan_seconds(durations: Iterable[float], slots: int) -> float:
    """Wall time of running ``durations`` longest first on ``slots`` parallel slots."""
    finish = [0.0] * max(1, slots)
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(finish, finish[0] + duration)
    return max(finish)


def totals(specs: Sequence[RunSpec], slots: int) -> dict[str, float]:
    """Runs, FLOPs (6ND), tokens, CPU- and GPU-hours and the estimated wall time of a set of runs;
    with WSD branching, FLOPs and tokens count what is trained (``tokens_to_train``) against
    ``tokens_without_branching``."""
    seconds = [estimate_seconds(s) for s in specs]
    return {
        "runs": len(specs),
        "train_flops": float(sum(s.train_flops * s.tokens_to_train / s.tokens for s in specs)),
        "tokens_to_train": sum(s.tokens_to_train for s in specs),
        "tokens_without_branching": sum(s.tokens for s in specs),
        "cpu_hours": sum(t * s.processes * s.resources.cpus for t, s in zip(seconds, specs)) / 3600,
        "gpu_hours": sum(t * s.processes * s.resources.gpus for t, s in zip(seconds, specs)) / 3600,
        "wall_s": makespan_seconds(seconds, slots),
        "parallel": slots,
    }


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _visible_gpus() -> int:
    import torch  # already imported by the trainer's config module

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
