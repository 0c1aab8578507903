"""The Optuna studies of a tuning plan: opened from storage, seeded, resumed, one driver at a time.

Each group of the plan is one study named ``<grid>/<group key>`` in the storage (by default
``sqlite:///<workspace>/optuna.db``, beside MLflow's ``mlflow.db``). Opening a study that
exists continues it: its finished trials count towards ``--trials``, and trials that a stopped
driver left open are ended as FAIL and their values asked again first, so their runs resume
from their checkpoints instead of starting over under new values.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from orchestrator.errors import GridError
from orchestrator.tracking.store import one_line
from orchestrator.tuning.plan import Group, TunePlan
from trainers.run_folder import sqlite_path

MAX_FAILURES = 3  # failed trials after which a study stops asking, in one call
# TPE proposes from a model of the trials so far once this many exist; before, it samples at
# random. A third of the budget, 3 to 10: with few trials the model must start early.
MIN_STARTUP_TRIALS, MAX_STARTUP_TRIALS = 3, 10
# Pruning (Optuna's MedianPruner): a trial is stopped when its best eval metric so far is worse
# than the median of the completed trials at the same step, once PRUNE_AFTER_TRIALS trials have
# completed and past the first PRUNE_WARMUP of its steps. The warm-up is long because under a
# decaying schedule mid-run losses misrank learning rates: a large rate trails at mid-run and
# catches up as its rate anneals (seen on the tiny preset: pruned at 30 %, it would have won).
PRUNE_AFTER_TRIALS = 3
PRUNE_WARMUP = 0.5
FINISHED_STATES = ("COMPLETE", "PRUNED")  # what --trials counts


@dataclass
class StudyState:
    """A study and its trial counts during one call."""

    group: Group
    name: str
    study: Any  # optuna.Study
    target: int  # finished trials the study should hold
    finished: int  # complete + pruned, in the storage
    running: int = 0  # trials asked and not yet told
    new: int = 0  # trials finished by this call
    failed: int = 0  # trials failed in this call

    @property
    def wants(self) -> bool:
        return self.failed < MAX_FAILURES and self.finished + self.running < self.target


def open_studies(plan: TunePlan, storage: Any, stream: TextIO | None = None) -> list[StudyState]:
    """Create or load every study of ``plan`` in ``storage`` (``open_storage``), each with its
    seeded sampler and pruner."""
    import optuna

    states = []
    for group in plan.groups:
        name = plan.study_name(group)
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", load_if_exists=True
        )
        _check_direction(study, name)
        finished = sum(t.state.name in FINISHED_STATES for t in study.get_trials(deepcopy=False))
        if finished < plan.trials:
            _reopen_stopped_trials(study, plan, stream)
        held = len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(
            n_startup_trials=min(MAX_STARTUP_TRIALS, max(MIN_STARTUP_TRIALS, math.ceil(plan.trials / 3))),
            seed=sampler_seed(group.spec.config.seed, name, held),
        )
        study.pruner = optuna.pruners.MedianPruner(
            n_startup_trials=PRUNE_AFTER_TRIALS,
            n_warmup_steps=math.ceil(PRUNE_WARMUP * group.spec.steps),
        )
        study.set_user_attr("space", {param.key: param.spec() for param in plan.params})
        study.set_user_attr("metric", plan.metric)
        study.set_user_attr("group", {key: value for key, value in group.values})
        study.set_user_attr("N_non_embedding", group.n_params_non_embedding)
        states.append(StudyState(group=group, name=name, study=study, target=plan.trials, finished=finished))
    return states


def open_storage(url: str) -> Any:
    """The Optuna storage at ``url`` (an SQLite file's folder is created). Raises GridError."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as error:  # a bad URL, a missing database driver, an unreachable server
        raise GridError(f"--storage {url}: cannot open ({one_line(error)})") from None


def sampler_seed(grid_seed: int, study_name: str, trials_held: int) -> int:
    """The TPE seed of one call: the same for the same study and history, new for each resume
    (a resumed study would otherwise be proposed its first trials' values again)."""
    text = f"{grid_seed}/{study_name}/{trials_held}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class DriverLock:
    """One tuning driver per grid and workspace: an exclusive lock on ``<folder>/.driver.lock``.

    Two drivers would ask the same studies and end each other's open trials as stopped.
    """

    def __init__(self, folder: Path, grid: str):
        self.path = Path(folder) / ".driver.lock"
        self.grid = grid
        self.handle: IO[str] | None = None

    def __enter__(self) -> DriverLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise GridError(
                f"grid '{self.grid}' is being tuned by another driver (pid {holder}); wait for it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def _check_direction(study: Any, name: str) -> None:
    if study.direction.name != "MINIMIZE":
        raise GridError(
            f"study {name}: exists in the storage but maximizes; gammaray tune minimizes its metric"
        )


def _reopen_stopped_trials(study: Any, plan: TunePlan, stream: TextIO | None) -> None:
    """End trials a stopped driver left RUNNING, and ask the values of stopped trials again first."""
    import optuna

    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    resumed = {t.user_attrs.get("resumes_trial") for t in trials}
    space = plan.distributions()
    for trial in trials:
        if trial.state == state.RUNNING:
            study.tell(trial.number, state=state.FAIL)
        elif not (trial.state == state.FAIL and "stopped" in trial.user_attrs):
            continue
        if trial.number in resumed or set(trial.params) != set(space):
            continue
        if all(
            space[key]._contains(space[key].to_internal_repr(value)) for key, value in trial.params.items()
        ):
            study.enqueue_trial(trial.params, user_attrs={"resumes_trial": trial.number})
            if stream is not None:
                print(
                    f"{study.study_name}  trial {trial.number} was stopped: its values are asked again",
                    file=stream,
                )
