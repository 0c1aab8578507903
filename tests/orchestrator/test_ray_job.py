"""A grid submitted as a Ray Job to a two-node cluster, tracked by an MLflow server on PostgreSQL.

This is the laptop-to-cluster path of cluster/README.md, all on this machine: a Ray head
(with its dashboard, where the job server listens) and a second node, whose shared workspace
is a folder of their own; a private PostgreSQL (Debian's package) behind a real
``mlflow server``; and the ``gammaray`` CLI, run as a user would with a workspace of its own,
which sees the cluster only through the dashboard's address and the tracking server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestrator.worker import read_attempts
from tests.conftest import run_cli
from tests.orchestrator.conftest import free_port, mlflow_healthy, start_cluster, wait_for, write_grid
from tests.orchestrator.postgres import postgres_bin, start_postgres

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.xdist_group("ray"),
    pytest.mark.skipif(
        postgres_bin() is None, reason="PostgreSQL (Debian package 'postgresql') is not installed"
    ),
]


@pytest.fixture(scope="module")
def tracking_server():
    """``mlflow server`` with its backend store in PostgreSQL and a local artifact store."""
    database = start_postgres(free_port())
    artifacts = Path(tempfile.mkdtemp(prefix="grt-artifacts-"))
    log = artifacts.parent / f"{artifacts.name}.log"
    port = free_port()
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database.create_database("mlflow"),
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: mlflow_healthy(uri) or server.poll() is not None, 180, 0.5, "the MLflow server")
        assert server.poll() is None, f"mlflow server exited at start:\n{log.read_text()[-3000:]}"
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        database.stop()
        shutil.rmtree(artifacts, ignore_errors=True)
        log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def job_cluster():
    """Two one-CPU nodes sharing a workspace (``$GAMMARAY_HOME`` of the nodes); the head runs
    the dashboard and its job server."""
    home = Path(tempfile.mkdtemp(prefix="grt-cluster-home-"))
    env = {**os.environ, "GAMMARAY_HOME": str(home)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the `gammaray` command
    cluster = start_cluster(num_cpus=1, dashboard=True, env=env)
    try:
        cluster.add_node(num_cpus=1)
        from ray.job_submission import JobSubmissionClient

        client = wait_for(
            lambda: _job_client(JobSubmissionClient, cluster.dashboard_url), 120, 1.0, "the job server"
        )
        yield cluster, home, client
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_grid_runs_as_a_ray_job_and_reads_back_from_anywhere(job_cluster, tracking_server, tmp_path):
    cluster, home, client = job_cluster
    widths = {"model.d_model": [16, 24, 32], "model.n_heads": [2, 2, 2], "model.d_ff": [32, 48, 64]}
    grid = write_grid(tmp_path, "jobgrid", zip=[widths], resources={"cpus": 1}, max_parallel=2)
    submit = [
        "submit",
        str(grid),
        "--address",
        cluster.dashboard_url,
        "--tracking-uri",
        tracking_server,
        "--json",
    ]

    first = run_cli(*submit)
    assert first.returncode == 0, first.stderr[-3000:]
    document = json.loads(first.stdout.splitlines()[-1])
    assert document["job_status"] == "SUCCEEDED"
    assert (document["runs"], document["trained"], document["failed"], document["tracking_ok"]) == (
        3,
        3,
        0,
        True,
    )
    assert client.get_job_info(document["job_id"]).metadata["gammaray.grid"] == "jobgrid"
    assert (
        "Ray Job" in first.stderr and "grid jobgrid: 3 finished" in first.stderr
    )  # the driver's log, streamed

    # The runs trained in the cluster's shared workspace, on both nodes; none here.
    folders = sorted((home / "grids" / "jobgrid").iterdir())
    assert len(folders) == 3 and all((f / "summary.json").is_file() for f in folders)
    assert len({read_attempts(f)[0]["node_id"] for f in folders}) == 2
    assert not (Path(os.environ["GAMMARAY_HOME"]) / "grids").exists()

    # Status and the report come from the tracking server alone.
    status = run_cli("status", "jobgrid", "--tracking-uri", tracking_server, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout.splitlines()[-1])["counts"]["finished"] == 3
    report = tmp_path / "report" / "jobgrid.html"
    made = run_cli("report", "--grid", "jobgrid", "--tracking-uri", tracking_server, "--out", str(report))
    assert made.returncode == 0, made.stderr[-3000:]
    assert report.is_file() and "jobgrid" in report.read_text()
    assert (report.parent / "fit.json").is_file()  # L(N) over the three widths

    # A second submission finds both runs finished in the cluster's workspace.
    again = run_cli(*submit)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1])["trained"] == 0


def test_detach_returns_once_submitted(job_cluster, tracking_server, tmp_path):
    cluster, _, client = job_cluster
    grid = write_grid(tmp_path, "detached", resources={"cpus": 1})
    result = run_cli(
        "submit",
        str(grid),
        "--address",
        cluster.dashboard_url,
        "--tracking-uri",
        tracking_server,
        "--detach",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout.splitlines()[-1])
    assert document["job_status"] == "SUBMITTED"
    job_id = document["job_id"]
    wait_for(
        lambda: str(client.get_job_status(job_id).value) in ("SUCCEEDED", "FAILED", "STOPPED"),
        300,
        1.0,
        "job",
    )
    assert str(client.get_job_status(job_id).value) == "SUCCEEDED", client.get_job_logs(job_id)[-3000:]
    status = run_cli("status", "detached", "--tracking-uri", tracking_server, "--json")
    assert json.loads(status.stdout.splitlines()[-1])["counts"]["finished"] == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        ((), "--tracking-uri: a grid submitted as a Ray Job needs a tracking store"),
        (
            ("--tracking-uri", "sqlite:////tmp/local.db"),
            "--tracking-uri: a grid submitted as a Ray Job needs",
        ),
        (("--tracking-uri", "http://127.0.0.1:1", "--set", "optim.lr=fast"), "optim.lr"),
    ],
)
def test_bad_job_submissions_submit_nothing(job_cluster, tmp_path, extra, message):
    cluster, _, client = job_cluster
    before = len(client.list_jobs())
    grid = write_grid(tmp_path, "refused")
    result = run_cli("submit", str(grid), "--address", cluster.dashboard_url, *extra)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert len(client.list_jobs()) == before


def test_a_job_driver_without_a_cluster_workspace_stops_with_a_clear_error(monkeypatch):
    from orchestrator.ray_job import JOB_ENV_MARKER, require_cluster_workspace
    from trainers.errors import ConfigError

    monkeypatch.setenv(JOB_ENV_MARKER, "{}")
    monkeypatch.delenv("GAMMARAY_HOME")
    with pytest.raises(ConfigError, match="GAMMARAY_HOME is not set on the Ray cluster"):
        require_cluster_workspace()
    monkeypatch.setenv("GAMMARAY_HOME", "/shared/gammaray-runs")
    require_cluster_workspace()  # set: no error


def test_detach_needs_a_job_address(tmp_path):
    grid = write_grid(tmp_path, "local")
    result = run_cli("submit", str(grid), "--detach")
    assert result.returncode == 2 and "--detach: only with --address http://" in result.stderr


def _job_client(factory, address: str):
    try:
        return factory(address)
    except Exception:
        return None
