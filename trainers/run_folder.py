"""The run-folder contract: the files a run writes, the states a run can be in, and where the
workspace lives.

The trainer writes run folders, the orchestrator schedules and records them, the analysis reads
what they left in the tracking store; all three take the names from here. Nothing heavy is
imported (no torch, ray or mlflow), so every layer can.

A run folder holds ``config.yaml`` (the resolved config, written first), ``metrics.jsonl`` (one
record per log, eval and diagnostic), ``checkpoints/`` (see ``trainers.checkpoint``) and, once
the run ends, ``summary.json`` (its ``RunResult``), or ``error.log`` when it could not go on. The workspace is ``$GAMMARAY_HOME`` when set,
else ``./gammaray-runs``; the embedded MLflow store is a SQLite file inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ERROR_LOG = "error.log"  # tracebacks of runs that could not go on (`gammaray train`)
CHECKPOINTS_DIR = "checkpoints"
RUN_FILES = (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE)  # what a finished run keeps as artifacts

# A run's state in a grid, as the tracking store records it and the analysis reads it.
RUN_STATES = ("pending", "running", "finished", "failed", "diverged", "cancelled")
RESULT_STATES = ("finished", "diverged")  # outcomes: never trained again
OPEN_STATES = ("pending", "running")  # what `gammaray cancel` stops


def workspace_dir() -> Path:
    """The workspace directory, absolute; it is not created here."""
    home = os.environ.get("GAMMARAY_HOME")
    return Path(home).expanduser().resolve() if home else (Path.cwd() / "gammaray-runs").resolve()


def default_tracking_uri() -> str:
    """The embedded MLflow store: ``sqlite:///<workspace>/mlflow.db``."""
    return f"sqlite:///{workspace_dir() / 'mlflow.db'}"


def default_report_path(name: str) -> Path:
    """``<workspace>/reports/<name>/report.html`` for a grid name or a CSV file's stem."""
    return workspace_dir() / "reports" / name / "report.html"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URI, or None for any other kind of store."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix) :])
