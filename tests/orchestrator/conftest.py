"""Real Ray clusters and real MLflow stores for the orchestrator tests.

Ray starts slowly on a 2-core machine, so a test module starts one cluster (``ray start
--head --block`` in a subprocess, stopped by terminating that process, never by ``ray stop``,
which would stop every Ray cluster of this user on the machine) and its tests share it. Token
authentication stays on, with a token of the session's own, and session files go under a
short private temp folder (``tests/conftest.py`` sets both up before any test imports Ray).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).parent / "ray")
OBJECT_STORE_BYTES = 200 * 1024**2  # only small objects cross Ray in these tests
TINY = {
    "model.preset": "tiny",
    "train.batch_size": 8,
    "train.seq_len": 32,
    "train.tokens": 20000,
    "train.log_every": 5,
    "data.eval_sequences": 32,
}


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store. Creating one runs MLflow's schema migrations (seconds);
    tests copy this file instead (``fresh_store``)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}")  # creates the database
    return path


def fresh_store(template: Path, path: Path) -> str:
    """Copy the empty store to ``path``; returns its tracking URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalCluster:
    """A Ray cluster of ``ray start --block`` processes on this machine."""

    address: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    dashboard_url: str | None = None  # http://127.0.0.1:PORT, where the job server listens
    env: dict[str, str] | None = None  # the nodes' environment (None: this process's)

    def add_node(self, num_cpus: int, resources: str | None = None) -> None:
        args = [
            RAY,
            "start",
            "--block",
            f"--address={self.address}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
        ]
        args += ["--disable-usage-stats", f"--object-store-memory={OBJECT_STORE_BYTES}"]
        if resources:
            args.append(f"--resources={resources}")
        self.processes.append(_start_node(args, self.env))

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_cluster(num_cpus: int, dashboard: bool = False, env: dict[str, str] | None = None) -> LocalCluster:
    """A head node; with ``dashboard`` its state API and job server work too. ``env`` is the
    environment of this node and of the nodes added later (None: this process's)."""
    port = free_port()
    args = [
        RAY, "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
        "--disable-usage-stats", f"--object-store-memory={OBJECT_STORE_BYTES}",
    ]  # fmt: skip
    dashboard_url = None
    if dashboard:
        dashboard_port = free_port()
        args += [
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
        ]
        dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    else:
        args += ["--include-dashboard=false"]
    head = _start_node(args, env)
    return LocalCluster(address=f"127.0.0.1:{port}", processes=[head], dashboard_url=dashboard_url, env=env)


def _start_node(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.Popen:
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Ray runtime started" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout) or process.poll() is not None:
        process.kill()
        raise RuntimeError("ray start failed:\n" + "".join(lines[-30:]))
    return process


@contextlib.contextmanager
def connected(address: str) -> Iterator[None]:
    """This process as a Ray driver of the cluster at ``address`` (the scheduler reuses it)."""
    import ray

    ray.init(address=address, namespace="gammaray", log_to_driver=False, logging_level="warning")
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def workspace(home: Path) -> Iterator[Path]:
    """Point GAMMARAY_HOME at ``home`` for the duration (for module-scoped fixtures)."""
    saved = os.environ.get("GAMMARAY_HOME")
    os.environ["GAMMARAY_HOME"] = str(home)
    try:
        yield home
    finally:
        if saved is None:
            os.environ.pop("GAMMARAY_HOME", None)
        else:
            os.environ["GAMMARAY_HOME"] = saved


def write_grid(
    folder: Path, name: str, base: dict | None = None, axes: dict | None = None, **top: object
) -> Path:
    """A grid file from Python values (base defaults to the tiny test config)."""
    import yaml

    document: dict = {"name": name, "base": {**TINY, **(base or {})}}
    if axes:
        document["axes"] = axes
    document.update(top)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def submit(
    path: Path,
    home: Path,
    *overrides: str,
    address: str | None = None,
    tracking_uri: str | None = None,
    plan_hook=None,
):
    """``gammaray submit`` in this process (the Ray connection is the fixture's)."""
    from orchestrator.submit import plan, run

    with workspace(home):
        planned = plan(path, overrides, address=address, tracking_uri=tracking_uri)
    if plan_hook is not None:
        plan_hook(planned)
    return run(planned, address=address, show_progress=False)


def wait_for(condition, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def mlflow_healthy(uri: str) -> bool:
    """Whether the MLflow server at ``uri`` answers its health check."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
