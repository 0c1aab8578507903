"""``gammaray submit``: check a grid, skip what is done, train the rest, record everything.

Order matters for the guarantees: the grid is loaded, expanded and checked against the
machine (or, with ``--address``, the cluster) before anything is written, so a bad grid leaves
no trace. Finished runs are recognised by their run folder's ``summary.json`` (the trainer
writes it atomically, last), so a resubmission trains nothing twice even if the store missed
the end; their JSONL is replayed into the store if it lags. Unfinished runs are dispatched again
and resume from their checkpoints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from orchestrator.grids.estimate import Capacity, check_capacity, concurrent_runs, totals
from orchestrator.grids.expand import RunSpec, expand
from orchestrator.grids.parse import Grid, load_grid
from orchestrator.progress import Progress
from orchestrator.tracking.recorder import Recorder
from orchestrator.tracking.store import Store
from trainers.run_folder import RUN_STATES, default_tracking_uri, workspace_dir

FINAL_FLUSH_TRIES = 5  # flushes at the end while the store fails, a second apart


@dataclass
class Plan:
    """A checked, expanded grid and what running it would take."""

    grid: Grid
    specs: list[RunSpec]
    done: dict[str, dict[str, Any]]  # run id -> summary, for runs finished before
    capacity: Capacity
    max_parallel: int | None
    tracking_uri: str

    @property
    def todo(self) -> list[RunSpec]:
        return [s for s in self.specs if s.run_id not in self.done]

    def totals(self) -> dict[str, float]:
        return totals(self.todo, concurrent_runs(self.todo, self.capacity, self.max_parallel))


@dataclass
class Outcome:
    """What a submission did; ``as_json`` is the CLI's ``--json`` document."""

    grid: str
    tracking_uri: str
    states: dict[str, str]  # run id -> final state
    trained: int  # runs that reached a result in this submission
    skipped: int  # runs that had a result before it
    tracking_ok: bool = True  # False: some metrics are only in the JSONL copies (replayed on resubmit)
    dashboard_url: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = {state: sum(1 for s in self.states.values() if s == state) for state in RUN_STATES}

    def as_json(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "tracking_uri": self.tracking_uri,
            "runs": len(self.states),
            "trained": self.trained,
            "skipped": self.skipped,
            "failed": self.counts["failed"],
            "diverged": self.counts["diverged"],
            "cancelled": self.counts["cancelled"],
            "tracking_ok": self.tracking_ok,
        }


def plan(
    grid_file: str | Path,
    overrides: Iterable[str] = (),
    address: str | None = None,
    tracking_uri: str | None = None,
    max_parallel: int | None = None,
    check_machine: bool = True,
) -> Plan:
    """Load, check and expand a grid; find its finished runs. Writes nothing.

    Without ``address`` the runs must fit this machine (``check_machine``; a dry run of a
    cluster grid from a laptop leaves it off and reports the misfit as a note instead).
    """
    from trainers.loop import read_summary

    grid = load_grid(grid_file, overrides)
    if max_parallel is not None:
        grid = replace(grid, max_parallel=max_parallel)
    specs = expand(grid, workspace_dir())
    capacity = Capacity.this_machine()
    if (
        address is None and check_machine
    ):  # the local cluster will be this machine: check now, before Ray starts
        check_capacity(grid, specs, capacity)
    done = {}
    for spec in specs:
        summary = read_summary(Path(spec.out_dir))
        if summary is not None and summary.run_id == spec.run_id:
            done[spec.run_id] = summary.to_dict()
    return Plan(grid, specs, done, capacity, grid.max_parallel, tracking_uri or default_tracking_uri())


