"""``gammaray eval``: score a grid's finished runs with lm-evaluation-harness, one Ray task a run.

A task exports the run's final checkpoint into ``<run>/hf`` (``trainers.export``), writes the
shipped gammaray tasks the run's data can ask into ``<run>/eval-tasks`` (``trainers.eval_tasks``)
and runs the harness's ``simple_evaluate`` on the exported model; other task names go to the
harness as they are (its standard benchmarks, which need their datasets on the machine). Each
score (the harness's metrics, e.g. ``acc`` and ``acc_stderr``, and for shipped tasks the
``chance`` accuracy) is appended to ``<run>/downstream.jsonl`` as ``{"task", "metric", "value",
"step", "limit"}`` and logged to the run's MLflow run as ``eval/<task>/<metric>`` at that step.

A run already scored for a task at its final step with the same ``--limit`` is skipped, so a
second ``eval`` does only what is new. A run that fails is reported in one line and the others
go on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.callbacks import read_jsonl
from trainers.errors import ConfigError
from trainers.run_folder import CONFIG_FILE, workspace_dir

DOWNSTREAM_FILE = "downstream.jsonl"
EXPORT_DIR = "hf"
TASKS_DIR = "eval-tasks"
METRIC_PREFIX = "eval/"
# The harness's per-task keys are "<metric>,<filter>"; these are bookkeeping, not scores.
_NOT_METRICS = {"alias", "name", "sample_len", "sample_count"}


@dataclass
class EvalOutcome:
    """What ``evaluate_grid`` did: scores by run id, runs skipped as already scored, failures."""

    scored: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    not_applicable: dict[str, list[str]] = field(default_factory=dict)  # run id → shipped tasks it cannot ask
    failed: dict[str, str] = field(default_factory=dict)  # run id → reason


def shipped_tasks() -> list[str]:
    from trainers.eval_tasks import TASKS

    return list(TASKS)


def score_run(
    run_dir: str, tasks: Sequence[str], limit: int | None, batch_size: int, device: str
) -> list[dict[str, Any]]:
    """Export the run in ``run_dir`` and score it on ``tasks`` (all must apply to it); the new
    score records, also appended to its ``downstream.jsonl``. Runs inside a Ray worker."""
    from trainers.eval_tasks import TASKS, chance, write_task
    from trainers.export import EXPORT_INFO, export_run

    # gammaray's own tasks never go online; the harness's standard ones may need the hub.
    _quiet_libraries(offline=all(t in TASKS for t in tasks))
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from trainers.config import load_run_config, resolve

    folder = Path(run_dir)
    run = resolve(load_run_config(folder / CONFIG_FILE))
    hf = export_run(folder, folder / EXPORT_DIR)
    step = json.loads((hf / EXPORT_INFO).read_text())["step"]
    for name in tasks:
        if name in TASKS:
            write_task(run, name, folder / TASKS_DIR)
    model = HFLM(pretrained=str(hf), batch_size=batch_size, device=device, dtype="float32")
    results = lm_eval.simple_evaluate(
        model=model,
        tasks=list(tasks),
        # Indexing the harness's own thousands of task files takes seconds: only when one is asked.
        task_manager=TaskManager(
            include_path=str(folder / TASKS_DIR), include_defaults=any(t not in TASKS for t in tasks)
        ),
        limit=limit,
        log_samples=False,
        verbosity="ERROR",
    )["results"]
    records = []
    for name in tasks:
        scores = {key.split(",")[0]: value for key, value in results.get(name, {}).items()}
        if name in TASKS:
            scores["chance"] = chance(name, run)
        for metric, value in scores.items():
            if metric in _NOT_METRICS or not isinstance(value, int | float):
                continue
            records.append(
                {"task": name, "metric": metric, "value": float(value), "step": step, "limit": limit}
            )
    with open(folder / DOWNSTREAM_FILE, "a") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    return records


def _quiet_libraries(offline: bool) -> None:
    """The harness, datasets and transformers print progress bars and notices at every call;
    ``offline`` keeps them off the Hugging Face hub (a user's own setting wins)."""
    if offline:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import logging

    import datasets
    import transformers

    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def scored_tasks(run_dir: Path, step: int, limit: int | None) -> set[str]:
    """The tasks ``downstream.jsonl`` holds scores for at ``step`` with the same ``limit``."""
    return {
        r["task"]
        for r in read_jsonl(run_dir / DOWNSTREAM_FILE)
        if r.get("step") == step and r.get("limit") == limit
    }


def evaluate_grid(
    grid: str,
    tasks: Sequence[str],
    tracking_uri: str,
    limit: int | None = None,
    batch_size: int = 32,
    gpus_per_run: float = 0,
    address: str | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> EvalOutcome:
    """Score every finished run of ``grid`` on ``tasks`` (see the module docstring)."""
    from orchestrator.tracking.store import open_existing
    from trainers.config import load_run_config, resolve
    from trainers.eval_tasks import TASKS, applicable_tasks
    from trainers.loop import read_summary

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit: must be >= 1, got {limit}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size: must be >= 1, got {batch_size}")
    _check_task_names(tasks)
    store, experiment_id = open_existing(tracking_uri, grid)
    finished = {rid: r for rid, r in store.runs(experiment_id).items() if r.state == "finished"}
    outcome = EvalOutcome()
    todo: dict[str, tuple[Path, list[str]]] = {}
    for run_id in sorted(finished):
        folder = workspace_dir() / "grids" / grid / run_id
        summary = read_summary(folder)
        if summary is None:
            outcome.failed[run_id] = f"its run folder {folder} has no summary.json"
            continue
        run = resolve(load_run_config(folder / CONFIG_FILE))
        asked = [t for t in tasks if t not in TASKS or t in applicable_tasks(run)]
        if len(asked) < len(tasks):
            outcome.not_applicable[run_id] = [t for t in tasks if t not in asked]
        new = [t for t in asked if t not in scored_tasks(folder, summary.steps, limit)]
        if new:
            todo[run_id] = (folder, new)
        else:
            outcome.skipped.append(run_id)
    say(
        f"grid {grid}: {len(finished)} finished runs, {len(outcome.skipped)} already scored, "
        f"scoring {len(todo)} on {', '.join(tasks)}"
    )
    if todo:
        _score_on_ray(todo, limit, batch_size, gpus_per_run, address, outcome, say)
    for run_id, records in outcome.scored.items():
        metrics = [(f"{METRIC_PREFIX}{r['task']}/{r['metric']}", r["value"], r["step"]) for r in records]
        store.log(finished[run_id].mlflow_id, metrics)
    return outcome


def _check_task_names(tasks: Sequence[str]) -> None:
    if not tasks:
        raise ConfigError(
            "--tasks: name at least one task (`gammaray eval --list-tasks` shows the shipped ones)"
        )
    shipped = shipped_tasks()
    other = [t for t in tasks if t not in shipped]
    if not other:
        return
    mistyped = [t for t in other if t.startswith("gammaray_")]
    if mistyped:
        raise ConfigError(
            f"--tasks: unknown task {mistyped[0]!r} (the shipped tasks are {', '.join(shipped)})"
        )
    from lm_eval.tasks import TaskManager

    known = set(TaskManager().all_tasks)
    unknown = [t for t in other if t not in known]
    if unknown:
        raise ConfigError(
            f"--tasks: unknown task {unknown[0]!r} (neither shipped, see `gammaray eval --list-tasks`, "
            "nor one of lm-evaluation-harness's)"
        )


def _score_on_ray(
    todo: dict[str, tuple[Path, list[str]]],
    limit: int | None,
    batch_size: int,
    gpus_per_run: float,
    address: str | None,
    outcome: EvalOutcome,
    say: Callable[[str], None],
) -> None:
    import ray

    from orchestrator.cluster import connect, disconnect
    from orchestrator.grids.estimate import Capacity

    cluster = connect(address, Capacity.this_machine())
    try:
        device = "cuda" if gpus_per_run > 0 else "cpu"
        remote = ray.remote(score_run)
        options = {"num_cpus": 1, "num_gpus": gpus_per_run, "max_retries": 0}
        pending = {
            remote.options(name=f"eval/{run_id}", **options).remote(
                str(folder), tasks, limit, batch_size, device
            ): run_id
            for run_id, (folder, tasks) in todo.items()
        }
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            run_id = pending.pop(ready)
            try:
                outcome.scored[run_id] = ray.get(ready)
            except Exception as error:  # one run's failure is reported, the others go on
                outcome.failed[run_id] = _cause(error)
                continue
            say(f"{run_id}: {describe_scores(outcome.scored[run_id])}")
    finally:
        disconnect(cluster)


def describe_scores(records: Sequence[dict[str, Any]]) -> str:
    """``task acc 0.512 ± 0.031 (chance 0.5), ...``: each score with its standard error and the
    task's chance accuracy where there are."""
    values = {(r["task"], r["metric"]): r["value"] for r in records}
    parts = []
    for (task, metric), value in values.items():
        if metric.endswith("_stderr") or metric == "chance":
            continue
        stderr, chance = values.get((task, f"{metric}_stderr")), values.get((task, "chance"))
        parts.append(
            f"{task} {metric} {value:.3f}"
            + (f" ± {stderr:.3f}" if stderr is not None else "")
            + (f" (chance {chance:.3g})" if chance is not None else "")
        )
    return ", ".join(parts)


def _cause(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1]}" if text else type(cause).__name__
