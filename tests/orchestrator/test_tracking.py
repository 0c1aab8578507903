"""The tracking store without Ray: replay from JSONL exactly once, concurrent writers, states.

Real MLflow on SQLite files; the JSONL copies are written by hand in the trainer's format.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.grids.expand import expand
from orchestrator.grids.parse import load_grid
from orchestrator.tracking.recorder import Recorder
from orchestrator.tracking.replay import Cursor, JsonlTail, pending_batches, record_metrics
from orchestrator.tracking.status import grid_status, request_cancel
from orchestrator.tracking.store import Store
from tests.orchestrator.conftest import free_port, fresh_store, write_grid
from tests.orchestrator.postgres import postgres_bin, start_postgres
from trainers.callbacks import read_jsonl
from trainers.store_reader import StoreReader


def records(steps: range, eval_every: int = 4, end: bool = False) -> list[dict]:
    """JSONL records as the trainer writes them (train every step here, eval every few)."""
    out = [{"kind": "start", "step": steps.start}]
    for step in steps:
        out.append(
            {
                "kind": "train",
                "step": step,
                "train/loss": 6.0 - step / 100,
                "train/loss_mean": 6.0,
                "train/lr": 1e-3,
            }
            | {"train/tokens": 256 * step, "train/tokens_per_s": 1000.0}
        )
        if step % eval_every == 0:
            out.append(
                {"kind": "eval", "step": step, "eval/loss": 6.1 - step / 100, "eval/tokens": 256 * step}
            )
    if end:
        out.append({"kind": "end", "status": "finished", "steps": steps.stop - 1, "tokens_per_s": 1234.0})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---- replay: pure functions --------------------------------------------------------------------


def test_records_become_the_metrics_the_analysis_reads():
    train = record_metrics(
        {"kind": "train", "step": 5, "train/loss": 4.0, "train/tokens": 1280, "train/lr": 0.1}
    )
    assert ("train/loss", 4.0, 5) in train and ("tokens", 1280.0, 5) in train
    assert record_metrics({"kind": "eval", "step": 0, "eval/loss": 6.2, "eval/tokens": 0}) == [
        ("eval/loss", 6.2, 0),
        ("eval/tokens", 0.0, 0),
    ]
    assert record_metrics({"kind": "end", "steps": 78, "tokens_per_s": 9.5, "status": "finished"}) == [
        ("tokens_per_s", 9.5, 78)
    ]
    assert record_metrics({"kind": "start", "step": 0}) == []


def test_cursor_skips_what_was_logged_and_batches_respect_the_limit():
    rows = records(range(1, 41), end=True)
    batches = list(pending_batches(rows, Cursor(), max_metrics=50))
    assert all(len(metrics) <= 50 for metrics, _ in batches)
    assert batches[-1][1] == Cursor(train_step=40, eval_step=40, end=True)
    logged = [m for metrics, _ in batches for m in metrics]
    assert len(logged) == sum(len(record_metrics(r)) for r in rows)
    # Replaying from the middle logs exactly the rest.
    middle = batches[1][1]
    rest = [m for metrics, _ in pending_batches(rows, middle) for m in metrics]
    assert len(rest) == len(logged) - sum(len(m) for m, _ in batches[:2])
    assert list(pending_batches(rows, batches[-1][1])) == []  # nothing left: no call at all


def test_probe_metrics_of_eval_records_are_logged_too():
    record = {
        "kind": "eval",
        "step": 8,
        "eval/loss": 5.0,
        "diag/condensation/all": 0.3,
        "probe/seen_accuracy": 0.5,
    }
    assert sorted(record_metrics(record)) == [
        ("diag/condensation/all", 0.3, 8),
        ("eval/loss", 5.0, 8),
        ("probe/seen_accuracy", 0.5, 8),
    ]


def test_a_record_bigger_than_a_batch_is_split_and_the_cursor_moves_with_its_last_part():
    big = {"kind": "eval", "step": 3, **{f"diag/m{i}/all": float(i) for i in range(25)}}
    batches = list(pending_batches([big], Cursor(), max_metrics=10))
    assert [len(m) for m, _ in batches] == [10, 10, 5]
    assert [c.eval_step for _, c in batches] == [-1, -1, 3]


def test_jsonl_tail_takes_in_only_complete_new_lines_and_reads_a_rewritten_file_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == [] and tail.records == []  # no file yet
    rows = records(range(1, 9))
    write_jsonl(path, rows[:5])
    assert tail.read() == rows[:5]
    with open(path, "a") as handle:  # a record half written...
        line = json.dumps(rows[5]) + "\n"
        handle.write(line[:10])
    assert tail.read() == []
    with open(path, "a") as handle:  # ...then finished, with another one behind it
        handle.write(line[10:] + json.dumps(rows[6]) + "\n")
    assert tail.read() == rows[5:7]
    with open(path, "a") as handle:  # a writer killed mid-line, then a resumed one appending
        handle.write('{"kind": "tra' + json.dumps(rows[7]) + "\n" + json.dumps(rows[7]) + "\n")
    assert tail.read() == rows[7:8]
    assert tail.records == read_jsonl(path)

    # Resumed at step 3: the file is rewritten with the records up to 3, and grows past where
    # the tail stopped before it looks again.
    rewritten = [*rows[:4], *records(range(3, 30))]
    write_jsonl(path, rewritten)
    assert tail.read() == rewritten and tail.records == read_jsonl(path)
    path.unlink()
    assert tail.read() == [] and tail.records == []


def test_cursor_round_trips_through_its_tag():
    cursor = Cursor(train_step=12, eval_step=8, end=True)
    assert Cursor.from_tag(cursor.to_tag()) == cursor
    assert Cursor.from_tag(None) == Cursor() == Cursor.from_tag("garbage")


# ---- the recorder against a real store ---------------------------------------------------------


@pytest.fixture
def grid_specs(tmp_path):
    path = write_grid(tmp_path, "rec", axes={"init.gamma": [0.5, 1.0]})
    return expand(load_grid(path), tmp_path / "ws")


def histories(uri: str, mlflow_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted(
        (m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(mlflow_id, key)
    )


def test_replay_is_idempotent_across_restarts_and_resumes(tmp_path, grid_specs, mlflow_template):
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    spec = grid_specs[0]
    out = Path(spec.out_dir)
    write_jsonl(out / "metrics.jsonl", records(range(1, 21)))
    recorder = Recorder(uri, "rec", grid_specs, warn=print)
    assert recorder.open()
    recorder.replay([spec.run_id])
    assert recorder.flush()
    mlflow_id = recorder.runs[spec.run_id].mlflow_id
    assert histories(uri, mlflow_id, "train/loss") == [(s, 6.0 - s / 100) for s in range(1, 21)]

    # The run was killed at step 20 and resumed from its checkpoint at step 12: the trainer drops
    # records past 12 and writes them again. A new driver (fresh recorder) replays the file.
    resumed = [r for r in records(range(1, 21)) if r["kind"] != "start" and r["step"] <= 12]
    write_jsonl(
        out / "metrics.jsonl",
        [{"kind": "start", "step": 12}, *resumed[:-1], *records(range(13, 31), end=True)[1:]],
    )
    again = Recorder(uri, "rec", grid_specs, warn=print)
    assert again.open()
    again.replay([spec.run_id])
    assert again.flush() and again.flush()
    assert histories(uri, mlflow_id, "train/loss") == [(s, 6.0 - s / 100) for s in range(1, 31)]
    assert histories(uri, mlflow_id, "eval/loss") == [(s, 6.1 - s / 100) for s in range(4, 31, 4)]
    assert histories(uri, mlflow_id, "tokens_per_s") == [(30, 1234.0)]


def test_one_recorder_follows_a_run_through_its_resume(tmp_path, grid_specs, mlflow_template):
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    spec = grid_specs[0]
    metrics_file = Path(spec.out_dir) / "metrics.jsonl"
    write_jsonl(metrics_file, records(range(1, 21)))
    recorder = Recorder(uri, "rec", grid_specs, warn=print)
    assert recorder.open()
    recorder.watch(spec.run_id)
    assert recorder.flush(force=True)
    assert recorder.live[spec.run_id].step == 20
    # Killed at step 20, resumed from step 12: the file is rewritten and has grown past where the
    # recorder stopped reading before it looks again. The new attempt's lines are shorter, so
    # that position now falls after records the store does not hold yet (steps 21, 22, ...).
    resumed = [r for r in records(range(1, 21)) if r["kind"] != "start" and r["step"] <= 12]
    again = [
        {k: v for k, v in r.items() if k != "train/loss_mean"} for r in records(range(13, 41), end=True)[1:]
    ]
    write_jsonl(metrics_file, [{"kind": "start", "step": 12}, *resumed, *again])
    recorder.done(spec.run_id, with_artifacts=False)
    assert recorder.flush(force=True)
    mlflow_id = recorder.runs[spec.run_id].mlflow_id
    assert histories(uri, mlflow_id, "train/loss") == [(s, 6.0 - s / 100) for s in range(1, 41)]
    assert histories(uri, mlflow_id, "eval/loss") == [(s, 6.1 - s / 100) for s in range(4, 41, 4)]
    assert recorder.live[spec.run_id].step == 40


def test_a_relaunched_run_is_not_tailed_before_its_attempt_cuts_the_file_back(
    tmp_path, grid_specs, mlflow_template
):
    from trainers.callbacks import JsonlLogger

    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    spec = grid_specs[0]
    metrics_file = Path(spec.out_dir) / "metrics.jsonl"
    # An interrupted attempt (its driver killed) got to step 24; its last checkpoint is step 20.
    write_jsonl(metrics_file, records(range(1, 25)))
    recorder = Recorder(uri, "rec", grid_specs, warn=print)
    assert recorder.open()
    recorder.watch(spec.run_id, attempt="s2:1")
    assert recorder.flush(force=True)
    mlflow_id = recorder.runs[spec.run_id].mlflow_id
    assert histories(uri, mlflow_id, "train/loss") == []  # the old attempt's steps 21-24 wait
    # The new attempt starts: its logger cuts the file back to the checkpoint, then trains on.
    logger = JsonlLogger(metrics_file, attempt="s2:1")
    logger.on_start({"run_id": spec.run_id}, resumed_step=20)
    for step in range(21, 31):
        logger.on_step(step, {"train/loss": 5.0 - step / 100})
    assert recorder.flush(force=True)
    expected = [(s, 6.0 - s / 100) for s in range(1, 21)] + [(s, 5.0 - s / 100) for s in range(21, 31)]
    assert histories(uri, mlflow_id, "train/loss") == expected


def _comparable(found) -> str:
    """Reads as JSON text, so that NaN metrics compare equal."""
    return json.dumps(found, default=lambda run: dataclasses.asdict(run), sort_keys=True)


def test_the_sql_tables_read_give_what_mlflows_client_returns(tmp_path, grid_specs, mlflow_template):
    """``StoreReader`` reads an SQL store's tables, and asks ``MlflowClient`` only for an
    MLflow server: the client's path is taken here on the same SQLite store, and every read
    must agree."""
    import math

    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    first, second = grid_specs[0], grid_specs[1]
    write_jsonl(Path(first.out_dir) / "metrics.jsonl", records(range(1, 13), end=True))
    recorder = Recorder(uri, "rec", grid_specs, warn=print)
    assert recorder.open()
    recorder.set_state(first.run_id, "finished")
    recorder.set_state(second.run_id, "failed", "worker died", attempts=3)
    recorder.replay([first.run_id])
    assert recorder.flush(force=True)
    store = recorder.store
    experiment_id = store.experiment_id("rec", create=False)
    store.log(recorder.runs[second.run_id].mlflow_id, [("eval/loss", math.nan, 4)])
    request_cancel(uri, "rec")  # nothing open: no cancellation tag
    store.log(recorder.runs[second.run_id].mlflow_id, tags={"gammaray.cancel_requested": "1"})
    sql, client = StoreReader(uri), StoreReader(uri)
    client.engine = None  # the path an MLflow server takes
    assert sql.experiment_id("rec") == client.experiment_id("rec") == experiment_id
    assert sql.experiment_id("absent") is client.experiment_id("absent") is None
    assert sql.experiment_names() == client.experiment_names() == ["rec"]
    assert sql.experiment_tags(experiment_id) == client.experiment_tags(experiment_id)
    assert sql.experiment_tags(experiment_id)["gammaray.grid"] == "rec"
    for with_tag in (None, "gammaray.cancel_requested"):
        found = sql.runs(experiment_id, with_tag)
        assert _comparable(found) == _comparable(client.runs(experiment_id, with_tag))
        assert len(found) == (1 if with_tag else 2)
    wanted = {run.mlflow_id: set(run.metrics) for run in sql.runs(experiment_id)}
    assert wanted[recorder.runs[first.run_id].mlflow_id] >= {"train/loss", "eval/loss"}
    points = [{run: sorted(p) for run, p in reader.metric_points(wanted).items()} for reader in (sql, client)]
    assert _comparable(points[0]) == _comparable(points[1])
    assert [
        value for key, *_, value in points[0][recorder.runs[first.run_id].mlflow_id] if key == "eval/loss"
    ]
    assert {key for run in sql.runs(experiment_id, param_keys=["N", "D"]) for key in run.params} == {"N", "D"}
    from_store = store.runs(experiment_id)
    assert from_store[second.run_id].reason == "worker died" and from_store[second.run_id].attempts == 3
    assert math.isnan(from_store[second.run_id].metrics["eval/loss"])


def test_the_tables_read_are_columns_of_mlflows_schema():
    """``trainers.store_reader`` declares the columns it reads; MLflow owns the schema."""
    from mlflow.store.tracking.dbmodels.models import Base

    from trainers import store_reader

    for table in store_reader.TABLES:
        theirs = Base.metadata.tables[table.name]
        for column in table.columns:
            assert column.name in theirs.columns, f"{table.name}.{column.name}"
            assert column.type.python_type is theirs.columns[column.name].type.python_type, column


# Batches as the driver sends them, with the edge cases of MLflow's rules: NaN and ±inf, a point
# sent twice in one batch, a point sent again later, a later batch with an earlier step, equal
# steps told apart by the timestamp, then by the value, and a tag changed.
_BATCHES = [
    (
        [("loss", 3.0, 10, 1), ("loss", 2.5, 10, 2), ("loss", 2.5, 10, 2), ("gap", math.nan, 10, 2),
         ("big", math.inf, 10, 1), ("small", -math.inf, 10, 1)],
        {"gammaray.logged": "1", "note": "a"},
    ),
    (
        [("loss", 2.0, 20, 3), ("loss", 2.5, 10, 2), ("gap", 0.5, 20, 1), ("big", 1.0, 20, 1),
         ("small", 5.0, 10, 1), ("tie", 1.0, 30, 4), ("tie", 2.0, 30, 4)],
        {"gammaray.logged": "2", "note": "b"},
    ),
    ([("loss", 1.0, 15, 3), ("tie", 0.5, 30, 4)], {"gammaray.logged": "3"}),
]  # fmt: skip


def _run_rows(uri: str, mlflow_id: str) -> dict[str, list[tuple]]:
    """Every row the store holds for a run in the tables a batch writes, run id left out."""
    from sqlalchemy import create_engine, text

    engine = create_engine(uri)
    found = {}
    with engine.connect() as connection:
        for table in ("metrics", "latest_metrics", "tags"):
            rows = connection.execute(text(f"SELECT * FROM {table} WHERE run_uuid = :id"), {"id": mlflow_id})
            found[table] = sorted(
                tuple(v for k, v in row._mapping.items() if k != "run_uuid") for row in rows
            )
    engine.dispose()
    return found


@pytest.fixture(params=["sqlite", "postgresql"])
def new_sql_store(request, tmp_path, mlflow_template):
    """A factory of empty MLflow SQL stores, name → tracking URI: SQLite files, or the
    databases of a private PostgreSQL server."""
    if request.param == "sqlite":
        yield lambda name: fresh_store(mlflow_template, tmp_path / name / "mlflow.db")
        return
    if postgres_bin() is None:
        pytest.skip("PostgreSQL (Debian package 'postgresql') is not installed")
    server = start_postgres(free_port())
    try:
        yield server.create_database
    finally:
        server.stop()


def test_a_batch_writes_the_rows_mlflows_log_batch_writes(new_sql_store):
    """``sql_log.log_batch`` (the driver's writes to an SQL store) against MLflow's own
    ``log_batch`` on a second store: the same rows in every table it touches."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import sql_log

    found = []
    for name in ("ours", "mlflow"):
        uri = new_sql_store(name)
        store = Store(uri)
        run = store.create_run(store.experiment_id("rows", create=True), "rows", "r", "r", {"N": "1"})
        client = MlflowClient(tracking_uri=uri)
        for points, tags in _BATCHES:
            if name == "ours":
                sql_log.log_batch(store.reader.engine, run.mlflow_id, points, tags)
            else:
                metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in points]
                client.log_batch(run.mlflow_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        found.append(_run_rows(uri, run.mlflow_id))
    ours, theirs = found
    assert ours == theirs
    latest = {row[0]: row[1:] for row in ours["latest_metrics"]}  # key: (value, timestamp, step, is_nan)
    assert latest["loss"] == (2.0, 20, 3, False) and latest["tie"] == (2.0, 30, 4, False)
    assert len(ours["metrics"]) == 13  # the repeated point once


def test_a_batch_that_fails_midway_stores_nothing_and_a_deleted_run_takes_none(tmp_path, mlflow_template):
    """A batch's metrics and the cursor tag that covers them are stored together or not at all:
    here the database itself refuses the cursor, after the metrics were inserted."""
    from sqlalchemy import create_engine, text

    from orchestrator.errors import TrackingError

    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    store = Store(uri)
    run = store.create_run(store.experiment_id("atomic", create=True), "atomic", "r", "r", {})
    engine = create_engine(uri)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_cursor BEFORE INSERT ON tags WHEN NEW.key = 'gammaray.logged' "
                "BEGIN SELECT RAISE(ABORT, 'cursor refused'); END"
            )
        )
    with pytest.raises(Exception, match="cursor refused"):
        store.log(run.mlflow_id, [("train/loss", 1.0, 0), ("eval/loss", 2.0, 0)], {"gammaray.logged": "{}"})
    assert _run_rows(uri, run.mlflow_id)["metrics"] == []
    assert _run_rows(uri, run.mlflow_id)["latest_metrics"] == []
    store.client.delete_run(run.mlflow_id)
    with pytest.raises(TrackingError, match="deleted run"):
        store.log(run.mlflow_id, [("train/loss", 1.0, 0)])
    engine.dispose()


