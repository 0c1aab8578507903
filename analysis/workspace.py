"""Where gammaray keeps its embedded tracking store and reports.

The workspace is ``$GAMMARAY_HOME`` when set, else ``./gammaray-runs`` (relative to the
current directory). The embedded MLflow store is a SQLite file inside it.
"""

from __future__ import annotations

import os
from pathlib import Path


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
