"""``gammaray tune``: Optuna studies whose trials are training runs on Ray, pruned as they train.

One study per group of a :class:`~orchestrator.tuning.plan.TunePlan`, kept in an Optuna storage
(``sqlite:///<workspace>/optuna.db`` by default) under the name ``<grid>/<group key>``. The
driver asks the studies for trials (ask/tell), as many at once as the cluster holds, and runs
each trial as a Ray task calling ``orchestrator.worker.train_point`` on the trial's run. While a
run trains, the driver tails its ``metrics.jsonl``: every new eval record is reported to the
trial and judged by the pruner on its own (so the verdict does not depend on how often the
driver looks, nor on whether the run ended before it looked), and a trial the pruner rejects
has its task cancelled and is told PRUNED. A run that finishes is told COMPLETE with its final
eval metric (the summary's final eval loss for ``eval/loss``).

Outcomes, and why:

- **Diverged** (loss NaN/inf): told COMPLETE with the metric of the untrained model (its step-0
  eval), marked ``status=diverged``. A failed trial would be ignored by the sampler, which would
  then keep proposing the region that diverges; "no better than not training" steers it away.
- **Training raised**: told FAIL with the reason. Failed trials do not count towards
  ``--trials``; a study stops asking after ``MAX_FAILURES`` of them in one call.
- **The worker died**: the run is launched again (up to the grid's ``retries``) and resumes
  from its checkpoint; the trial stays open.
- **The driver stopped** (Ctrl-C, SIGTERM, SIGKILL): open trials end as FAIL; the next call
  asks their values again first (``enqueue_trial``), so their runs resume from checkpoints.

``--trials K`` is the number of finished trials (complete + pruned) each study should hold: a
second call with a larger K asks only the missing ones. A trial whose values were run before
reuses the finished run (same config, same run id), and trials asking identical values at the
same time share one run. The sampler is a seeded TPE: the seed mixes the grid's seed, the study
name and the trials it holds, so a call is reproducible given the storage it starts from (with
one trial at a time; in parallel, which trials have finished when the next is asked depends on
timing).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from orchestrator import dispatch
from orchestrator.dispatch import Launched
from orchestrator.grids.estimate import Capacity
from orchestrator.grids.expand import RunSpec
from orchestrator.tracking.replay import JsonlTail, read_records
from orchestrator.tuning.plan import TunePlan, short_value
from orchestrator.tuning.results import CallCounts, TuneOutcome, write_outcome
from orchestrator.tuning.studies import MAX_FAILURES, StudyState
from orchestrator.worker import ended_tasks
from trainers.errors import ConfigError
from trainers.run_folder import METRICS_FILE

POLL_S = 0.5  # how long the loop waits for a task before tailing the running trials
PRUNE_STOP_WAIT_S = 10.0  # how long a pruned run's stopped task is given to end, to learn if it had finished


@dataclass
class Running:
    """A run training for one or more trials of one study (identical values share a run)."""

    spec: RunSpec
    state: StudyState
    trials: list[Any]  # optuna.Trial
    launched: Launched | None = None  # its current attempt on Ray
    attempt: int = 1
    started: float = field(default_factory=time.monotonic)
    reported: dict[int, float] = field(default_factory=dict)  # eval step -> metric told to the trials
    jsonl: JsonlTail | None = None  # its metrics.jsonl, read as it grows (from the first look)


def objective(
    result: Mapping[str, Any], records: Sequence[Mapping[str, Any]], metric: str
) -> tuple[float | None, str]:
    """The value a run tells its trial, and the run's status (``finished`` or ``diverged``).

    Finished: ``metric`` in the last eval record (for ``eval/loss`` the summary's final eval
    loss). Diverged, or a final value that is not finite: the metric at step 0, the untrained
    model's. None when the run's eval records do not hold ``metric``.
    """
    evals = [r for r in records if r.get("kind") == "eval" and metric in r]
    final = result.get("final_eval_loss") if metric == "eval/loss" else (evals[-1][metric] if evals else None)
    diverged = result.get("status") == "diverged" or not _finite(final)
    if not diverged:
        return float(final), "finished"  # type: ignore[arg-type]
    first = (
        result.get("initial_eval_loss") if metric == "eval/loss" else (evals[0][metric] if evals else None)
    )
    return (float(first), "diverged") if _finite(first) else (None, "diverged")


class Tuner:
    """Asks the studies for trials, runs them on Ray, prunes and tells them, until every study
    holds its target (or gave up after failures)."""

    def __init__(
        self,
        plan: TunePlan,
        states: Sequence[StudyState],
        capacity: Capacity,
        gpu_cluster: bool,
        stream: TextIO | None = None,
    ):
        self.plan, self.states, self.capacity = plan, list(states), capacity
        self.gpu_cluster = gpu_cluster
        self.stream = stream or sys.stderr
        self.slots = parallel_trials(plan, capacity)
        self.distributions = plan.distributions()
        self.inflight: dict[Any, Running] = {}  # Ray ref -> run
        self.by_run: dict[str, Running] = {}  # run id -> run
        self.counts = CallCounts()

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> CallCounts:
        try:
            while any(state.wants for state in self.states) or self.inflight:
                self._fill()
                self._wait(POLL_S)
                for running in list(self.inflight.values()):
                    self._tail(running)
        except BaseException:
            self._stop_all("the driver stopped")
            raise
        return self.counts

    def _fill(self) -> None:
        while len(self.inflight) < self.slots:
            wanting = [state for state in self.states if state.wants]
            if not wanting:
                return
            # The study furthest from its target first: studies advance together.
            state = min(wanting, key=lambda s: (s.finished + s.running) / max(s.target, 1))
            self._ask(state)

    def _ask(self, state: StudyState) -> None:
        from trainers.loop import read_summary

        trial = state.study.ask(self.distributions)
        state.running += 1
        values = {param.key: trial.params[param.key] for param in self.plan.params}
        try:
            spec = self.plan.trial_spec(state.group, values)
        except ConfigError as error:  # a value inside the checked range can still clash (divisibility)
            self._fail(
                Running(spec=state.group.spec, state=state, trials=[trial]), f"invalid config: {error}"
            )
            return
        trial.set_user_attr("run_id", spec.run_id)
        trial.set_user_attr("run_dir", spec.out_dir)
        shared = self.by_run.get(spec.run_id)
        if shared is not None:
            # The same values are training for another trial: wait for that run.
            for step, value in sorted(shared.reported.items()):
                trial.report(value, step)
            shared.trials.append(trial)
            return
        running = Running(spec=spec, state=state, trials=[trial])
        summary = read_summary(Path(spec.out_dir))
        if summary is not None and summary.run_id == spec.run_id:
            self.counts.reused += 1
            if not self._tail(running):
                self._finish(running, summary.to_dict(), reused=True)
            return
        self._launch(running)

    def _launch(self, running: Running) -> None:
        spec = running.spec
        attempt = f"tune-{int(time.time())}:{running.attempt}"
        name = f"{self.plan.grid.name}/tune/{spec.run_id}"
        running.launched = dispatch.launch(spec, attempt, name, self.gpu_cluster)
        running.started = running.launched.started
        self.inflight[running.launched.ref] = running
        self.by_run[spec.run_id] = running

    def _wait(self, timeout: float) -> None:
        for ref in ended_tasks(list(self.inflight), timeout):
            if ref in self.inflight:
                self._complete(self._remove(ref))

    # ---- while a run trains --------------------------------------------------------------

    def _tail(self, running: Running) -> bool:
        """Report the run's new eval records to its trials, judging each as it is reported;
        True if the trials were pruned.

        A run that ended (or was reused) before the driver read all its evals is judged the
        same way, so which trials are pruned does not depend on how often this loop looks.
        """
        if running.jsonl is None:
            running.jsonl = JsonlTail(Path(running.spec.out_dir) / METRICS_FILE)
        last = max(running.reported, default=-1)
        for record in running.jsonl.read():
            step, value = record.get("step"), record.get(self.plan.metric)
            if record.get("kind") != "eval" or step is None or step <= last or not _finite(value):
                continue
            for trial in running.trials:
                trial.report(float(value), int(step))
            running.reported[int(step)] = float(value)
            last = int(step)
            if running.trials[0].should_prune():
                self._prune(running)
                return True
        return False

    def _prune(self, running: Running) -> None:
        import optuna

        if running.launched is not None and running.launched.ref in self.inflight:
            dispatch.stop(running.launched)  # if it has just ended, the result is dropped: pruned anyway
            self._remove(running.launched.ref)
            # A run that ended before the stop reached it was trained to its end all the same.
            ended = ended_tasks([running.launched.ref], PRUNE_STOP_WAIT_S)
            if ended and dispatch.outcome(running.launched).kind == "result":
                self.counts.trained += 1
        step = max(running.reported)
        for trial in running.trials:
            running.state.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self._told(running)
        self.counts.pruned += len(running.trials)
        self._line(running, f"pruned at step {step}: {self.plan.metric} {running.reported[step]:.4f}")

    # ---- outcomes ------------------------------------------------------------------------

    def _complete(self, running: Running) -> None:
        ended = dispatch.outcome(running.launched)
        if ended.kind == "dead":
            self._retry_or_fail(running, ended.reason)
            return
        if ended.kind != "result":
            self._fail(running, ended.reason or "cancelled")
            return
        result = ended.result
        self.counts.trained += 1
        if not self._tail(running):
            self._finish(running, result)

    def _finish(self, running: Running, result: Mapping[str, Any], reused: bool = False) -> None:
        records = read_records(running.spec.out_dir)
        value, status = objective(result, records, self.plan.metric)
        if value is None:
            self._fail(running, f"the run's eval records hold no {self.plan.metric}")
            return
        for trial in running.trials:
            trial.set_user_attr("status", status)
            running.state.study.tell(trial, value)
        self._told(running)
        run_id = running.spec.run_id
        how = (
            f"reused run {run_id}" if reused else f"run {run_id}, {time.monotonic() - running.started:.0f} s"
        )
        note = " (diverged: told the untrained model's value)" if status == "diverged" else ""
        self._line(running, f"{self.plan.metric} {value:.4f}{note} ({how})")

    def _retry_or_fail(self, running: Running, reason: str) -> None:
        if running.attempt <= self.plan.grid.retries:
            running.attempt += 1
            self._line(running, f"{reason}; attempt {running.attempt}, resuming from its checkpoint")
            self._launch(running)
        else:
            self._fail(running, f"{reason}; gave up after {running.attempt} attempts")

    def _fail(self, running: Running, reason: str) -> None:
        import optuna

        for trial in running.trials:
            trial.set_user_attr("reason", reason)
            running.state.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        running.state.running -= len(running.trials)
        running.state.failed += len(running.trials)
        self.counts.failed += len(running.trials)
        self._line(running, f"failed: {reason}")
        if running.state.failed == MAX_FAILURES:
            print(
                f"gammaray: study {running.state.name}: {MAX_FAILURES} trials failed; it asks no more in this call",
                file=self.stream,
                flush=True,
            )

    def _told(self, running: Running) -> None:
        n = len(running.trials)
        running.state.running -= n
        running.state.finished += n
        running.state.new += n

    def _remove(self, ref: Any) -> Running:
        running = self.inflight.pop(ref)
        self.by_run.pop(running.spec.run_id, None)
        dispatch.release(running.launched)
        return running

    def _stop_all(self, reason: str) -> None:
        """Stop every running task and end its trials as FAIL, marked so the next call resumes them."""
        import optuna

        for ref in list(self.inflight):
            running = self._remove(ref)
            dispatch.stop(running.launched)
            for trial in running.trials:
                try:
                    trial.set_user_attr("stopped", reason)
                    running.state.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                except Exception:  # the storage is gone too: the next call ends them
                    pass

    def _line(self, running: Running, text: str) -> None:
        numbers = ",".join(str(trial.number) for trial in running.trials)
        values = " ".join(
            f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in running.trials[0].params.items()
        )
        print(f"{running.state.name}  trial {numbers}  {values}  {text}", file=self.stream, flush=True)


def parallel_trials(plan: TunePlan, capacity: Capacity) -> int:
    """Trials at once: the cluster's CPUs (and GPUs) over one run's, capped by max_parallel."""
    cpus = max(g.spec.processes * g.spec.resources.cpus for g in plan.groups)
    gpus = max(g.spec.processes * g.spec.resources.gpus for g in plan.groups)
    fit = int(capacity.cpus // cpus) if cpus else 1
    if gpus:
        fit = min(fit, int(capacity.gpus // gpus))
    fit = max(1, fit)
    return min(fit, plan.grid.max_parallel) if plan.grid.max_parallel else fit


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run(plan: TunePlan, address: str | None = None, stream: TextIO | None = None) -> TuneOutcome:
    """Run what the plan's studies miss, then write best.yaml and the report; returns the outcome.

    Ray is started (or joined at ``address``) only when some study wants trials.
    """
    from orchestrator.grids.estimate import check_capacity
    from orchestrator.tuning.studies import DriverLock, open_storage, open_studies

    stream = stream or sys.stderr
    specs = [group.spec for group in plan.groups]
    if address is None:  # the local cluster will be this machine: check before anything starts
        check_capacity(plan.grid, specs, Capacity.this_machine())
    counts = CallCounts()
    storage = open_storage(plan.storage)
    with DriverLock(plan.folder, plan.grid.name):
        states = open_studies(plan, storage, stream)
        wanting = [state for state in states if state.wants]
        if wanting:
            import ray  # noqa: F401

            from orchestrator.cluster import connect, disconnect

            this_machine = Capacity.this_machine()
            cluster = connect(address, this_machine, warm_workers=parallel_trials(plan, this_machine))
            try:
                check_capacity(plan.grid, specs, cluster.capacity)
                if cluster.dashboard_url:
                    print(f"Ray dashboard: {cluster.dashboard_url}", file=stream, flush=True)
                tuner = Tuner(
                    plan, states, cluster.capacity, gpu_cluster=cluster.capacity.gpus > 0, stream=stream
                )
                held = sum(state.finished for state in states)
                missing = sum(max(0, state.target - state.finished) for state in states)
                print(
                    f"tune {plan.grid.name}: {len(states)} stud{'y' if len(states) == 1 else 'ies'} × {plan.trials} "
                    f"trials, {held} held, {missing} to run, {tuner.slots} at once; storage {plan.storage}",
                    file=stream,
                    flush=True,
                )
                counts = tuner.run()
            finally:
                disconnect(cluster)
        outcome: TuneOutcome = write_outcome(plan, states, counts)
    return outcome
