"""Connecting to Ray: a local cluster sized to this machine, or an existing one by address.

The local cluster keeps Ray's defaults for safety: the dashboard is bound to 127.0.0.1 and
token authentication stays on (Ray creates ``~/.ray/auth_token`` if there is none). Its
session files live under a short private folder (``$RAY_TMPDIR/ray`` or ``/tmp/gammaray-ray-<uid>``):
Unix sockets there have a 107-byte path limit, and a private folder keeps other Ray users on
the machine from joining it by accident.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from orchestrator.grids.estimate import Capacity

NAMESPACE = "gammaray"
# Only small objects (specs, result dicts) cross Ray: a small object store is plenty.
OBJECT_STORE_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class Cluster:
    """A Ray connection held by this driver."""

    address: str  # the GCS address (what `--address` takes)
    dashboard_url: str | None
    owned: bool  # this driver called ray.init, so it calls ray.shutdown
    capacity: Capacity


def connect(address: str | None, local_capacity: Capacity, warm_workers: int = 0) -> Cluster:
    """Join the cluster at ``address``, or start a local one sized to ``local_capacity``.

    A new local cluster has ``warm_workers`` of its workers (the runs it will hold at once)
    import torch and the trainer at once, while the driver goes on (opening the tracking store,
    planning), so that its first runs do not wait for the imports. A process that already holds
    a Ray connection (a notebook, a test session) keeps it.
    """
    import ray

    if ray.is_initialized():
        return _describe(owned=False, dashboard_url=None)
    # ray.init puts its own SIGTERM handler in place, which exits at once; the driver's (the one
    # that stops its runs at a checkpoint) goes back once Ray is up.
    sigterm = signal.getsignal(signal.SIGTERM)
    if address:
        context = ray.init(
            address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING
        )
    else:
        context = ray.init(
            address="local",  # never join a cluster found through RAY_ADDRESS or /tmp/ray by accident
            num_cpus=int(local_capacity.cpus),
            num_gpus=int(local_capacity.gpus),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            namespace=NAMESPACE,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
            logging_level=logging.WARNING,
            **({"_temp_dir": temp_dir} if (temp_dir := ray_temp_dir()) else {}),
        )
        from orchestrator.worker import warm_up_workers

        warm_up_workers(warm_workers)
    if callable(sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)
    url = getattr(context, "dashboard_url", None)
    return _describe(owned=True, dashboard_url=f"http://{url}" if url and not url.startswith("http") else url)


def disconnect(cluster: Cluster) -> None:
    import ray

    if cluster.owned and ray.is_initialized():
        ray.shutdown()


def ray_temp_dir() -> str | None:
    """A short, private folder for the local cluster's session files (None: ``$RAY_TMPDIR`` is
    set, and Ray's own default, ``$RAY_TMPDIR/ray``, applies)."""
    if os.environ.get("RAY_TMPDIR"):
        return None
    base = "/tmp" if Path("/tmp").is_dir() else tempfile.gettempdir()
    return str(Path(base) / f"gammaray-ray-{os.getuid() if hasattr(os, 'getuid') else 'user'}")


def _describe(owned: bool, dashboard_url: str | None) -> Cluster:
    import ray

    address = ray.get_runtime_context().gcs_address
    capacity = Capacity.from_nodes(ray.nodes(), source=f"the Ray cluster at {address}")
    return Cluster(address=address, dashboard_url=dashboard_url, owned=owned, capacity=capacity)
