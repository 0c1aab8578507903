"""From a run's JSONL copy to MLflow metrics, exactly once.

Every run's main process writes ``metrics.jsonl`` (``trainers.callbacks.JsonlLogger``): records
``{"kind": "train" | "eval" | "start" | "end", "step", ...}`` in step order. The driver turns
records into metrics and logs them together with a *cursor* (the last train and eval step logged,
and whether the end record was) in one batch, which ``orchestrator.tracking.store.Store.log``
stores all or nothing. Replaying a file therefore never duplicates a metric:
whatever the store already holds is below the cursor. A resumed run rewrites steps past its
checkpoint; the cursor skips them (they carry the same losses, the resume being exact; the store
keeps the first attempt's throughput for them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainers.callbacks import read_jsonl
from trainers.run_folder import METRICS_FILE

# Every numeric field of a train or eval record is logged under its own name (``train/loss``,
# ``eval/loss``, the probes' ``diag/``, ``tokens/`` and ``probe/`` metrics, ...). ``train/tokens``
# is also logged as ``tokens`` (the history the analysis reads); the end record adds the run's
# throughput as ``tokens_per_s``.
RECORD_FIELDS = ("kind", "step")
MAX_METRICS_PER_BATCH = 900  # MLflow's log_batch takes at most 1000 metrics

Metric = tuple[str, float, int]  # (key, value, step)


@dataclass(frozen=True)
class Cursor:
    """What of a run's JSONL is already in the store."""

    train_step: int = -1  # last train record logged
    eval_step: int = -1  # last eval record logged
    end: bool = False  # the end record's metrics are logged

    def to_tag(self) -> str:
        return json.dumps({"train": self.train_step, "eval": self.eval_step, "end": self.end})

    @classmethod
    def from_tag(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(int(data["train"]), int(data["eval"]), bool(data["end"]))
        except (ValueError, KeyError, TypeError):
            return cls()


def read_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """The complete records of a run folder's JSONL copy (none if it has not started)."""
    return read_jsonl(Path(out_dir) / METRICS_FILE)


class JsonlTail:
    """A growing JSONL file read incrementally: each :meth:`read` parses only the lines appended
    since the last one, so following a long run costs the same at its end as at its start
    (reading the whole file at every look made the driver's cost grow with each run's length).

    ``records`` holds the file's complete records, as :func:`read_records` would return them:
    a last line still being written waits for its newline, and a line that never parses (a
    writer killed mid-line) is skipped. A file rewritten in place (a resumed run drops the
    records past its checkpoint, ``trainers.callbacks.JsonlLogger``), or removed and written
    anew, is noticed by the bytes just before the read position no longer being the ones read
    there, and read again from its start.
    """

    GUARD_BYTES = 64  # how much of what was read is checked again at the next read

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self._offset = 0  # bytes taken in: whole lines only
        self._guard = b""  # the last bytes taken in

    def read(self) -> list[dict[str, Any]]:
        """The records appended since the last call (after a rewrite: all of them)."""
        start = self._offset - len(self._guard)
        try:
            with open(self.path, "rb") as handle:
                handle.seek(start)
                data = handle.read()
        except FileNotFoundError:
            data = b""
        if not data.startswith(self._guard):  # rewritten or removed since the last read
            self.records, self._offset, self._guard = [], 0, b""
            return self.read()
        taken = data.rfind(b"\n") + 1  # up to the last complete line
        new = []
        for line in data[len(self._guard) : taken].splitlines():
            try:
                new.append(json.loads(line))
            except ValueError:  # a torn line (JSONDecodeError, or bytes cut mid-character)
                continue
        if taken > len(self._guard):
            self._offset = start + taken
            self._guard = data[max(0, taken - self.GUARD_BYTES) : taken]
        self.records.extend(new)
        return new


def record_metrics(record: dict[str, Any]) -> list[Metric]:
    """The MLflow metrics one JSONL record stands for (non-numeric fields are skipped)."""
    kind, step = record.get("kind"), record.get("step")
    if kind in ("train", "eval"):
        metrics = [(key, value, step) for key, value in record.items() if key not in RECORD_FIELDS]
        if kind == "train" and "train/tokens" in record:
            metrics.append(("tokens", record["train/tokens"], step))
    elif kind == "end":
        metrics = [("tokens_per_s", record.get("tokens_per_s"), record.get("steps"))]
    else:
        return []
    return [(key, float(value), int(at)) for key, value, at in metrics if _number(value) and at is not None]


def pending_batches(
    records: Sequence[dict[str, Any]], cursor: Cursor, max_metrics: int = MAX_METRICS_PER_BATCH
) -> Iterator[tuple[list[Metric], Cursor]]:
    """The metrics not yet logged, in batches of at most ``max_metrics``, each with the cursor to
    store along with it. Nothing at all when everything is logged."""
    batch: list[Metric] = []
    sent = cursor  # the cursor the store will hold after the last batch yielded
    for record in records:
        after = _advance(cursor, record)
        if after is None:
            continue  # below the cursor: already in the store
        metrics = record_metrics(record)
        if batch and len(batch) + len(metrics) > max_metrics:
            yield batch, cursor
            batch, sent = [], cursor
        while len(metrics) > max_metrics:
            # A record too big for one call: its first parts go out under the old cursor (a crash
            # between the parts would log them twice; records this big are rare).
            yield metrics[:max_metrics], cursor
            metrics = metrics[max_metrics:]
        batch.extend(metrics)
        cursor = after
    if batch or cursor != sent:
        yield batch, cursor


def _advance(cursor: Cursor, record: dict[str, Any]) -> Cursor | None:
    """The cursor once ``record`` is logged, or None if it already is."""
    kind, step = record.get("kind"), record.get("step")
    if kind == "train" and step is not None and step > cursor.train_step:
        return Cursor(step, cursor.eval_step, cursor.end)
    if kind == "eval" and step is not None and step > cursor.eval_step:
        return Cursor(cursor.train_step, step, cursor.end)
    if kind == "end" and not cursor.end:
        return Cursor(cursor.train_step, cursor.eval_step, True)
    return None


def latest(records: Sequence[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The last record of ``kind`` (``train``, ``eval``, ``start``, ``end``), or None."""
    for record in reversed(records):
        if record.get("kind") == kind:
            return record
    return None


def _number(value: Any) -> bool:
    # NaN and inf are kept: MLflow stores them, and a non-finite loss is worth seeing.
    return isinstance(value, (int, float)) and not isinstance(value, bool)
