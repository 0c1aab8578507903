"""Reading an MLflow tracking store: a grid's experiment, its runs and their metric histories.

An MLflow SQL store (SQLite, PostgreSQL, ...) is read straight from its tables, each read in a
few queries and without importing MLflow; an MLflow server (``http://``) through
``MlflowClient``. Either way a run comes back as a :class:`TrackedRun`. The orchestrator's
``Store`` (which also writes) and ``analysis.load`` both read through :class:`StoreReader`.

MLflow owns the SQL schema (``mlflow.store.tracking.dbmodels.models``); the tables below
declare only the columns read, and a test holds them to MLflow's. Reading them directly
matters twice over: importing MLflow takes 2–3 s, most of what ``gammaray status`` on a
1,000-run grid takes otherwise, and building MLflow's objects for every param and metric
point of a grid of hundreds of runs takes longer than the queries.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, String, Table, select

# The URI schemes of MLflow's SQL stores (``mlflow.store.db.db_types``); a driver may follow a
# ``+``, as in ``postgresql+psycopg://``.
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# Runs per query where a list of run ids is sent (within SQLite's parameter limit).
_RUNS_PER_QUERY = 500

_tables = MetaData()
experiments = Table(
    "experiments",
    _tables,
    Column("experiment_id", Integer, primary_key=True),
    Column("name", String(256)),
    Column("lifecycle_stage", String(32)),
    Column("creation_time", BigInteger),
)
experiment_tags = Table(
    "experiment_tags",
    _tables,
    Column("experiment_id", Integer),
    Column("key", String(250)),
    Column("value", String(5000)),
)
runs = Table(
    "runs",
    _tables,
    Column("run_uuid", String(32), primary_key=True),
    Column("experiment_id", Integer),
    Column("name", String(250)),
    Column("status", String(20)),
    Column("start_time", BigInteger),
    Column("lifecycle_stage", String(20)),
)
tags, params = (
    Table(
        name,
        _tables,
        Column("run_uuid", String(32)),
        Column("key", String(250)),
        Column("value", String(8000)),
    )
    for name in ("tags", "params")
)
latest_metrics, metrics = (
    Table(
        name,
        _tables,
        Column("run_uuid", String(32)),
        Column("key", String(250)),
        Column("value", Float(precision=53)),
        Column("timestamp", BigInteger),
        Column("step", BigInteger),
        Column("is_nan", Boolean),
    )
    for name in ("latest_metrics", "metrics")
)
TABLES = (experiments, experiment_tags, runs, tags, params, latest_metrics, metrics)


def sql_engine(tracking_uri: str) -> Any | None:
    """A SQLAlchemy engine on the MLflow SQL store at ``tracking_uri``, or None for any other
    kind of store (an MLflow server). Nothing is opened until the first query."""
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in SQL_SCHEMES:
        return None
    from sqlalchemy import create_engine

    return create_engine(tracking_uri)


@dataclass(frozen=True)
class TrackedRun:
    """One MLflow run as a reader of the tracking store needs it: tags, params and each
    metric's latest value, with the run's name, start time and MLflow status."""

    mlflow_id: str
    name: str
    start_time: int
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


class StoreReader:
    """The reads gammaray makes of the tracking store at ``uri``.

    For an SQL store, nothing is opened until the first read, and SQLite's file must exist
    before it (a query would create an empty one). A read that meets a lock raises; callers
    that share the store with a writer retry it whole.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.engine = sql_engine(uri)

    @functools.cached_property
    def client(self) -> Any:
        """MLflow's client on the store: for a server's reads, and for any writes."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, name: str) -> str | None:
        """The id of the experiment named ``name``, active or deleted, or None."""
        if self.engine is None:
            experiment = self.client.get_experiment_by_name(name)
            return None if experiment is None else experiment.experiment_id
        query = select(experiments.c.experiment_id).where(experiments.c.name == name)
        with self.engine.connect() as connection:
            found = connection.execute(query).scalar()
        return None if found is None else str(found)

    def experiment_names(self, limit: int = 20) -> list[str]:
        """Up to ``limit`` active experiments' names, newest first (MLflow's order), without
        MLflow's ``Default``."""
        if self.engine is None:
            found = self.client.search_experiments(max_results=limit + 1)
            return [e.name for e in found if e.name != "Default"][:limit]
        query = (
            select(experiments.c.name)
            .where(experiments.c.lifecycle_stage == "active", experiments.c.name != "Default")
            .order_by(experiments.c.creation_time.desc(), experiments.c.experiment_id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        if self.engine is None:
            return dict(self.client.get_experiment(experiment_id).tags)
        c = experiment_tags.c
        query = select(c.key, c.value).where(c.experiment_id == int(experiment_id))
        with self.engine.connect() as connection:
            return dict(connection.execute(query).all())

    def runs(
        self, experiment_id: str, with_tag: str | None = None, param_keys: Collection[str] | None = None
    ) -> list[TrackedRun]:
        """The experiment's active runs (or those tagged ``with_tag``), newest first, as
        MLflow's ``search_runs`` orders them. ``param_keys`` limits the params read to those
        keys (in an SQL store; a server's search returns them all). Metrics MLflow marks as
        NaN are NaN."""
        if self.engine is None:
            return self._searched_runs(experiment_id, with_tag)
        chosen = select(runs.c.run_uuid).where(
            runs.c.experiment_id == int(experiment_id), runs.c.lifecycle_stage == "active"
        )
        if with_tag:
            chosen = chosen.where(runs.c.run_uuid.in_(select(tags.c.run_uuid).where(tags.c.key == with_tag)))
        tag_values: dict[str, dict[str, str]] = {}
        param_values: dict[str, dict[str, str]] = {}
        metric_values: dict[str, dict[str, float]] = {}
        with self.engine.connect() as connection:
            for table, keys, into in ((tags, None, tag_values), (params, param_keys, param_values)):
                query = select(table.c.run_uuid, table.c.key, table.c.value).where(
                    table.c.run_uuid.in_(chosen)
                )
                if keys is not None:
                    query = query.where(table.c.key.in_(list(keys)))
                for mlflow_id, key, value in connection.execute(query):
                    into.setdefault(mlflow_id, {})[key] = value
            latest = latest_metrics.c
            query = select(latest.run_uuid, latest.key, latest.value, latest.is_nan).where(
                latest.run_uuid.in_(chosen)
            )
            for mlflow_id, key, value, is_nan in connection.execute(query):
                metric_values.setdefault(mlflow_id, {})[key] = math.nan if is_nan else value
            query = (
                select(runs.c.run_uuid, runs.c.name, runs.c.start_time, runs.c.status)
                .where(runs.c.run_uuid.in_(chosen))
                .order_by(runs.c.start_time.desc(), runs.c.run_uuid)  # search_runs' order
            )
            found = list(connection.execute(query))
        return [
            TrackedRun(
                mlflow_id=mlflow_id,
                name=name or "",
                start_time=start_time or 0,
                status=status or "",
                tags=tag_values.get(mlflow_id, {}),
                params=param_values.get(mlflow_id, {}),
                metrics=metric_values.get(mlflow_id, {}),
            )
            for mlflow_id, name, start_time, status in found
        ]

    def _searched_runs(self, experiment_id: str, with_tag: str | None) -> list[TrackedRun]:
        # Filtering in the server matters: a search loads every matching run's latest metrics.
        having = f"tags.`{with_tag}` LIKE '%'" if with_tag else ""
        found, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], having, max_results=1000, page_token=token)
            found += [
                TrackedRun(
                    mlflow_id=run.info.run_id,
                    name=run.info.run_name or "",
                    start_time=run.info.start_time or 0,
                    status=run.info.status or "",
                    tags=dict(run.data.tags),
                    params=dict(run.data.params),
                    metrics=dict(run.data.metrics),
                )
                for run in page
            ]
            token = page.token
            if not token:
                return found

    def metric_points(
        self, wanted: Mapping[str, Collection[str]]
    ) -> dict[str, list[tuple[str, int, int, float]]]:
        """Every logged point of the metrics ``wanted[mlflow_id]`` of each run, as ``(metric,
        step, timestamp, value)`` in no particular order: from an SQL store in one query per
        500 runs, from a server one run and metric at a time."""
        if self.engine is None:
            return {
                mlflow_id: [
                    (key, m.step, m.timestamp, m.value)
                    for key in keys
                    for m in self.client.get_metric_history(mlflow_id, key)
                ]
                for mlflow_id, keys in wanted.items()
            }
        points: dict[str, list[tuple[str, int, int, float]]] = {mlflow_id: [] for mlflow_id in wanted}
        ids = list(wanted)
        keys = sorted(set().union(*wanted.values()))
        c = metrics.c
        with self.engine.connect() as connection:
            for start in range(0, len(ids), _RUNS_PER_QUERY):
                query = select(c.run_uuid, c.key, c.step, c.timestamp, c.value, c.is_nan).where(
                    c.run_uuid.in_(ids[start : start + _RUNS_PER_QUERY]), c.key.in_(keys)
                )
                for mlflow_id, key, step, timestamp, value, is_nan in connection.execute(query):
                    if key in wanted[mlflow_id]:
                        points[mlflow_id].append((key, step, timestamp, math.nan if is_nan else value))
        return points
