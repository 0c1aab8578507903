"""``gammaray submit --address http://HEAD:8265``: the grid as a Ray Job, its driver on the cluster.

The laptop checks the grid (a bad grid is refused before anything reaches the cluster), then
hands Ray's job server the grid file and one command line: ``gammaray submit grid.yaml
--address auto --tracking-uri URI``. That driver runs on the head node; it schedules, retries
and records exactly as a local submission does, so the laptop may disconnect at any time:
``status``, ``cancel`` and ``report`` read the tracking store, which must therefore be one
that both the cluster and the laptop reach (an MLflow server, see cluster/README.md).

Run folders and checkpoints live in the cluster's workspace: ``$GAMMARAY_HOME`` on the
cluster's nodes, a folder every node shares. A driver inside a Ray Job without it stops with
an error (see ``require_cluster_workspace``) rather than train into the job's throwaway folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from trainers.errors import ConfigError

# Set by Ray's job supervisor in the environment of every job's driver.
JOB_ENV_MARKER = "RAY_JOB_CONFIG_JSON_ENV_VAR"
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


def is_job_address(address: str | None) -> bool:
    """Whether ``--address`` names a Ray dashboard (a job server) rather than a GCS address."""
    return bool(address) and address.startswith(("http://", "https://"))


def inside_ray_job() -> bool:
    return JOB_ENV_MARKER in os.environ


def require_cluster_workspace() -> None:
    """A driver started as a Ray Job needs ``$GAMMARAY_HOME``: the default, ``./gammaray-runs``,
    would be inside the job's temporary working folder, and every finished run would be lost to
    the next submission."""
    if inside_ray_job() and not os.environ.get("GAMMARAY_HOME"):
        raise ConfigError(
            "GAMMARAY_HOME is not set on the Ray cluster: set it on every node to a folder they all share "
            "(run folders and checkpoints live there; see cluster/README.md)"
        )


@dataclass
class JobSubmission:
    job_id: str
    address: str
    grid: str
    tracking_uri: str


def driver_command(
    grid_file_name: str, overrides: Iterable[str], tracking_uri: str, max_parallel: int | None
) -> str:
    """The command the job runs on the head node, in the job's working folder."""
    args = [
        "gammaray",
        "submit",
        grid_file_name,
        "--address",
        "auto",
        "--tracking-uri",
        tracking_uri,
        "--json",
    ]
    for override in overrides:
        args += ["--set", override]
    if max_parallel is not None:
        args += ["--max-parallel", str(max_parallel)]
    return shlex.join(args)


def submit_job(
    grid_name: str,
    grid_file: str | Path,
    overrides: Iterable[str],
    address: str,
    tracking_uri: str,
    max_parallel: int | None,
) -> JobSubmission:
    """Send the grid file and its driver command to the job server at ``address``."""
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as error:  # connection refused, bad token, not a Ray dashboard
        raise ConfigError(f"--address {address}: no Ray job server there ({_one_line(error)})") from error
    job_id = f"gammaray-{grid_name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    # Only the grid file travels: the cluster's image holds gammaray itself. The folder is
    # uploaded by submit_job and then no longer needed here.
    with tempfile.TemporaryDirectory(prefix="gammaray-job-") as folder:
        name = Path(grid_file).name
        shutil.copyfile(grid_file, Path(folder) / name)
        try:
            client.submit_job(
                entrypoint=driver_command(name, overrides, tracking_uri, max_parallel),
                submission_id=job_id,
                runtime_env={"working_dir": folder},
                metadata={"gammaray.grid": grid_name, "gammaray.tracking_uri": tracking_uri},
            )
        except Exception as error:  # refused by the job server: auth, upload size, a bad request
            raise ConfigError(
                f"--address {address}: the job server refused the grid ({_one_line(error)})"
            ) from error
    return JobSubmission(job_id=job_id, address=address, grid=grid_name, tracking_uri=tracking_uri)


def follow(job: JobSubmission, stream: TextIO | None = None) -> dict[str, Any]:
    """Copy the job's log to ``stream`` until the job ends; returns ``job_document``.

    Ctrl-C detaches (the job goes on) and raises KeyboardInterrupt to the caller.
    """
    from ray.job_submission import JobSubmissionClient

    stream = stream or sys.stderr
    client = JobSubmissionClient(job.address)

    async def copy_log() -> None:
        async for lines in client.tail_job_logs(job.job_id):
            stream.write(lines)
            stream.flush()

    asyncio.run(copy_log())
    # The log stream ends when the job does; its final state may take a moment to be written.
    deadline = time.monotonic() + 30
    while (
        status := str(client.get_job_status(job.job_id).value)
    ) not in FINAL_STATES and time.monotonic() < deadline:
        time.sleep(0.5)
    return job_document(job, status, client.get_job_logs(job.job_id))


def job_document(job: JobSubmission, status: str, log: str) -> dict[str, Any]:
    """The ``--json`` document: the job's identity and state, and the driver's own document
    (the last JSON line of its log: runs, trained, skipped, failed, ...) when it printed one."""
    document: dict[str, Any] = {
        "grid": job.grid,
        "tracking_uri": job.tracking_uri,
        "address": job.address,
        "job_id": job.job_id,
        "job_status": status,
    }
    driver = last_json_line(log)
    if driver is not None:
        document.update({k: v for k, v in driver.items() if k not in document})
    return document


def last_json_line(log: str) -> dict[str, Any] | None:
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] if text else type(error).__name__
