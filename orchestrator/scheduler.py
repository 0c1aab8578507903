"""Dispatching a grid's runs on Ray: largest first, within ``max_parallel`` and the cluster.

Each run goes to Ray through ``orchestrator.dispatch`` as a task named ``<grid>/<run-id>`` (a
gang of that name for a multi-process DeepSpeed run), so the Ray dashboard lists the grid as it
runs. Each attempt's outcome decides what follows:

- a result: ``finished``, or ``diverged`` (a normal outcome, with the step as its reason);
- an exception raised by training: ``failed``, with the exception as its reason (training is
  deterministic, so trying again would fail again);
- a dead worker (SIGKILL, out of memory, a lost node) or a dead gang process: the run is
  launched again, up to ``retries`` times, and resumes from its latest checkpoint;
- a preempted run (its worker got SIGTERM, and it stopped at a checkpoint): launched again at
  once, not counted as a retry, since nothing went wrong with the run;
- a cancellation request found in the tracking store: the task is stopped, ``cancelled``.

A branch of a WSD family (``orchestrator.grids.branch``) waits in the queue until its trunk has
written the checkpoint it starts from; it is then seeded with it and runs beside the trunk.
Should the trunk end without that checkpoint, the branch ends as the trunk did (failed,
diverged, cancelled), or trains from step 0 when the trunk finished before it was a trunk.

When the driver itself stops (Ctrl-C, SIGTERM), it asks every running run to stop at a
checkpoint of its current step, waits for them (up to their ``train.preempt_grace_s``), kills
what is left and records the runs as ``cancelled``: submitting the grid again resumes them.

Retries are decided here rather than by Ray's ``max_retries``: one mechanism then covers
single tasks and gangs alike, and every attempt is visible in the store and on the console.
None of these outcomes stops the rest of the grid.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import dispatch
from orchestrator.dispatch import Launched
from orchestrator.grids.branch import seed_branch
from orchestrator.grids.estimate import Capacity, largest_first
from orchestrator.grids.expand import RunSpec
from orchestrator.progress import Progress, describe_result, snapshot
from orchestrator.tracking.recorder import Recorder
from orchestrator.worker import ended_tasks, read_attempts
from trainers.run_folder import OPEN_STATES, SUMMARY_FILE

POLL_S = 0.5  # how long the loop waits for a task to end before looking at everything else
FLUSH_S = 1.0  # how often new metrics are sent to the store
CAPACITY_S = 30.0  # how often the cluster's nodes are counted again (autoscaling, lost nodes)
STOP_MARGIN_S = 5.0  # beyond the runs' own grace period, for their tasks to report back


@dataclass
class Attempt:
    launched: Launched
    number: int  # 1, 2, ...: this submission's attempt at the run (preemptions do not count)
    key: str  # names the launch in attempts.jsonl: <submission>:<number>[.<preemptions>]
    running: bool = False  # the worker has recorded its start
    cancelled: bool = False  # stopped on request

    @property
    def spec(self) -> RunSpec:
        return self.launched.spec


class Scheduler:
    """Runs ``todo`` to an outcome each; ``states`` holds every run of the grid (skipped ones too)."""

    def __init__(
        self,
        todo: Sequence[RunSpec],
        states: dict[str, str],
        recorder: Recorder,
        progress: Progress,
        capacity: Capacity,
        max_parallel: int | None,
        retries: int,
        gpu_cluster: bool,
    ):
        self.queue: list[tuple[RunSpec, int]] = [(spec, 1) for spec in largest_first(todo)]
        self.states = states
        self.specs = {spec.run_id: spec for spec in todo}
        self.recorder, self.progress, self.capacity = recorder, progress, capacity
        self.max_parallel = max_parallel
        self.retries = retries
        self.gpu_cluster = gpu_cluster
        self.inflight: dict[Any, Attempt] = {}
        self.used_cpus = 0.0
        self.used_gpus = 0.0
        self.trained: set[str] = set()  # runs that reached a result in this submission
        self.preemptions: dict[str, int] = {}  # run id → times its worker was preempted
        self.submission = uuid.uuid4().hex[:8]
        self._last_flush = 0.0
        self._last_capacity = time.monotonic()

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        """Dispatch until every run has an outcome; returns the final state of each run id."""
        try:
            while self.queue or self.inflight:
                self._handle_cancel_requests()
                self._refresh_capacity()
                self._fill()
                self._wait(POLL_S)
                self._note_starts()
                self._flush()
        except BaseException as error:
            self._stop_all(f"the driver stopped ({_why(error)})")
            raise
        finally:
            self.progress.close()
        return dict(self.states)

    def _fill(self) -> None:
        for item in list(self.queue):
            spec, number = item
            if self.max_parallel is not None and len(self.inflight) >= self.max_parallel:
                return
            if spec.branch is not None:
                ready = self._branch_to_launch(item)
                if ready is None:
                    continue
                if ready.branch is None:  # it trains whole from now on
                    self.queue[self.queue.index(item)] = item = (ready, number)
                spec = ready
            cpus, gpus = spec.processes * spec.resources.cpus, spec.processes * spec.resources.gpus
            fits = (
                self.used_cpus + cpus <= self.capacity.cpus + 1e-9
                and self.used_gpus + gpus <= self.capacity.gpus + 1e-9
            )
            if not fits and self.inflight:
                continue  # back-fill: a smaller run may start while this one waits for room
            if not fits:
                # The cluster shrank below this run (a lost node): hand it to Ray, which starts
                # it when the resources come back (or an autoscaler adds them).
                self.progress.event(
                    f"waiting   {spec.run_id}  {spec.label}: needs {cpus:g} CPUs and {gpus:g} GPUs, "
                    f"{self.capacity.source} has {self.capacity.cpus:g} and {self.capacity.gpus:g} now"
                )
            self.queue.remove(item)
            self._launch(spec, number)

    def _refresh_capacity(self) -> None:
        import ray

        now = time.monotonic()
        if now - self._last_capacity < CAPACITY_S:
            return
        self._last_capacity = now
        capacity = Capacity.from_nodes(ray.nodes(), source=self.capacity.source)
        if capacity.cpus or capacity.gpus:  # a transient empty answer must not stall the grid
            self.capacity = capacity

    def _launch(self, spec: RunSpec, number: int) -> None:
        preempted = self.preemptions.get(spec.run_id, 0)
        key = f"{self.submission}:{number}" + (f".{preempted}" if preempted else "")
        launched = dispatch.launch(spec, key, spec.task_name, self.gpu_cluster)
        self.used_cpus += spec.processes * spec.resources.cpus
        self.used_gpus += spec.processes * spec.resources.gpus
        self.inflight[launched.ref] = Attempt(launched, number, key)
        self.recorder.watch(spec.run_id, attempt=key)

    def _wait(self, timeout: float) -> None:
        for ref in ended_tasks(list(self.inflight), timeout):
            self._complete(self.inflight.pop(ref))

    def _note_starts(self) -> None:
        """Mark a run running once its worker has recorded this attempt's start."""
        for attempt in self.inflight.values():
            if attempt.running:
                continue
            if any(record.get("attempt") == attempt.key for record in read_attempts(attempt.spec.out_dir)):
                attempt.running = True
                self.states[attempt.spec.run_id] = "running"
                self.recorder.set_state(attempt.spec.run_id, "running", None, attempts=attempt.number)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_flush >= FLUSH_S:
            self._last_flush = now
            self.recorder.flush()
            self.recorder.heartbeat()
        self.progress.update(snapshot(self.states, self._all_specs(), self.recorder.live, self._slots()))

    def _branch_to_launch(self, item: tuple[RunSpec, int]) -> RunSpec | None:
        """The branch of ``item`` ready to launch (seeded from its trunk's checkpoint), or None
        while that checkpoint is still to come. A branch whose trunk ended without it trains
        from step 0 (a trunk that finished before it was one) or leaves the queue ending as its
        trunk did."""
        spec, number = item
        start = spec.branch
        assert start is not None
        if seed_branch(spec):
            return spec
        trunk = self.states.get(start.trunk_run_id, "pending")
        if trunk in OPEN_STATES:
            return None
        if trunk == "finished":
            self.progress.event(
                f"branch    {spec.run_id}  {spec.label}: trunk {start.trunk_run_id} has no checkpoint at step "
                f"{start.step}; training it from step 0"
            )
            return dataclasses.replace(spec, branch=None)
        self.queue.remove(item)
        stored = self.recorder.runs.get(start.trunk_run_id)
        why = f"its trunk {start.trunk_run_id} {trunk} before this branch's start at step {start.step}"
        if stored is not None and stored.reason:
            why += f" ({stored.reason})"
        self.states[spec.run_id] = trunk  # trained alone, it would have ended the same way
        self.recorder.set_state(spec.run_id, trunk, why)
        self.progress.event(f"{trunk:<9} {spec.run_id}  {spec.label}: {why}")
        return None

    # ---- outcomes ------------------------------------------------------------------------

    def _complete(self, attempt: Attempt) -> None:
        spec = attempt.spec
        self._release(attempt)
        ended = dispatch.outcome(attempt.launched)
        if ended.kind == "cancelled" or (ended.kind == "dead" and attempt.cancelled):
            self._end(
                spec, "cancelled", "cancelled by request" if attempt.cancelled else "cancelled", attempt
            )
        elif ended.kind == "dead":
            self._retry_or_fail(attempt, ended.reason)
        elif ended.kind == "preempted":
            self._relaunch_preempted(attempt, ended.reason)
        elif ended.kind == "failure":
            self._end(spec, "failed", ended.reason, attempt)
        else:
            result = ended.result
            if not (Path(spec.out_dir) / SUMMARY_FILE).is_file():
                # The worker's node wrote a run folder this driver cannot see: nothing would be
                # tailed, and a resubmission would train the run again.
                self.progress.event(
                    f"warning: {spec.out_dir} is not visible to this driver; put the workspace "
                    "($GAMMARAY_HOME) on a filesystem every node shares"
                )
            diverged = result.get("status") == "diverged"
            reason = f"loss not finite at step {result.get('diverged_step')}" if diverged else None
            self.trained.add(spec.run_id)
            self._end(spec, "diverged" if diverged else "finished", reason, attempt, result)

    def _retry_or_fail(self, attempt: Attempt, reason: str) -> None:
        spec, number = attempt.spec, attempt.number
        if number <= self.retries:
            self.progress.event(
                f"retrying {spec.run_id}  {spec.label}: {reason} "
                f"(attempt {number + 1} of {self.retries + 1}, resumes from its checkpoint)"
            )
            self.states[spec.run_id] = "pending"
            self.recorder.set_state(
                spec.run_id,
                "pending",
                f"retry {number + 1}/{self.retries + 1} after: {reason}",
                attempts=number,
            )
            self.queue.insert(0, (spec, number + 1))
        else:
            self._end(spec, "failed", f"{reason}; gave up after {number} attempts", attempt)

    def _relaunch_preempted(self, attempt: Attempt, reason: str) -> None:
        spec = attempt.spec
        self.preemptions[spec.run_id] = self.preemptions.get(spec.run_id, 0) + 1
        self.progress.event(f"preempted {spec.run_id}  {spec.label}: {reason}; launched again (not a retry)")
        self.states[spec.run_id] = "pending"
        self.recorder.set_state(spec.run_id, "pending", f"preempted: {reason}", attempts=attempt.number)
        self.queue.insert(0, (spec, attempt.number))

    def _end(
        self, spec: RunSpec, state: str, reason: str | None, attempt: Attempt, result: dict | None = None
    ) -> None:
        self.states[spec.run_id] = state
        self.recorder.set_state(spec.run_id, state, reason, attempts=attempt.number)
        self.recorder.done(spec.run_id, with_artifacts=result is not None)
        if result is not None:
            self.progress.event(describe_result(spec, result, time.monotonic() - attempt.launched.started))
        else:
            self.progress.event(f"{state:<9} {spec.run_id}  {spec.label}: {reason}")

    def _release(self, attempt: Attempt) -> None:
        spec = attempt.spec
        self.used_cpus -= spec.processes * spec.resources.cpus
        self.used_gpus -= spec.processes * spec.resources.gpus
        dispatch.release(attempt.launched)

    # ---- cancellation --------------------------------------------------------------------

    def _handle_cancel_requests(self) -> None:
        requested = self.recorder.cancel_requests()
        if not requested:
            return
        for spec, number in [item for item in self.queue if item[0].run_id in requested]:
            self.queue.remove((spec, number))
            self.states[spec.run_id] = "cancelled"
            self.recorder.set_state(spec.run_id, "cancelled", "cancelled by request")
            self.progress.event(f"cancelled {spec.run_id}  {spec.label}: before it started")
        for attempt in self.inflight.values():
            if attempt.spec.run_id in requested and not attempt.cancelled:
                attempt.cancelled = True
                dispatch.stop(attempt.launched)

    def _stop_all(self, reason: str) -> None:
        """Stop every running run at a checkpoint (the driver is going away) and record why.

        Each run is asked to stop and given its grace period; one that has not ended by then, or
        every one when the driver is interrupted again, is killed (it resumes from its latest
        checkpoint instead of its current step).
        """
        running = list(self.inflight.values())
        for attempt in running:
            dispatch.stop(attempt.launched, graceful=True)
        grace = max((a.spec.config.train.preempt_grace_s for a in running), default=0.0)
        deadline = time.monotonic() + grace + STOP_MARGIN_S
        stopped: set[Any] = set()
        try:
            while len(stopped) < len(running) and time.monotonic() < deadline:
                waiting = [a.launched.ref for a in running if a.launched.ref not in stopped]
                stopped |= ended_tasks(waiting, min(POLL_S, max(deadline - time.monotonic(), 0.0)))
        except BaseException:  # interrupted again: stop waiting
            pass
        for attempt in running:
            spec = attempt.spec
            asked = attempt.launched.ref in stopped
            if asked and dispatch.outcome(attempt.launched).kind == "result":
                self._complete(attempt)  # it finished before the request reached it
                continue
            if not asked:
                dispatch.stop(attempt.launched)
            self._release(attempt)
            why = (
                f"{reason}; "
                + ("stopped at a checkpoint of its last step" if asked else "killed")
                + ", the next submit resumes it"
            )
            self.states[spec.run_id] = "cancelled"
            self.recorder.set_state(spec.run_id, "cancelled", why, attempts=attempt.number)
            self.recorder.done(spec.run_id, with_artifacts=False)
        self.inflight.clear()
        for spec, _ in self.queue:
            self.states[spec.run_id] = "cancelled"
            self.recorder.set_state(spec.run_id, "cancelled", reason)
        self.queue.clear()
        self.recorder.flush()

    # ---- helpers -------------------------------------------------------------------------

    def _all_specs(self) -> dict[str, RunSpec]:
        return {**self.recorder.specs, **self.specs}

    def _slots(self) -> int:
        from orchestrator.grids.estimate import concurrent_runs

        return concurrent_runs(list(self.specs.values()), self.capacity, self.max_parallel) or 1


def _why(error: BaseException) -> str:
    """What stopped the driver, in a few words."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return type(error).__name__
