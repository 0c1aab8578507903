"""``gammaray submit`` as a user runs it: a local Ray cluster of its own, the embedded store."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from tests.conftest import run_cli
from tests.orchestrator.conftest import fresh_store, write_grid

# Starts Ray clusters: one xdist worker runs every such module, one after another (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ray")


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_submit_starts_a_local_cluster_and_a_second_submit_trains_nothing(
    tmp_path, mlflow_template, monkeypatch
):
    workspace = tmp_path / "ws"
    fresh_store(mlflow_template, workspace / "mlflow.db")
    env = {"GAMMARAY_HOME": str(workspace)}
    path = write_grid(
        tmp_path, "local", axes={"init.gamma": [0.5, 1.0]}, resources={"cpus": 1}, max_parallel=2
    )

    first = run_cli("submit", str(path), "--json", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(first.stdout.strip().splitlines()) == 1  # stdout holds the JSON document only
    assert "Ray dashboard: http://127.0.0.1:" in first.stderr, first.stderr[-3000:]  # loopback only
    assert "`ray get-auth-token` prints it" in first.stderr  # the way past the dashboard's token prompt
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    assert last_json(first.stdout) == {  # the --json contract
        "grid": "local", "tracking_uri": uri, "runs": 2, "trained": 2, "skipped": 0,
        "failed": 0, "diverged": 0, "cancelled": 0, "tracking_ok": True,
    }  # fmt: skip

    started = time.monotonic()
    second = run_cli("submit", str(path), "--json", env=env)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr[-3000:]
    assert (last_json(second.stdout)["trained"], last_json(second.stdout)["skipped"]) == (0, 2)
    assert "Ray dashboard" not in second.stderr  # nothing to train: Ray is not even started
    assert elapsed < 30, second.stderr

    # status and cancel find the workspace's store on their own (GAMMARAY_HOME).
    monkeypatch.setenv("GAMMARAY_HOME", str(workspace))
    status = CliRunner().invoke(main, ["status", str(path), "--json"])  # a grid file names its grid too
    assert status.exit_code == 0, status.output
    assert last_json(status.stdout)["counts"]["finished"] == 2
    cancel = CliRunner().invoke(main, ["cancel", "local", "--json"])
    assert cancel.exit_code == 0 and last_json(cancel.stdout)["cancelled"] == []  # nothing open to cancel


WARM_UP_PROBE = """
import json, os, sys, time
import ray
from orchestrator.cluster import connect, disconnect
from orchestrator.grids.estimate import Capacity

cluster = connect(None, Capacity(cpus=2, gpus=0, node_cpus=2, node_gpus=0, source="this machine"), warm_workers=2)

@ray.remote(num_cpus=1)
def modules():
    time.sleep(1)  # hold the slot, so that the two probes run in two workers
    return os.getpid(), "torch._dynamo" in sys.modules and "trainers.loop" in sys.modules

print(json.dumps(ray.get([modules.remote() for _ in range(2)])))
disconnect(cluster)
"""


def test_a_fresh_local_cluster_has_its_workers_import_the_trainer_before_the_first_run():
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "-c", WARM_UP_PROBE], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probes = json.loads(done.stdout.strip().splitlines()[-1])
    assert len({pid for pid, _ in probes}) == 2
    assert all(warm for _, warm in probes), probes
