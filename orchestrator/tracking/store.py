"""The tracking store: one MLflow experiment per grid, one MLflow run per grid point.

Layout (what ``analysis.load`` reads): the experiment is named after the grid; each run is
tagged ``gammaray.grid``, ``gammaray.run_id``, ``gammaray.state`` (pending, running, finished,
failed, diverged, cancelled) and ``gammaray.reason``; its params are the resolved config with
dotted keys plus ``N``, ``N_non_embedding``, ``D``, ``FLOPs``; its metrics are the histories
``train/loss``, ``eval/loss``, ``tokens``, ... and ``tokens_per_s``; its artifacts are
``config.yaml``, ``summary.json`` and ``metrics.jsonl``.

Bookkeeping tags: ``gammaray.logged`` (the replay cursor, see ``orchestrator.tracking.replay``),
``gammaray.attempts``, ``gammaray.cancel_requested`` (written only by ``gammaray cancel``, so a
driver never overwrites a request), ``gammaray.params_logged``, ``gammaray.artifacts_logged``;
the experiment's ``gammaray.driver`` tag is the submitting driver's heartbeat. A WSD branch
(``orchestrator.grids.branch``) is tagged ``gammaray.branch``: ``<trunk run id>@<start step>``.

The embedded store is SQLite, which allows one writer at a time: only a grid's driver writes
during a submission, and every call here retries while the database is locked by another
process (a second grid's driver, ``gammaray cancel``), so no write is lost to "database is locked".
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.errors import TrackingError
from orchestrator.tracking import sql_log
from orchestrator.tracking.replay import Cursor, Metric
from trainers.run_folder import RESULT_STATES, sqlite_path
from trainers.store_reader import StoreReader, TrackedRun

TAG_GRID = "gammaray.grid"
TAG_RUN_ID = "gammaray.run_id"
TAG_STATE = "gammaray.state"
TAG_REASON = "gammaray.reason"
TAG_CURSOR = "gammaray.logged"
TAG_ATTEMPTS = "gammaray.attempts"
TAG_CANCEL = "gammaray.cancel_requested"
TAG_PARAMS = "gammaray.params_logged"
TAG_ARTIFACTS = "gammaray.artifacts_logged"
TAG_DRIVER = "gammaray.driver"
TAG_BRANCH = "gammaray.branch"

# MLflow's own run status, kept in step with the gammaray state for the MLflow UI.
_MLFLOW_STATUS = {
    "pending": "SCHEDULED",
    "running": "RUNNING",
    "finished": "FINISHED",
    "diverged": "FAILED",
    "failed": "FAILED",
    "cancelled": "KILLED",
}
_LOCK_RETRY_S = 120.0  # give up on a locked database after this long (a stuck writer, not contention)

T = TypeVar("T")


@dataclass
class StoredRun:
    """A grid point's MLflow run as the store has it."""

    mlflow_id: str
    run_id: str
    state: str
    reason: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each metric
    name: str = ""
    start_time: int = 0

    @property
    def cursor(self) -> Cursor:
        return Cursor.from_tag(self.tags.get(TAG_CURSOR))

    @property
    def attempts(self) -> int:
        return int(self.tags.get(TAG_ATTEMPTS, 0) or 0)


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def artifact_root(uri: str) -> Path | None:
    """Where an embedded store keeps artifacts: ``mlartifacts/`` beside the database file."""

    db = sqlite_path(uri)
    return db.parent / "mlartifacts" if db is not None else None


