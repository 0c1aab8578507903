"""The driver's store writes: a tiny run's history into an SQLite store, against MLflow's ORM.

One tiny run is trained for real; its JSONL records are then replayed, as the driver replays a
run, into two fresh stores, run for run interleaved:

  ours       ``orchestrator.tracking.store.Store.log``: metrics and the cursor tag in one
             transaction of SQLAlchemy Core rows (``orchestrator.tracking.sql_log``);
  reference  the same batches through ``MlflowClient.log_batch``, as the driver wrote before.

Each replay's CPU time is taken with ``time.process_time`` (the driver's cost to the training
runs that share its cores); the figures are medians over the runs, in µs per point, and their
ratio. The stores are checked to hold the same number of metric rows.

    python benchmarks/bench_store_writes.py [--runs 20]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tiny_run_records(folder: Path) -> list[dict]:
    """The JSONL records of one tiny run of 250k tokens (about 5 s of training)."""
    from trainers.callbacks import JsonlLogger
    from trainers.config import load_run_config
    from trainers.launch import run_local
    from trainers.run_folder import METRICS_FILE

    overrides = ["model.preset=tiny", "train.batch_size=32", "train.seq_len=128", "train.tokens=250000"]
    run_local(load_run_config(None, overrides), folder, [JsonlLogger(folder / METRICS_FILE)])
    return [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]


def replay_seconds(records: list[dict], log, store, mlflow_id: str) -> tuple[float, int]:
    """CPU seconds to send ``records`` through ``log(store, mlflow_id, metrics, cursor_tag)``,
    and the points sent."""
    from orchestrator.tracking.replay import Cursor, pending_batches

    points, started = 0, time.process_time()
    for metrics, cursor in pending_batches(records, Cursor()):
        log(store, mlflow_id, metrics, cursor.to_tag())
        points += len(metrics)
    return time.process_time() - started, points


def log_ours(store, mlflow_id: str, metrics: list, cursor_tag: str) -> None:
    from orchestrator.tracking.store import TAG_CURSOR

    store.log(mlflow_id, metrics, {TAG_CURSOR: cursor_tag})


def log_reference(store, mlflow_id: str, metrics: list, cursor_tag: str) -> None:
    """The same batch through MLflow's ``log_batch``, as ``Store.log`` sent it before."""
    from mlflow.entities import Metric, RunTag

    from orchestrator.tracking.store import TAG_CURSOR

    now = int(time.time() * 1000)
    points = [Metric(key, value, now, step) for key, value, step in metrics]
    store.client.log_batch(mlflow_id, metrics=points, tags=[RunTag(TAG_CURSOR, cursor_tag)])


def measure(runs: int) -> dict:
    from mlflow.tracking import MlflowClient
    from sqlalchemy import func, select

    from orchestrator.tracking.store import Store
    from trainers import store_reader

    writers = {"ours": log_ours, "reference": log_reference}
    with tempfile.TemporaryDirectory(prefix="gammaray-bench-writes-") as root:
        records = tiny_run_records(Path(root) / "run")
        stores = {}
        for name in writers:
            store = Store(f"sqlite:///{root}/{name}.db")
            MlflowClient(tracking_uri=store.uri)  # creates the database, off the clock
            stores[name] = (store, store.experiment_id("writes", create=True))
        seconds: dict[str, list[float]] = {name: [] for name in writers}
        for index in range(runs):
            for name, (store, experiment_id) in stores.items():
                mlflow_id = store.create_run(experiment_id, "writes", f"r{index}", f"r{index}", {}).mlflow_id
                spent, points = replay_seconds(records, writers[name], store, mlflow_id)
                seconds[name].append(spent)
        rows = {}
        for name, (store, _) in stores.items():
            with store.reader.engine.connect() as connection:
                rows[name] = connection.execute(
                    select(func.count()).select_from(store_reader.metrics)
                ).scalar()
    if rows["ours"] != rows["reference"]:
        raise RuntimeError(f"the stores differ: {rows}")
    us = {name: statistics.median(s) / points * 1e6 for name, s in seconds.items()}
    print(f"{points} points a run, {runs} runs: {us['ours']:.1f} µs a point, MLflow's log_batch "
          f"{us['reference']:.1f} µs ({us['reference'] / us['ours']:.1f}×)", file=sys.stderr)  # fmt: skip
    return {
        "points_per_run": points,
        "runs": runs,
        "us_per_point": us["ours"],
        "reference_us_per_point": us["reference"],
        "speedup": us["reference"] / us["ours"],
        "metric_rows": rows["ours"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs replayed into each store")
    args = parser.parse_args()
    print(json.dumps(measure(args.runs)))


if __name__ == "__main__":
    main()
