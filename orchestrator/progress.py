"""Live progress of a grid on stderr: runs done/running/failed, tokens/s and an ETA.

On a terminal one status line is rewritten in place; elsewhere (CI logs, pipes) a line is
printed every ``PLAIN_INTERVAL_S``. Events (a run finished, failed, retried) always get a line
of their own. stdout is left alone, for ``--json``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from orchestrator.cli.tables import format_duration
from orchestrator.grids.estimate import (
    CPU_FLOPS_PER_CORE,
    GPU_FLOPS_PER_DEVICE,
    estimate_seconds,
    makespan_seconds,
)
from orchestrator.grids.expand import RunSpec
from orchestrator.tracking.recorder import Live

TTY_INTERVAL_S = 0.5
PLAIN_INTERVAL_S = 15.0


@dataclass(frozen=True)
class Snapshot:
    counts: Mapping[str, int]  # state -> runs
    tokens_per_s: float  # summed over running runs
    eta_s: float | None  # seconds until the last run ends, None before any estimate

    def line(self, total: int) -> str:
        done = self.counts.get("finished", 0) + self.counts.get("diverged", 0) + self.counts.get("skipped", 0)
        parts = [
            f"{done}/{total} done",
            f"{self.counts.get('running', 0)} running",
            f"{self.counts.get('pending', 0)} pending",
        ]
        for state in ("diverged", "failed", "cancelled"):
            if self.counts.get(state):
                parts.append(f"{self.counts[state]} {state}")
        parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        if self.eta_s is not None:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return "  ".join(parts)


def snapshot(
    states: Mapping[str, str], specs: Mapping[str, RunSpec], live: Mapping[str, Live], slots: int
) -> Snapshot:
    """Counts, throughput and ETA from the runs' states and their latest JSONL progress.

    The ETA is the longest-first makespan of what is left: each unfinished run's estimated
    time, scaled for running runs by the share of tokens still to train and by how fast the
    running runs actually are compared with the estimate.
    """
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    running = [r for r, s in states.items() if s == "running"]
    tokens_per_s = sum(live[r].tokens_per_s for r in running if r in live)
    measured = sum(
        live[r].tokens_per_s * specs[r].flops_per_token for r in running if r in live and live[r].tokens_per_s
    )
    nominal = sum(_nominal_flops(specs[r]) for r in running if r in live and live[r].tokens_per_s)
    speed = min(10.0, max(0.1, measured / nominal)) if nominal and measured else 1.0
    left = []
    for run_id, state in states.items():
        if state not in ("pending", "running"):
            continue
        spec = specs[run_id]
        estimate = estimate_seconds(spec)
        if state == "running" and run_id in live and spec.tokens_to_train:
            # What is left of the tokens this run trains itself (a branch starts at its trunk's step).
            left_share = (spec.tokens - live[run_id].tokens) / spec.tokens_to_train
            estimate *= min(1.0, max(0.0, left_share))
        left.append(estimate / speed)
    eta = makespan_seconds(left, slots) if left else 0.0
    return Snapshot(counts=counts, tokens_per_s=tokens_per_s, eta_s=eta)


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._line_open = False

    def event(self, text: str) -> None:
        if not self.enabled:
            return
        self._clear()
        print(text, file=self.stream, flush=True)

    def update(self, snap: Snapshot, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < (TTY_INTERVAL_S if self.tty else PLAIN_INTERVAL_S):
            return
        self._last = now
        line = snap.line(self.total)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            self._line_open = True
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._line_open:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._line_open = False


def _nominal_flops(spec: RunSpec) -> float:
    if spec.resources.gpus:
        return spec.processes * spec.resources.gpus * GPU_FLOPS_PER_DEVICE
    return spec.processes * spec.resources.cpus * CPU_FLOPS_PER_CORE


def describe_result(spec: RunSpec, result: Mapping, wall_s: float) -> str:
    """One line for a run that ended with a result."""
    if result.get("status") == "diverged":
        return f"diverged  {spec.run_id}  {spec.label}: loss not finite at step {result.get('diverged_step')}"
    return (
        f"finished  {spec.run_id}  {spec.label}: eval loss {result.get('final_eval_loss', float('nan')):.4f}, "
        f"{result.get('tokens_per_s', 0):,.0f} tok/s, {format_duration(wall_s)}"
    )
