"""Logging a run's metric points and tags into an MLflow SQL store, in one transaction.

``MlflowClient.log_batch`` on an SQL store builds an ORM object for every point and commits the
metrics and the tags in separate transactions. The driver's replay relies on the opposite: a
batch's points and the cursor tag that covers them are stored together or not at all
(``orchestrator.tracking.replay``); with the metrics committed and the cursor not, a resumed
driver would log those points a second time. Its ORM also costs the driver about four times the
CPU of this module's writes (``benchmarks/bench_store_writes.py``: 80–140 µs a point against
20–35), CPU that on a laptop's two cores is taken from the training runs.

:func:`log_batch` writes the same rows as MLflow's ``log_batch`` (a test compares every row of
both, NaN and infinities included), with SQLAlchemy Core, in one transaction:

- ``metrics``: one row per point; NaN is stored as 0 with ``is_nan``, ±inf as ±float max
  (MLflow's ``sanitize_metric_value``); a point already stored, or sent twice, is written once.
- ``latest_metrics``: per key, the point with the greatest ``(step, timestamp, value)``.
- ``tags``: each key's value replaced (the last one sent wins).

Keys and values are checked by MLflow's own validators, so what MLflow refuses is refused here
too. The tables are declared in ``trainers.store_reader``, which a test holds to MLflow's schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update

from orchestrator.errors import TrackingError
from trainers.store_reader import latest_metrics, metrics, runs, tags

_FLOAT_MAX = 1.7976931348623157e308

Point = tuple[str, float, int, int]  # (key, value, timestamp in ms, step)


def log_batch(engine: Any, mlflow_id: str, points: Iterable[Point], tag_values: Mapping[str, str]) -> None:
    """Store ``points`` and ``tag_values`` on the active run ``mlflow_id``, all or nothing.

    Raises MLflow's own error for a key or value MLflow would refuse, TrackingError for a run
    that is missing or deleted; a locked SQLite database raises SQLAlchemy's OperationalError
    (the caller retries the whole call).
    """
    from mlflow.utils.validation import _validate_tag

    rows = _metric_rows(mlflow_id, points)
    tag_values = {tag.key: tag.value for tag in (_validate_tag(k, v) for k, v in tag_values.items())}
    with engine.begin() as connection:
        stage = connection.execute(
            select(runs.c.lifecycle_stage).where(runs.c.run_uuid == mlflow_id)
        ).scalar()
        if stage != "active":
            raise TrackingError(f"run {mlflow_id}: cannot log to a {'deleted' if stage else 'missing'} run")
        if rows:
            new = _unstored(connection, mlflow_id, rows)
            if new:
                connection.execute(insert(metrics), new)
            _update_latest(connection, mlflow_id, rows)
        if tag_values:
            _set_tags(connection, mlflow_id, tag_values)


def _metric_rows(mlflow_id: str, points: Iterable[Point]) -> list[dict[str, Any]]:
    """The ``metrics`` rows of ``points``, sanitized as MLflow stores them, each once."""
    from mlflow.utils.validation import _validate_metric

    rows: dict[tuple, dict[str, Any]] = {}
    for key, value, timestamp, step in points:
        _validate_metric(key, value, timestamp, step)
        is_nan = math.isnan(value)
        stored = 0.0 if is_nan else max(-_FLOAT_MAX, min(_FLOAT_MAX, value))
        row = {
            "run_uuid": mlflow_id,
            "key": key,
            "value": stored,
            "timestamp": timestamp,
            "step": step,
            "is_nan": is_nan,
        }
        rows.setdefault(_identity(row), row)
    return list(rows.values())


def _identity(row: Mapping[str, Any]) -> tuple:
    """A point's primary key within its run (``metric_pk`` less ``run_uuid``)."""
    return row["key"], row["timestamp"], row["step"], row["value"], bool(row["is_nan"])


def _unstored(connection: Any, mlflow_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows not in the store yet. Only the batch's step range is read: the replay's batches
    are new steps, so this is a handful of rows, not the run's history."""
    c = metrics.c
    steps = [row["step"] for row in rows]
    query = select(c.key, c.timestamp, c.step, c.value, c.is_nan).where(
        c.run_uuid == mlflow_id, c.step.between(min(steps), max(steps))
    )
    stored = {_identity(row._mapping) for row in connection.execute(query)}
    return [row for row in rows if _identity(row) not in stored]


def _update_latest(connection: Any, mlflow_id: str, rows: list[dict[str, Any]]) -> None:
    """Each key's latest point: the greatest ``(step, timestamp, value)`` of the stored one and
    the new ones (MLflow's ``_update_latest_metrics_if_necessary``; a tie keeps the earlier)."""
    order = lambda row: (row["step"], row["timestamp"], row["value"])  # noqa: E731
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["key"] not in newest or order(row) > order(newest[row["key"]]):
            newest[row["key"]] = row
    c = latest_metrics.c
    query = select(c.key, c.step, c.timestamp, c.value).where(
        c.run_uuid == mlflow_id, c.key.in_(list(newest))
    )
    stored = {row.key: row._mapping for row in connection.execute(query)}
    fresh = [row for key, row in newest.items() if key not in stored]
    if fresh:
        connection.execute(insert(latest_metrics), fresh)
    newer = [
        {"run": mlflow_id, "name": key, **{k: row[k] for k in ("value", "timestamp", "step", "is_nan")}}
        for key, row in newest.items()
        if key in stored and order(row) > order(stored[key])
    ]
    if newer:  # one statement, executed for every row
        connection.execute(
            update(latest_metrics)
            .where(and_(c.run_uuid == bindparam("run"), c.key == bindparam("name")))
            .values(value=bindparam("value"), timestamp=bindparam("timestamp"), step=bindparam("step"),
                    is_nan=bindparam("is_nan")),
            newer,
        )  # fmt: skip


def _set_tags(connection: Any, mlflow_id: str, tag_values: Mapping[str, str]) -> None:
    """Insert the run's new tags and overwrite the values of those it has."""
    c = tags.c
    query = select(c.key).where(c.run_uuid == mlflow_id, c.key.in_(list(tag_values)))
    present = set(connection.execute(query).scalars())
    fresh = [{"run_uuid": mlflow_id, "key": k, "value": v} for k, v in tag_values.items() if k not in present]
    if fresh:
        connection.execute(insert(tags), fresh)
    if present:
        connection.execute(
            update(tags).where(and_(c.run_uuid == bindparam("run"), c.key == bindparam("name"))),
            [{"run": mlflow_id, "name": key, "value": tag_values[key]} for key in present],
        )