class Store:
    """A small, retrying front to the tracking store for the calls gammaray makes.

    Reads go through :class:`trainers.store_reader.StoreReader` (an SQL store's tables, so a
    read-only command such as ``gammaray status`` never imports MLflow). Metric points and
    tags go into an SQL store's tables too (:meth:`log`); the other writes go through
    ``MlflowClient``, created on first use.
    """

    def __init__(self, uri: str):
        self.uri = uri
        if uri.startswith(("http://", "https://")):
            # Fail over to the JSONL copy within seconds instead of MLflow's minutes of retries;
            # the driver retries on its next flush anyway. A user's own settings win.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.reader = StoreReader(uri)

    @property
    def client(self) -> Any:
        return self.reader.client

    # ---- experiments ---------------------------------------------------------------------

    def experiment_id(self, grid: str, create: bool) -> str | None:
        """The grid's experiment id; created (with its artifact folder) when ``create``."""
        if not create:
            return _retry(self.reader.experiment_id, grid)
        experiment = _retry(self.client.get_experiment_by_name, grid)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                _retry(self.client.restore_experiment, experiment.experiment_id)
            return experiment.experiment_id
        root = artifact_root(self.uri)
        location = (root / grid).as_uri() if root is not None else None
        try:
            return _retry(
                self.client.create_experiment, grid, artifact_location=location, tags={TAG_GRID: grid}
            )
        except Exception:
            # Another process created it in between: use theirs.
            experiment = _retry(self.client.get_experiment_by_name, grid)
            if experiment is None:
                raise
            return experiment.experiment_id

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        return _retry(self.reader.experiment_tags, experiment_id)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        _retry(self.client.set_experiment_tag, experiment_id, key, value)

    def grids(self, limit: int = 20) -> list[str]:
        return _retry(self.reader.experiment_names, limit)

    # ---- runs ----------------------------------------------------------------------------

    def runs(
        self, experiment_id: str, with_tag: str | None = None, param_keys: Collection[str] | None = None
    ) -> dict[str, StoredRun]:
        """Every grid point's run in the experiment (or only those tagged ``with_tag``), by
        gammaray run id; ``param_keys`` limits the params read (:meth:`StoreReader.runs`).

        If a point has two MLflow runs (a creation interrupted between calls), the one with a
        result, else the oldest, is kept.
        """
        found: dict[str, StoredRun] = {}
        for tracked in _retry(self.reader.runs, experiment_id, with_tag, param_keys):
            stored = _stored(tracked)
            if stored is None:
                continue
            current = found.get(stored.run_id)
            if current is None or _prefer(stored, current):
                found[stored.run_id] = stored
        return found

    def create_run(
        self,
        experiment_id: str,
        grid: str,
        run_id: str,
        name: str,
        params: dict[str, str],
        tags: Mapping[str, str] | None = None,
    ) -> StoredRun:
        """A new pending run for a grid point, with its params (and any further ``tags``)."""
        tags = {TAG_GRID: grid, TAG_RUN_ID: run_id, TAG_STATE: "pending", **(tags or {})}
        run = _retry(self.client.create_run, experiment_id, tags=tags, run_name=name)
        mlflow_id = run.info.run_id
        _retry(self.client.update_run, mlflow_id, status="SCHEDULED")
        self._log_params(mlflow_id, params)
        return StoredRun(
            mlflow_id, run_id, "pending", tags={**tags, TAG_PARAMS: "1"}, params=dict(params), name=name
        )

    def ensure_params(self, stored: StoredRun, params: dict[str, str]) -> None:
        """Log params a run lacks (its creation was interrupted); params already set are left."""
        missing = {k: v for k, v in params.items() if k not in stored.params}
        self._log_params(stored.mlflow_id, missing)
        stored.params.update(missing)
        stored.tags[TAG_PARAMS] = "1"

    def _log_params(self, mlflow_id: str, params: dict[str, str]) -> None:
        """``params``, then the tag that says they are all there (with the last of them)."""
        from mlflow.entities import Param, RunTag

        items = [Param(k, v) for k, v in params.items()]
        chunks = [items[start : start + 100] for start in range(0, len(items), 100)] or [
            []
        ]  # ≤ 100 per batch
        for chunk in chunks[:-1]:
            _retry(self.client.log_batch, mlflow_id, params=chunk)
        _retry(self.client.log_batch, mlflow_id, params=chunks[-1], tags=[RunTag(TAG_PARAMS, "1")])

    def log(self, mlflow_id: str, metrics: Iterable[Metric] = (), tags: dict[str, str] | None = None) -> None:
        """Metrics and tags stored together or not at all: in one transaction in an SQL store
        (``orchestrator.tracking.sql_log``), in one ``log_batch`` call to a server."""
        now = int(time.time() * 1000)
        if self.reader.engine is not None:
            points = [(key, value, now, step) for key, value, step in metrics]
            _retry(sql_log.log_batch, self.reader.engine, mlflow_id, points, tags or {})
            return
        from mlflow.entities import Metric as MlflowMetric
        from mlflow.entities import RunTag

        _retry(
            self.client.log_batch,
            mlflow_id,
            metrics=[MlflowMetric(key, value, now, step) for key, value, step in metrics],
            tags=[RunTag(k, v) for k, v in (tags or {}).items()],
        )

    def set_state(
        self, stored: StoredRun, state: str, reason: str | None, extra: dict[str, str] | None = None
    ) -> None:
        """Record a state (and its reason) in the tags and in MLflow's own run status."""
        tags = {TAG_STATE: state, TAG_REASON: reason or "", **(extra or {})}
        self.log(stored.mlflow_id, tags=tags)
        status = _MLFLOW_STATUS[state]
        if status in ("FINISHED", "FAILED", "KILLED"):
            _retry(self.client.set_terminated, stored.mlflow_id, status=status)
        else:
            _retry(self.client.update_run, stored.mlflow_id, status=status)
        stored.state, stored.reason = state, reason
        stored.tags.update(tags)

    def delete_tag(self, stored: StoredRun, key: str) -> None:
        if key in stored.tags:
            _retry(self.client.delete_tag, stored.mlflow_id, key)
            stored.tags.pop(key, None)

    def log_artifacts(self, stored: StoredRun, files: Iterable[Path]) -> None:
        from mlflow.entities import RunTag

        for path in files:
            if Path(path).is_file():
                _retry(self.client.log_artifact, stored.mlflow_id, str(path))
        _retry(self.client.log_batch, stored.mlflow_id, tags=[RunTag(TAG_ARTIFACTS, "1")])
        stored.tags[TAG_ARTIFACTS] = "1"


