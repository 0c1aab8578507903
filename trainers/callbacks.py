"""How a run's metrics leave the loop: callbacks with ``on_start``, ``on_step``, ``on_eval``, ``on_end``.

Only the main process of a run calls them. Metric names use ``/`` namespaces (``train/loss``,
``eval/loss``); values are plain floats.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class Callback:
    """Base class: override what you need. ``step`` counts optimizer steps done."""

    def on_start(self, info: dict[str, Any], resumed_step: int) -> None:
        """``info``: the resolved run's summary (ids, counts, steps); ``resumed_step`` 0 if fresh."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Training metrics every ``train.log_every`` steps."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Held-out metrics at step 0, every ``train.eval_every`` steps and at the end."""

    def on_end(self, result: dict[str, Any]) -> None:
        """The run's final summary (``RunResult.to_dict()``), whatever its status."""


class JsonlLogger(Callback):
    """Appends one JSON line per record to ``path``: ``{"kind": "train"|"eval"|"start"|"end", "step", ...}``.

    On resume, records past the checkpoint's step (written by the interrupted attempt) are
    dropped first, so the file reads as one uninterrupted run. ``attempt``, when given, names
    the attempt in its start record: a reader that knows which attempt it launched can tell
    when the file has been cut back and is this attempt's.
    """

    def __init__(self, path: Path, attempt: str | None = None):
        self.path = Path(path)
        self.attempt = attempt

    def on_start(self, info: dict[str, Any], resumed_step: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [
            r
            for r in read_jsonl(self.path)
            if r.get("kind") in ("train", "eval") and r["step"] <= resumed_step
        ]
        with open(self.path, "w") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")
        named = {"attempt": self.attempt} if self.attempt is not None else {}
        self._write({"kind": "start", "step": resumed_step, **named, **info})

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._write({"kind": "train", "step": step, **metrics})

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._write({"kind": "eval", "step": step, **metrics})

    def on_end(self, result: dict[str, Any]) -> None:
        self._write({"kind": "end", **result})

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a JSONL file (a torn last line from a killed writer is skipped)."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class ConsoleProgress(Callback):
    """One line per log interval and per eval on ``stream`` (stderr by default, so stdout stays
    clean for ``--json``)."""

    def __init__(self, stream: TextIO | None = None):
        # None means "stderr at print time": a stream cannot be pickled into spawned workers.
        self.stream = stream
        self.total_steps = 0
        self.started = time.perf_counter()

    def on_start(self, info: dict[str, Any], resumed_step: int) -> None:
        self.total_steps = info["steps"]
        self.started = time.perf_counter()
        where = f"resuming at step {resumed_step}" if resumed_step else "starting"
        self._print(f"run {info['run_id']}: {where}, {info['steps']} steps, {info['tokens']:,} tokens")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        percent = 100 * step / max(self.total_steps, 1)
        self._print(
            f"step {step:>6}/{self.total_steps} ({percent:5.1f}%)  loss {metrics['train/loss']:.4f}  "
            f"lr {metrics['train/lr']:.2e}  {metrics['train/tokens_per_s']:,.0f} tok/s"
        )

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._print(f"step {step:>6}/{self.total_steps}  eval loss {metrics['eval/loss']:.4f}")

    def on_end(self, result: dict[str, Any]) -> None:
        detail = f" at step {result['diverged_step']}" if result.get("diverged_step") is not None else ""
        self._print(
            f"run {result['run_id']}: {result['status']}{detail}, final eval loss {result['final_eval_loss']:.4f}, "
            f"{result['wall_s']:.1f} s"
        )

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)
