"""``gammaray status`` and ``gammaray cancel``: a grid as the tracking store has it.

Both work from any shell or machine that can reach the store; neither needs the driver, Ray
or the run folders. ``cancel`` marks the grid's pending and running runs ``cancelled`` and
leaves a request (``gammaray.cancel_requested``) that the grid's driver, if one is running,
acts on within seconds by stopping their Ray tasks. Checkpoints stay: submitting the grid
again resumes the cancelled runs.
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.tracking.store import (
    TAG_CANCEL,
    TAG_DRIVER,
    StoredRun,
    open_existing,
    parse_driver_record,
)
from trainers.run_folder import OPEN_STATES, RUN_STATES

# Params shown per run, and the only ones read (the analysis reads them all).
_COLUMNS = {
    "N": "N",
    "D": "D",
    "gamma": "init.gamma",
    "weight_decay": "optim.weight_decay",
    "preset": "model.preset",
}


def grid_status(uri: str, grid: str) -> dict[str, Any]:
    """``{"grid", "tracking_uri", "counts": {state: n}, "runs": [{"id", "state", ...}], "driver"}``.

    Each run: ``id`` (run id), ``state``, ``reason``, ``name`` (its swept values), ``preset``,
    ``N``, ``D``, ``gamma``, ``weight_decay``, ``loss`` (last eval loss so far), ``tokens``
    (trained so far), ``tokens_per_s``, ``attempts``, ``mlflow_run_id``. ``driver``: the last
    submitting driver's host, pid, heartbeat age in seconds and whether it exited.
    """
    store, experiment_id = open_existing(uri, grid)
    runs = sorted(
        store.runs(experiment_id, param_keys=_COLUMNS.values()).values(),
        key=lambda r: (RUN_STATES.index(r.state) if r.state in RUN_STATES else 99, r.name),
    )
    counts = {state: 0 for state in RUN_STATES}
    for run in runs:
        counts[run.state] = counts.get(run.state, 0) + 1
    return {
        "grid": grid,
        "tracking_uri": uri,
        "counts": counts,
        "runs": [_row(run) for run in runs],
        "driver": _driver(store.experiment_tags(experiment_id).get(TAG_DRIVER)),
    }


def request_cancel(uri: str, grid: str) -> list[str]:
    """Mark the grid's pending and running runs cancelled; returns their run ids."""
    store, experiment_id = open_existing(uri, grid)
    cancelled = []
    for run in store.runs(experiment_id).values():
        if run.state in OPEN_STATES:
            store.set_state(run, "cancelled", "cancelled by request", extra={TAG_CANCEL: str(time.time())})
            cancelled.append(run.run_id)
    return sorted(cancelled)


def _row(run: StoredRun) -> dict[str, Any]:
    from analysis.load import parse_param

    row: dict[str, Any] = {"id": run.run_id, "state": run.state, "reason": run.reason, "name": run.name}
    for column, param in _COLUMNS.items():
        row[column] = parse_param(run.params[param]) if param in run.params else None
    row.update(
        loss=run.metrics.get("eval/loss"),
        tokens=run.metrics.get("tokens"),
        tokens_per_s=run.metrics.get("tokens_per_s", run.metrics.get("train/tokens_per_s")),
        attempts=run.attempts,
        mlflow_run_id=run.mlflow_id,
    )
    return row


def _driver(text: str | None) -> dict[str, Any] | None:
    record = parse_driver_record(text)
    if record is None:
        return None
    return {
        "host": record.get("host"),
        "pid": record.get("pid"),
        "seconds_since_heartbeat": round(time.time() - float(record.get("heartbeat", 0)), 1),
        "exited": record.get("state") == "exited",
    }