# ---- driver heartbeat --------------------------------------------------------------------


def driver_record() -> dict[str, Any]:
    """Who is submitting: host, pid and the time, for ``gammaray.driver``."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}


def parse_driver_record(text: str | None) -> dict[str, Any] | None:
    """The ``gammaray.driver`` tag's record, or None when it is absent or unreadable."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def other_live_driver(text: str | None, stale_s: float) -> dict[str, Any] | None:
    """The driver recorded in ``text`` if it is another process that still seems alive."""
    record = parse_driver_record(text)
    if record is None:
        return None
    if record.get("state") == "exited" or time.time() - float(record.get("heartbeat", 0)) > stale_s:
        return None
    if record.get("host") == socket.gethostname():
        if record.get("pid") == os.getpid():
            return None
        try:
            os.kill(int(record["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return None  # that driver is gone (killed): its heartbeat is stale
    return record


# ---- read-only views ---------------------------------------------------------------------


def open_existing(uri: str, grid: str) -> tuple[Store, str]:
    """The store and the grid's experiment id; TrackingError for a missing store or grid."""

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"no tracking store at {db} (submit a grid first, or pass --tracking-uri)")
    try:
        store = Store(uri)
        experiment_id = store.experiment_id(grid, create=False)
    except TrackingError:
        raise
    except Exception as error:
        raise TrackingError(f"cannot open tracking store {uri}: {one_line(error)}") from None
    if experiment_id is None:
        known = store.grids()
        hint = f" (grids there: {', '.join(known)})" if known else " (it holds no grids)"
        raise TrackingError(f"unknown grid '{grid}' in {uri}{hint}")
    return store, experiment_id


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# ---- helpers -----------------------------------------------------------------------------


def _stored(run: TrackedRun) -> StoredRun | None:
    """A grid point's run from what the store holds of it; None for a run of no grid point."""
    run_id = run.tags.get(TAG_RUN_ID)
    if not run_id:
        return None
    return StoredRun(
        mlflow_id=run.mlflow_id,
        run_id=run_id,
        state=run.tags.get(TAG_STATE, "pending"),
        reason=run.tags.get(TAG_REASON) or None,
        tags=run.tags,
        params=run.params,
        metrics=run.metrics,
        name=run.name,
        start_time=run.start_time,
    )


def _prefer(candidate: StoredRun, current: StoredRun) -> bool:
    rank = lambda s: (s.state in RESULT_STATES, -s.start_time)  # noqa: E731
    return rank(candidate) > rank(current)


def _retry(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with jittered backoff while SQLite reports a lock."""
    delay, deadline = 0.05, time.monotonic() + _LOCK_RETRY_S
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not _locked(error) or time.monotonic() > deadline:
                raise
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 2.0)


def _locked(error: BaseException) -> bool:
    text = str(error).lower()
    return "database is locked" in text or "database table is locked" in text or "database is busy" in text


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line that serves the store at ``uri``."""
    import sys

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"no tracking store at {db} (submit a grid first, or pass --tracking-uri)")
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
