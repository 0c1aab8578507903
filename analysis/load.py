"""Runs as a tidy table: from a grid in the MLflow tracking store, or from a CSV file.

Either way the result is a :class:`RunTable`: one row per run (finished or not) with the
columns ``run_id, state, reason, N, N_non_embedding, D, FLOPs, loss`` followed by every other
parameter, plus a long table of loss histories. Only finished runs are fitted; failed,
diverged and unfinished runs stay in the table so reports can list them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from trainers.run_folder import RUN_STATES, default_tracking_uri, sqlite_path
from trainers.store_reader import StoreReader, TrackedRun

CORE_COLUMNS = ("run_id", "state", "reason", "N", "N_non_embedding", "D", "FLOPs", "loss")
HISTORY_METRICS = ("train/loss", "eval/loss", "tokens")
# Namespaces whose every metric is loaded with its history: diagnostics over training, token-level
# losses and the reasoning probe (trainers.probes).
HISTORY_PREFIXES = ("diag/", "tokens/", "probe/")
# Downstream scores (``gammaray eval``): ``eval/<task>/<metric>``, at the step that was scored.
DOWNSTREAM_METRIC = re.compile(r"^eval/(?P<task>[^/]+)/(?P<metric>[^/]+)$")
# The entropy rate of a run's data in nats per token, where its source knows it (the generated
# corpora do): the known floor of the loss, for ``--e known``.
ENTROPY_COLUMN = "entropy_per_token"
# Param keys that identify the grouping by default, in order of preference.
GAMMA_KEYS = ("init.gamma", "gamma")
# MLflow run status → gammaray state, for runs that lack the gammaray.state tag.
_MLFLOW_STATUS = {
    "FINISHED": "finished",
    "FAILED": "failed",
    "RUNNING": "running",
    "SCHEDULED": "pending",
    "KILLED": "cancelled",
}
# FLOPs of a dense transformer's training step per parameter per token (forward + backward),
# Kaplan et al. 2020; used only when a run does not record its FLOPs.
FLOPS_PER_PARAM_TOKEN = 6.0


@dataclass(frozen=True)
class RunTable:
    """All runs of one grid or CSV file.

    ``runs``: one row per run; ``loss`` is the final eval loss (nats), ``N`` the total number of
    parameters, ``D`` the training tokens, ``FLOPs`` the total training FLOPs, ``state`` one of
    :data:`~trainers.run_folder.RUN_STATES`. ``histories``: long table ``run_id, metric, step, value`` (empty for CSV
    input). ``axes``: parameter columns that vary across runs. ``default_by``: the grouping
    used when none is given. ``messages``: notes from loading (derived columns, duplicates).
    """

    name: str
    source: str
    runs: pd.DataFrame
    histories: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["run_id", "metric", "step", "value"])
    )
    axes: tuple[str, ...] = ()
    default_by: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    # An analysis.select.Selection when the runs were narrowed to each point's best value of a
    # knob (--best-over), else None.
    selection: Any = None

    @property
    def finished(self) -> pd.DataFrame:
        """Rows of finished runs: the ones that are fitted."""
        return self.runs[self.runs["state"] == "finished"]

    @property
    def not_finished(self) -> pd.DataFrame:
        """Rows of runs that are listed but never fitted (failed, diverged, unfinished)."""
        return self.runs[self.runs["state"] != "finished"]


# ----------------------------------------------------------------------------------------
# CSV


def load_csv(path: str | Path) -> RunTable:
    """Runs from a CSV file with columns ``N``, ``D``, ``loss`` plus any grouping columns.

    Optional columns: ``FLOPs`` (else 6·N·D), ``state`` (else every row is finished),
    ``reason``, ``run_id`` (else ``row<line number>``), ``N_non_embedding``, ``seed`` (runs
    that differ only in it are replicates) and ``entropy_per_token`` (the data's known E). The default
    grouping is a column named ``gamma`` when present, else none.
    """
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnalysisError(f"{path}: cannot read CSV: {first_line}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in ("N", "D", "loss"):
        if column not in frame.columns:
            found = ", ".join(frame.columns[:12]) or "none"
            raise AnalysisError(f"{path}: missing column '{column}' (columns found: {found})")
    messages: list[str] = []
    for column in ("N", "D", "loss", "FLOPs", "N_non_embedding", ENTROPY_COLUMN):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if "FLOPs" not in frame.columns:
        frame["FLOPs"] = FLOPS_PER_PARAM_TOKEN * frame["N"] * frame["D"]
        messages.append("no FLOPs column: using FLOPs = 6·N·D")
    if "N_non_embedding" not in frame.columns:
        frame["N_non_embedding"] = np.nan
    if "run_id" not in frame.columns:
        frame["run_id"] = [f"row{i + 2}" for i in range(len(frame))]  # the CSV line number
    frame["run_id"] = frame["run_id"].astype(str)
    if "state" in frame.columns:
        frame["state"] = frame["state"].fillna("finished").astype(str).str.strip().str.lower()
        unknown = sorted(set(frame["state"]) - set(RUN_STATES))
        if unknown:
            raise AnalysisError(
                f"{path}: column 'state': unknown value '{unknown[0]}' (expected one of {', '.join(RUN_STATES)})"
            )
    else:
        frame["state"] = "finished"
    if "reason" not in frame.columns:
        frame["reason"] = None
    runs = _order_columns(frame)
    axes = varying_columns(runs, exclude=CORE_COLUMNS)
    default_by = ("gamma",) if "gamma" in runs.columns else ()
    return RunTable(
        name=path.stem,
        source=str(path),
        runs=runs,
        axes=axes,
        default_by=default_by,
        messages=tuple(messages),
    )


# ----------------------------------------------------------------------------------------
# MLflow


def load_grid_runs(name: str, tracking_uri: str | None = None) -> RunTable:
    """Runs of grid ``name`` from the MLflow store at ``tracking_uri`` (default: the workspace's).

    Layout: one experiment named after the grid; one MLflow run per grid point, tagged
    ``gammaray.grid``, ``gammaray.run_id``, ``gammaray.state`` and ``gammaray.reason``; params
    are the flattened config plus ``N``, ``N_non_embedding``, ``D``, ``FLOPs`` and, where the
    data source knows it, ``entropy_per_token``; metric histories ``train/loss``, ``eval/loss`` (the final eval loss is the last one), ``tokens``.
    Other metrics are ignored. Raises :class:`AnalysisError` for a missing store or grid.
    """
    uri = tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise AnalysisError(f"no tracking store at {db} (submit a grid first, or pass --tracking-uri)")
    reader = StoreReader(uri)
    try:
        experiment_id = reader.experiment_id(name)
        known = reader.experiment_names() if experiment_id is None else []
    except Exception as exc:  # any store failure is reported as one line naming the store
        raise AnalysisError(f"cannot open tracking store {uri}: {_one_line(exc)}") from None
    if experiment_id is None:
        hint = f" (grids there: {', '.join(known)})" if known else " (it holds no grids)"
        raise AnalysisError(f"unknown grid '{name}' in {uri}{hint}")
    try:
        runs = reader.runs(experiment_id)
        records = [_run_record(run) for run in runs]
        histories = _histories(reader, runs)
    except Exception as exc:  # a store that fails mid-read is reported like one that cannot open
        raise AnalysisError(f"cannot read grid '{name}' from {uri}: {_one_line(exc)}") from None
    for record, history in zip(records, histories):
        evals = [point for point in history if point[1] == "eval/loss"]
        record["loss"] = evals[-1][3] if evals else np.nan
    return runs_from_records(
        records,
        [point for history in histories for point in history],
        name=name,
        source=f"grid:{name} ({uri})",
    )


def _run_record(run: TrackedRun) -> dict[str, Any]:
    tags = run.tags
    state = tags.get("gammaray.state") or _MLFLOW_STATUS.get(run.status, "running")
    record: dict[str, Any] = {key: parse_param(value) for key, value in run.params.items()}
    record.update(
        run_id=_grid_run_id(run),
        state=state.lower(),
        reason=tags.get("gammaray.reason"),
        _start_time=run.start_time,
        # A WSD branch's trunk and start (bookkeeping: an underscore column is never an axis).
        _branch=tags.get("gammaray.branch"),
    )
    return record


def _grid_run_id(run: TrackedRun) -> str:
    return run.tags.get("gammaray.run_id") or run.mlflow_id


def _loaded(key: str) -> bool:
    return key in HISTORY_METRICS or key.startswith(HISTORY_PREFIXES) or bool(DOWNSTREAM_METRIC.match(key))


def _histories(reader: StoreReader, runs: Sequence[TrackedRun]) -> list[list[tuple[str, str, int, float]]]:
    """Each run's loaded metric histories as ``(run_id, metric, step, value)``, by metric and
    then step.

    From MLflow's SQL stores the points of every run are read in one query per 500 runs
    (:meth:`trainers.store_reader.StoreReader.metric_points`): a grid of 1,000 runs with a
    hundred metrics each is 100,000 history calls otherwise (about two minutes on SQLite).
    """
    wanted = {run.mlflow_id: {key for key in run.metrics if _loaded(key)} for run in runs}
    points = reader.metric_points(wanted)
    histories = []
    for run in runs:
        run_id = _grid_run_id(run)
        ordered = sorted(points[run.mlflow_id])  # by metric, then step, then time logged
        histories.append([(run_id, key, int(step), float(value)) for key, step, _, value in ordered])
    return histories


def runs_from_records(
    records: Sequence[Mapping[str, Any]],
    histories: Iterable[tuple[str, str, int, float]] = (),
    *,
    name: str,
    source: str,
) -> RunTable:
    """A :class:`RunTable` from per-run dicts (params already parsed) and history tuples.

    Each record has ``run_id``, ``state``, optionally ``reason``, ``loss`` and every param.
    Duplicate run ids (a point submitted again) keep the finished, else the latest, record.
    """
    messages: list[str] = []
    frame = pd.DataFrame(list(records))
    if frame.empty:
        raise AnalysisError(f"{source}: the grid has no runs")
    for column in CORE_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan if column not in ("reason",) else None
    if "_start_time" not in frame.columns:
        frame["_start_time"] = 0
    frame["_finished"] = frame["state"] == "finished"
    frame = frame.sort_values(["_finished", "_start_time"], kind="stable")
    duplicated = frame.duplicated("run_id", keep="last")
    if duplicated.any():
        messages.append(
            f"{int(duplicated.sum())} duplicate record(s) of the same grid point: kept the finished (else latest) one"
        )
        frame = frame[~duplicated]
    frame = frame.drop(columns=["_finished", "_start_time"]).sort_values("run_id", kind="stable")
    for column in ("N", "N_non_embedding", "D", "FLOPs", "loss", ENTROPY_COLUMN):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    missing_flops = frame["FLOPs"].isna() & frame["N"].notna() & frame["D"].notna()
    if missing_flops.any():
        frame.loc[missing_flops, "FLOPs"] = FLOPS_PER_PARAM_TOKEN * frame["N"] * frame["D"]
        messages.append(f"{int(missing_flops.sum())} run(s) without FLOPs: using FLOPs = 6·N·D")
    no_loss = (frame["state"] == "finished") & frame["loss"].isna()
    if no_loss.any():
        messages.append(f"{int(no_loss.sum())} finished run(s) logged no eval/loss: they are not fitted")
    runs = _order_columns(frame.reset_index(drop=True))
    hist = pd.DataFrame(list(histories), columns=["run_id", "metric", "step", "value"])
    hist = hist[hist["run_id"].isin(set(runs["run_id"]))].reset_index(drop=True)
    axes = varying_columns(runs, exclude=CORE_COLUMNS)
    default_by = next(((key,) for key in GAMMA_KEYS if key in runs.columns), ())
    return RunTable(
        name=name,
        source=source,
        runs=runs,
        histories=hist,
        axes=axes,
        default_by=default_by,
        messages=tuple(messages),
    )


# ----------------------------------------------------------------------------------------
# Helpers


def parse_param(value: Any) -> Any:
    """An MLflow param string as int, float, bool or None where it reads as one, else the string."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    lowered = text.lower()
    if lowered in ("none", "null", ""):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return value
    return number if not math.isnan(number) else None


def varying_columns(frame: pd.DataFrame, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """Columns whose values differ across rows (missing counts as a value)."""
    skip = set(exclude)
    out = []
    for column in frame.columns:
        if column in skip or column.startswith("_"):
            continue
        values = frame[column].map(lambda v: "∅" if _is_missing(v) else repr(v))
        if values.nunique() > 1:
            out.append(column)
    return tuple(out)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    rest = [c for c in frame.columns if c not in CORE_COLUMNS]
    return frame[list(CORE_COLUMNS) + rest]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
