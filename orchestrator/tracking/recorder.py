"""The driver's record of a grid in the tracking store: the only writer while a grid runs.

Workers never touch the store. They write their JSONL copy in the run folder; the driver
tails it and logs new records in batches, together with the replay cursor. State changes are
queued here and written on the next flush. If the store is unreachable (an MLflow server
outage), flushes fail softly and are retried: training goes on, nothing is lost, and what was
not logged is logged as soon as the store answers, or replayed on the next submission.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import GridError
from orchestrator.grids.expand import RunSpec
from orchestrator.tracking.replay import JsonlTail, latest, pending_batches
from orchestrator.tracking.store import (
    TAG_ARTIFACTS,
    TAG_ATTEMPTS,
    TAG_BRANCH,
    TAG_CANCEL,
    TAG_CURSOR,
    TAG_DRIVER,
    TAG_PARAMS,
    Store,
    StoredRun,
    driver_record,
    one_line,
    other_live_driver,
)
from trainers.run_folder import METRICS_FILE, RUN_FILES

CANCEL_POLL_S = 5.0  # how often the driver asks the store for cancellation requests
HEARTBEAT_S = 10.0
# How often running runs' new metrics go to the store. Each batch costs the driver a
# transaction and its queries however few its metrics, CPU taken from the runs on a small
# machine; a run that ends is logged at once.
METRICS_S = 5.0


@dataclass
class Live:
    """The latest progress of a running run, from its JSONL (for the progress display)."""

    step: int = 0
    tokens: int = 0
    tokens_per_s: float = 0.0
    train_loss: float | None = None
    eval_loss: float | None = None


class Recorder:
    def __init__(
        self,
        uri: str,
        grid: str,
        specs: Sequence[RunSpec],
        warn: Callable[[str], None],
        store: Store | None = None,
    ):
        self.uri = uri
        self.grid = grid
        self.specs = {s.run_id: s for s in specs}
        self.warn = warn
        self.store = store
        self.experiment_id: str | None = None
        self.runs: dict[str, StoredRun] = {}
        self.error: str | None = None  # the last store failure, while it lasts
        self.live: dict[str, Live] = {}
        self._wanted: dict[str, tuple[str, str | None, dict[str, str]]] = {}
        self._tailing: set[str] = set()
        # Run id -> the launched attempt whose start record is not yet in the run's JSONL.
        self._awaiting: dict[str, str] = {}
        self._artifacts_due: set[str] = set()
        self._jsonl: dict[str, JsonlTail] = {}  # each run's metrics.jsonl, read as it grows
        self._clear_cancel: set[str] = set()
        self._last_cancel_poll = 0.0
        self._last_heartbeat = 0.0
        self._last_metrics = 0.0
        self._failures = 0  # store failures in a row
        self._retry_at = 0.0  # while failing, no store call before this time.monotonic()

    # ---- opening -------------------------------------------------------------------------

    def open(self) -> bool:
        """Connect, create the experiment if needed and read the runs it holds. Soft-fails.

        The grid points' missing runs are created at the first flush (``_open``): for a large
        grid that takes seconds, which the first runs need not wait for.
        """
        return self._soft(self._connect)

    def _open(self) -> None:
        """Connect (again), and create a run per grid point that has none (params included)."""
        self._connect()
        assert self.store is not None and self.experiment_id is not None
        for run_id, spec in self.specs.items():
            stored = self.runs.get(run_id)
            if stored is None:
                branch = spec.branch
                tags = {TAG_BRANCH: f"{branch.trunk_run_id}@{branch.step}"} if branch is not None else {}
                self.runs[run_id] = self.store.create_run(
                    self.experiment_id, self.grid, run_id, spec.label, spec.params(), tags
                )
            elif TAG_PARAMS not in stored.tags:
                self.store.ensure_params(stored, spec.params())

    def _connect(self) -> None:
        if self.store is None:
            self.store = Store(self.uri)
        if self.experiment_id is None:
            experiment_id = self.store.experiment_id(self.grid, create=True)
            other = other_live_driver(
                self.store.experiment_tags(experiment_id).get(TAG_DRIVER), stale_s=3 * HEARTBEAT_S
            )
            if other is not None:
                raise GridError(
                    f"grid '{self.grid}' is being submitted by another driver (pid {other.get('pid')} on "
                    f"{other.get('host')}); wait for it, or stop it first"
                )
            self.experiment_id = experiment_id
        self.runs = self.store.runs(self.experiment_id)

    @property
    def opened(self) -> bool:
        return self.experiment_id is not None and all(run_id in self.runs for run_id in self.specs)

    def stored_state(self, run_id: str) -> str | None:
        stored = self.runs.get(run_id)
        return stored.state if stored else None

    # ---- what the scheduler reports ------------------------------------------------------

    def set_state(
        self, run_id: str, state: str, reason: str | None = None, attempts: int | None = None
    ) -> None:
        extra = {TAG_ATTEMPTS: str(attempts)} if attempts is not None else {}
        self._wanted[run_id] = (state, reason, extra)

    def watch(self, run_id: str, attempt: str | None = None) -> None:
        """Tail this run's JSONL on every flush (it is running): once the start record of
        ``attempt`` is in it, when given. Until then the file may still hold the records of an
        interrupted attempt past its last checkpoint, which the new attempt drops, and which
        must not reach the store."""
        self._tailing.add(run_id)
        self._clear_cancel.add(run_id)
        if attempt is not None:
            self._awaiting[run_id] = attempt

    def done(self, run_id: str, with_artifacts: bool) -> None:
        """The run stopped: tail it one last time, then log its artifacts (if it has a result)."""
        self._tailing.add(run_id)
        self._awaiting.pop(run_id, None)  # whatever the file holds now is what the run left
        if with_artifacts:
            self._artifacts_due.add(run_id)

    def replay(self, run_ids: Iterable[str]) -> None:
        """Catch the store up with runs trained earlier (JSONL and artifacts not yet logged)."""
        for run_id in run_ids:
            self._tailing.add(run_id)
            stored = self.runs.get(run_id)
            if stored is None or TAG_ARTIFACTS not in stored.tags:
                self._artifacts_due.add(run_id)

    # ---- flushing ------------------------------------------------------------------------

    def flush(self, force: bool = False) -> bool:
        """Write queued states, due artifacts, the metrics of runs that ended and, every
        ``METRICS_S`` (or when ``force``), those of running runs. False while the store fails
        (after a failure, calls wait out a growing back-off unless ``force``)."""
        self._read_live()
        return self._soft(lambda: self._flush(all_metrics=force), force=force)

    def _flush(self, all_metrics: bool = False) -> None:
        if not self.opened:
            self._open()
        assert self.store is not None
        for run_id in sorted(self._clear_cancel):
            # A resubmitted run starts afresh: an old cancellation request must not stop it.
            self.store.delete_tag(self.runs[run_id], TAG_CANCEL)
            self._clear_cancel.discard(run_id)
        for run_id, (state, reason, extra) in list(self._wanted.items()):
            stored = self.runs[run_id]
            if (stored.state, stored.reason) != (state, reason) or any(
                stored.tags.get(k) != v for k, v in extra.items()
            ):
                self.store.set_state(stored, state, reason, extra)
            del self._wanted[run_id]
        now = time.monotonic()
        metrics_due = all_metrics or now - self._last_metrics >= METRICS_S
        if metrics_due:
            self._last_metrics = now
        finished_tails = set()
        for run_id in sorted(self._tailing):
            ended = run_id in self._artifacts_due or self.runs[run_id].state not in ("running", "pending")
            if not (metrics_due or ended) or not self._attempt_started(run_id):
                continue
            self._tail(run_id)
            if run_id in self._artifacts_due:
                self._log_artifacts(run_id)
            if ended:
                finished_tails.add(run_id)
        self._tailing -= finished_tails

    def _tail(self, run_id: str) -> None:
        assert self.store is not None
        stored = self.runs[run_id]
        for metrics, cursor in pending_batches(self._records(run_id), stored.cursor):
            self.store.log(stored.mlflow_id, metrics, tags={TAG_CURSOR: cursor.to_tag()})
            stored.tags[TAG_CURSOR] = cursor.to_tag()

    def _attempt_started(self, run_id: str) -> bool:
        attempt = self._awaiting.get(run_id)
        if attempt is None:
            return True
        records = self._records(run_id)
        if not any(r.get("kind") == "start" and r.get("attempt") == attempt for r in records):
            return False
        del self._awaiting[run_id]
        return True

    def _log_artifacts(self, run_id: str) -> None:
        assert self.store is not None
        folder = Path(self.specs[run_id].out_dir)
        self.store.log_artifacts(self.runs[run_id], [folder / name for name in RUN_FILES])
        self._artifacts_due.discard(run_id)

    def _records(self, run_id: str) -> list[dict]:
        """The run's JSONL records, up to what its worker has written by now."""
        jsonl = self._jsonl.get(run_id)
        if jsonl is None:
            jsonl = self._jsonl[run_id] = JsonlTail(Path(self.specs[run_id].out_dir) / METRICS_FILE)
        jsonl.read()
        return jsonl.records

    def _read_live(self) -> None:
        """Progress of running runs, from their files (works while the store is down)."""
        for run_id in self._tailing:
            records = self._records(run_id)
            if not records:
                continue
            train, evals = latest(records, "train"), latest(records, "eval")
            live = self.live.setdefault(run_id, Live())
            if train:
                live.step = int(train["step"])
                live.tokens = int(train.get("train/tokens", 0))
                live.tokens_per_s = float(train.get("train/tokens_per_s", 0.0))
                live.train_loss = train.get("train/loss")
            if evals:
                live.eval_loss = evals.get("eval/loss")

    # ---- cancellation and heartbeat ------------------------------------------------------

    def cancel_requests(self) -> set[str]:
        """Run ids whose cancellation was requested (``gammaray cancel``) since this submission."""
        now = time.monotonic()
        if now - self._last_cancel_poll < CANCEL_POLL_S or self.store is None or self.experiment_id is None:
            return set()
        self._last_cancel_poll = now
        found: set[str] = set()

        def poll() -> None:
            assert self.store is not None and self.experiment_id is not None
            for run_id, stored in self.store.runs(self.experiment_id, with_tag=TAG_CANCEL).items():
                if run_id in self.runs and run_id not in self._clear_cancel:
                    found.add(run_id)
                    self.runs[run_id].tags[TAG_CANCEL] = stored.tags[TAG_CANCEL]

        self._soft(poll)
        return found

    def heartbeat(self, state: str = "running", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_heartbeat < HEARTBEAT_S:
            return
        if self.store is None or self.experiment_id is None:
            return
        self._last_heartbeat = now
        record = {**driver_record(), "state": state}
        self._soft(lambda: self.store.set_experiment_tag(self.experiment_id, TAG_DRIVER, json.dumps(record)))

    # ---- failure handling ----------------------------------------------------------------

    def _soft(self, action: Callable[[], None], force: bool = False) -> bool:
        if self.error is not None and not force and time.monotonic() < self._retry_at:
            return False
        try:
            action()
        except GridError:
            raise
        except Exception as error:  # the store is down or refuses: keep training, retry later
            message = one_line(error)
            self._failures += 1
            self._retry_at = time.monotonic() + min(30.0, 2.0**self._failures)
            if self.error is None:
                self.warn(
                    f"tracking store {self.uri} failed ({message}); training goes on, metrics stay in each "
                    "run's metrics.jsonl and are logged when it answers"
                )
            self.error = message
            return False
        if self.error is not None:
            self.warn(f"tracking store {self.uri} answers again; catching up")
            self.error = None
        self._failures = 0
        return True

    @property
    def pending_writes(self) -> int:
        """Queued states and runs whose metrics or artifacts are not yet in the store."""
        return len(self._wanted) + len(self._tailing) + len(self._artifacts_due)