def run(
    plan: Plan, address: str | None = None, stream: TextIO | None = None, show_progress: bool = True
) -> Outcome:
    """Train every unfinished run of ``plan`` and record the grid in the tracking store."""
    stream = stream or sys.stderr
    warn: Callable[[str], None] = lambda text: print(f"gammaray: warning: {text}", file=stream, flush=True)  # noqa: E731
    todo = plan.todo
    cluster = None
    store = None
    try:
        if todo:
            import ray  # noqa: F401  (imported here, not in the store's thread: one importer per module)

            from orchestrator.cluster import connect

            # Opening the store (MLflow's import, a new database's schema) takes seconds, and so
            # does starting Ray: overlap them. With --address the store waits until the cluster
            # has been checked, so a grid too big for it leaves no trace.
            store = _open_store_soon(plan.tracking_uri) if address is None else None
            cluster = connect(
                address, plan.capacity, warm_workers=concurrent_runs(todo, plan.capacity, plan.max_parallel)
            )
            check_capacity(plan.grid, todo, cluster.capacity)
            if cluster.dashboard_url:
                print(f"Ray dashboard: {cluster.dashboard_url}{dashboard_hint()}", file=stream, flush=True)
        recorder = Recorder(plan.tracking_uri, plan.grid.name, plan.specs, warn, store=_result(store))
        recorder.open()
        states = _initial_states(plan, recorder)
        recorder.replay(plan.done)
        if todo:
            recorder.heartbeat(force=True)
        # No flush here: the scheduler's first one (or the final one) creates the missing runs
        # in the store and writes their states, once the first runs have been launched.
        trained = 0
        if todo:
            from orchestrator.scheduler import Scheduler

            assert cluster is not None
            print(
                f"grid {plan.grid.name}: {len(plan.specs)} runs, {len(plan.done)} already done, training {len(todo)} "
                f"(at most {concurrent_runs(todo, cluster.capacity, plan.max_parallel)} at once)",
                file=stream,
                flush=True,
            )
            progress = Progress(total=len(plan.specs), stream=stream, enabled=show_progress)
            scheduler = Scheduler(
                todo,
                states,
                recorder,
                progress,
                cluster.capacity,
                plan.max_parallel,
                plan.grid.retries,
                gpu_cluster=cluster.capacity.gpus > 0,
            )
            try:
                states = scheduler.run()
            finally:
                trained = len(scheduler.trained)
                recorder.heartbeat(state="exited", force=True)
        ok = _final_flush(recorder)
        if not ok:
            warn(
                f"tracking store {plan.tracking_uri} is unreachable ({recorder.error}); every run's metrics are in its "
                "metrics.jsonl: submit the grid again once the store is back to log them"
            )
        return Outcome(
            grid=plan.grid.name,
            tracking_uri=plan.tracking_uri,
            states=states,
            trained=trained,
            skipped=len(plan.done),
            tracking_ok=ok,
            dashboard_url=cluster.dashboard_url if cluster else None,
        )
    finally:
        if cluster is not None:
            from orchestrator.cluster import disconnect

            disconnect(cluster)


def dashboard_hint() -> str:
    """How to get past the dashboard's token prompt, when Ray's token authentication is on."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() == "disabled":
        return ""
    return " (it asks for the cluster's token: `ray get-auth-token` prints it)"


def _open_store_soon(uri: str) -> Future:

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gammaray-store")
    future = executor.submit(Store, uri)
    executor.shutdown(wait=False)
    return future


def _result(future: Future | None) -> Any:
    """The opened store, or None (the recorder then opens it and reports any failure)."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception:
        return None


def _initial_states(plan: Plan, recorder: Recorder) -> dict[str, str]:
    """Runs done before are what their summary says; every other run starts over as pending."""
    states = {}
    for spec in plan.specs:
        summary = plan.done.get(spec.run_id)
        if summary is not None:
            state = "diverged" if summary.get("status") == "diverged" else "finished"
            reason = (
                f"loss not finite at step {summary.get('diverged_step')}" if state == "diverged" else None
            )
        else:
            state, reason = "pending", None
        states[spec.run_id] = state
        stored = recorder.runs.get(spec.run_id)
        if stored is None or (stored.state, stored.reason) != (state, reason):
            recorder.set_state(spec.run_id, state, reason)
    return states


def _final_flush(recorder: Recorder) -> bool:
    import time

    for attempt in range(FINAL_FLUSH_TRIES):
        if recorder.flush(force=True) and recorder.pending_writes == 0:
            return True
        time.sleep(1.0 if attempt < FINAL_FLUSH_TRIES - 1 else 0)
    return recorder.error is None and recorder.pending_writes == 0
