"""Shared test setup: every test gets its own workspace, so nothing leaks into ./gammaray-runs,
and Ray runs with token authentication on, a token of the session's own, and its files under a
short private folder."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED")
_saved_ray_environment: dict[str, str | None] = {}


def pytest_configure(config):
    """Ray's environment for the session. It is set here, before any test module or test imports
    Ray, because a process reads Ray's authentication mode once: a test that imported Ray first
    would leave every later connection of the session without the token."""
    root = Path(tempfile.mkdtemp(prefix="grt-", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    _saved_ray_environment.update({k: os.environ.get(k) for k in RAY_VARIABLES})
    os.environ.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_TMPDIR=str(root),  # Ray puts its sessions in $RAY_TMPDIR/ray
        RAY_USAGE_STATS_ENABLED="0",
    )
    _one_torch_thread_per_worker()


def _one_torch_thread_per_worker() -> None:
    """Under ``make test`` two workers share two cores: each trains in-process with one thread,
    so that neither's runs wait on the other's spinning threads (the runs that Ray and the CLI
    start in processes of their own choose their threads as they always do)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config):
    root = os.environ.get("RAY_TMPDIR")
    for key, value in _saved_ray_environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if root and Path(root).name.startswith("grt-"):
        shutil.rmtree(root, ignore_errors=True)
        time.sleep(1)  # a Ray process that was just stopped may still create a log folder
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("GAMMARAY_HOME", str(tmp_path / "workspace"))


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``gammaray ARGS`` as a user would, in a subprocess; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where a CUDA GPU is visible.

    ``make test`` runs the suite in two workers (``-n 2 --dist loadgroup``). The modules that
    start Ray clusters and MLflow servers mark themselves ``xdist_group("ray")`` and so run one
    after another in one worker: two clusters on the same two cores would stretch the timings
    their runs and signals are checked against. Every other test shares both workers.
    """
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