def test_a_failed_log_call_loses_and_duplicates_nothing(tmp_path, grid_specs, monkeypatch, mlflow_template):
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    spec = grid_specs[0]
    write_jsonl(Path(spec.out_dir) / "metrics.jsonl", records(range(1, 301)))
    recorder = Recorder(uri, "rec", grid_specs, warn=lambda _: None)
    assert recorder.open()
    calls = {"n": 0}
    real_log = Store.log

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the store goes away after the first batch
            raise ConnectionError("store down")
        return real_log(self, *args, **kwargs)

    monkeypatch.setattr(Store, "log", flaky)
    recorder.replay([spec.run_id])
    assert not recorder.flush()
    assert recorder.error and "store down" in recorder.error
    assert recorder.flush(force=True)
    mlflow_id = recorder.runs[spec.run_id].mlflow_id
    assert histories(uri, mlflow_id, "train/loss") == [(s, 6.0 - s / 100) for s in range(1, 301)]


def test_an_unreachable_store_fails_softly_once(tmp_path, grid_specs, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    warnings: list[str] = []
    recorder = Recorder(
        "http://127.0.0.1:9", "rec", grid_specs, warn=warnings.append
    )  # port 9: discard, closed
    assert not recorder.open()
    assert not recorder.flush()  # within the back-off: not even tried
    assert not recorder.flush(force=True)
    assert len(warnings) == 1 and "training goes on" in warnings[0]


# ---- concurrent writers on the embedded store --------------------------------------------------

WRITERS, BATCHES, PER_BATCH = 4, 20, 10


def _writer(uri: str, index: int) -> None:
    # Every writer opens the store, creates the experiment (or finds it) and its run, and logs.
    store = Store(uri)
    experiment = store.experiment_id("many", create=True)
    run = store.create_run(experiment, "many", f"run{index}", f"run {index}", {"i": str(index)})
    for batch in range(BATCHES):
        metrics = [("train/loss", float(index), batch * PER_BATCH + k) for k in range(PER_BATCH)]
        store.log(run.mlflow_id, metrics, tags={"gammaray.logged": str(batch)})
        store.set_state(run, "running" if batch % 2 else "pending", None)


def test_four_processes_writing_one_sqlite_store_lose_no_metric(tmp_path, mlflow_template):
    """Several drivers (one per grid) and `gammaray cancel` may write one SQLite file at once."""
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    # fork: the writers start at once with MLflow already imported (this process has never
    # opened this store, so no connection is shared with them).
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_writer, args=(uri, i)) for i in range(WRITERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    store = Store(uri)
    runs = store.runs(store.experiment_id("many", create=False))
    assert sorted(runs) == [f"run{i}" for i in range(WRITERS)]
    for i in range(WRITERS):
        assert histories(uri, runs[f"run{i}"].mlflow_id, "train/loss") == [
            (s, float(i)) for s in range(BATCHES * PER_BATCH)
        ]


def test_a_store_locked_longer_than_sqlites_timeout_is_waited_for(tmp_path, mlflow_template):
    """The SQLite trap: a writer blocked for more than the driver's 5 s busy timeout gets
    "database is locked". The store's calls retry until the lock is gone."""
    import sqlite3
    import threading
    import time

    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    store = Store(uri)
    run = store.create_run(store.experiment_id("locked", create=True), "locked", "r", "r", {})
    blocker = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock

    def release() -> None:
        time.sleep(7)
        blocker.execute("COMMIT")

    threading.Thread(target=release).start()
    started = time.monotonic()
    store.log(run.mlflow_id, [("train/loss", 1.0, 0)])
    assert time.monotonic() - started >= 6.5
    assert histories(uri, run.mlflow_id, "train/loss") == [(0, 1.0)]


# ---- states, status and cancel -----------------------------------------------------------------


def test_cancel_marks_only_open_runs_and_status_counts_them(tmp_path, grid_specs, mlflow_template):
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    recorder = Recorder(uri, "rec", grid_specs, warn=print)
    assert recorder.open()
    first, second = (s.run_id for s in grid_specs)
    recorder.set_state(first, "finished")
    recorder.set_state(second, "running")
    assert recorder.flush()
    assert request_cancel(uri, "rec") == [second]
    document = grid_status(uri, "rec")
    assert document["counts"] == {
        "pending": 0,
        "running": 0,
        "finished": 1,
        "failed": 0,
        "diverged": 0,
        "cancelled": 1,
    }
    assert {r["id"]: r["state"] for r in document["runs"]} == {first: "finished", second: "cancelled"}
    # The driver sees the request; a resubmission (watch) clears it before it can stop the new attempt.
    recorder._last_cancel_poll = 0.0
    assert recorder.cancel_requests() == {second}
    recorder.watch(second)
    recorder.set_state(second, "pending")
    assert recorder.flush()
    recorder._last_cancel_poll = 0.0
    assert recorder.cancel_requests() == set()


def test_status_reads_an_sql_store_without_importing_mlflow(tmp_path, grid_specs, mlflow_template):
    """Importing MLflow takes seconds, more than ``gammaray status`` needs for a 1,000-run grid."""
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    recorder = Recorder(uri, "rec", grid_specs, warn=print)
    assert recorder.open()
    recorder.set_state(grid_specs[0].run_id, "finished")
    assert recorder.flush()
    code = (
        "import sys; from orchestrator.tracking.status import grid_status; "
        f"document = grid_status({uri!r}, 'rec'); "
        "print(document['counts']['finished'], document['runs'][0]['preset'], 'mlflow' in sys.modules)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["1", "tiny", "False"]


def test_status_without_a_store_is_a_one_line_error(tmp_path):
    from orchestrator.errors import TrackingError

    with pytest.raises(TrackingError, match="no tracking store at"):
        grid_status(f"sqlite:///{tmp_path / 'none.db'}", "g")
    assert not (tmp_path / "none.db").exists()


def test_mlflow_ui_command_serves_the_workspace_store(tmp_path, mlflow_template):
    from click.testing import CliRunner

    from orchestrator.cli.main import main

    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    result = CliRunner().invoke(
        main, ["mlflow-ui", "--tracking-uri", uri, "--port", "5123", "--print-command"]
    )
    assert result.exit_code == 0
    assert result.stdout.split()[1:] == [
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        "5123",
    ]
    missing = CliRunner().invoke(main, ["mlflow-ui", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}"])
    assert missing.exit_code == 2 and "no tracking store" in missing.stderr
