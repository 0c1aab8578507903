"""A two-node Ray cluster on this machine, and a real ``mlflow server`` as the tracking store.

Marked ``cluster``: they start extra processes (a second Ray node, an MLflow server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.tracking.replay import record_metrics
from orchestrator.tracking.status import grid_status
from orchestrator.worker import read_attempts
from tests.orchestrator.conftest import (
    connected,
    free_port,
    fresh_store,
    mlflow_healthy,
    start_cluster,
    submit,
    wait_for,
    write_grid,
)
from trainers.callbacks import read_jsonl

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("ray")]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_nodes():
    """A head node and a second node, one CPU each, so two runs must use both."""
    cluster = start_cluster(num_cpus=1)
    try:
        cluster.add_node(num_cpus=1, resources='{"second_node": 1}')
        with connected(cluster.address):
            import ray

            wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2, 60, 0.5, "two nodes")
            yield cluster
    finally:
        cluster.stop()


def test_grid_runs_across_two_nodes_through_address(two_nodes, tmp_path, mlflow_template):
    fresh_store(mlflow_template, tmp_path / "mlflow.db")
    path = write_grid(
        tmp_path, "spread", axes={"init.gamma": [0.5, 1.0]}, resources={"cpus": 1}, max_parallel=2
    )
    outcome = submit(path, tmp_path, address=two_nodes.address)
    assert outcome.as_json() == {
        "grid": "spread",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "runs": 2,
        "trained": 2,
        "skipped": 0,
        "failed": 0,
        "diverged": 0,
        "cancelled": 0,
        "tracking_ok": True,
    }
    folders = list((tmp_path / "grids" / "spread").iterdir())
    nodes = {read_attempts(folder)[0]["node_id"] for folder in folders}
    assert len(nodes) == 2  # one run on each node


@pytest.fixture
def mlflow_server(tmp_path, mlflow_template):
    """Start an `mlflow server` on SQLite when called; stopped (its whole process group) after."""
    started: list[subprocess.Popen] = []

    def start(port: int) -> str:
        db = tmp_path / "server" / "mlflow.db"
        fresh_store(mlflow_template, db)
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "server" / "artifacts")],
            cwd=tmp_path, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        started.append(process)
        uri = f"http://127.0.0.1:{port}"
        wait_for(lambda: mlflow_healthy(uri), 120, 0.3, "the MLflow server")
        return uri

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_mlflow_server_outage_loses_nothing_and_replays(two_nodes, tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while the server is down
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    path = write_grid(tmp_path, "served", axes={"init.gamma": [0.5, 1.0]}, resources={"cpus": 1})

    # The server is down for the whole first submission: training goes on, the JSONL keeps it all.
    down = submit(path, tmp_path, address=two_nodes.address, tracking_uri=uri)
    assert down.counts["finished"] == 2 and not down.tracking_ok

    assert mlflow_server(port) == uri
    up = submit(path, tmp_path, address=two_nodes.address, tracking_uri=uri)
    assert (up.trained, up.skipped, up.tracking_ok) == (0, 2, True)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("served")
    runs = {r.data.tags["gammaray.run_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(up.states)
    for run_id, run in runs.items():
        assert run.data.tags["gammaray.state"] == "finished"
        records = read_jsonl(tmp_path / "grids" / "served" / run_id / "metrics.jsonl")
        expected = sorted((s, v) for r in records for k, v, s in record_metrics(r) if k == "eval/loss")
        assert (
            sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/loss"))
            == expected
        )
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
            "config.yaml",
            "summary.json",
            "metrics.jsonl",
        }
    assert grid_status(uri, "served")["counts"]["finished"] == 2
