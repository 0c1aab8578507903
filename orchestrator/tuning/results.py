"""What a tuning call leaves behind: best values per study, the size rule, best.yaml, the report.

Results are read back from the storage after the trials ran, so they cover every trial each
study holds, from this call and earlier ones. ``best.yaml`` (``<workspace>/tune/<grid>/``) is a
grid snippet: a ``zip`` group pairing the group keys with the best values, ready to paste into
a grid's ``zip:`` list, then the size rule and the best trials as data. The report is
``<workspace>/reports/<grid>-tune.html``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from analysis.tune_rule import SizeRule, TunedGroup, fit_size_rules
from orchestrator.tuning.plan import TunePlan
from orchestrator.tuning.studies import StudyState
from trainers.run_folder import workspace_dir


@dataclass
class CallCounts:
    """What one call did, across studies."""

    trained: int = 0  # runs that reached a result here (trials that reused a run do not count)
    reused: int = 0  # trials told from a run finished before
    pruned: int = 0
    failed: int = 0


BEST_FILE = "best.yaml"
# Config keys that set a model's size: groups that differ only in these share one size rule.
SIZE_KEYS = ("model.preset", "model.n_layers", "model.d_model", "model.n_heads", "model.d_ff")
ZIP_DIGITS = 4  # significant digits of the best values in the zip group (exact ones under best:)


@dataclass(frozen=True)
class StudyResult:
    """One study as the storage holds it after the call."""

    name: str  # <grid>/<group key>
    group_key: str
    group: dict[str, Any]  # per key -> value
    n_params_non_embedding: int
    complete: int
    pruned: int
    failed: int  # training failed
    stopped: int  # ended by a driver that stopped (their values were, or will be, asked again)
    new: int  # trials finished by this call
    best_params: dict[str, Any] | None = None  # None: no complete trial yet
    best_value: float | None = None
    best_trial: int | None = None
    best_run_id: str | None = None
    best_status: str | None = None  # finished or diverged

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


@dataclass
class TuneOutcome:
    """A call's results; ``as_json`` is the CLI's ``--json`` document."""

    grid: str
    storage: str
    metric: str
    target: int
    studies: list[StudyResult]
    trained: int  # runs trained to a result by this call
    reused: int  # trials told from runs finished before
    failed: int  # trials failed in this call
    rules: list[SizeRule] = field(default_factory=list)
    best_file: Path | None = None
    report: Path | None = None

    @property
    def total_trials(self) -> int:
        return sum(s.finished for s in self.studies)

    @property
    def new_trials(self) -> int:
        return sum(s.new for s in self.studies)

    @property
    def reached_target(self) -> bool:
        """Every study holds its target of finished trials."""
        return all(s.finished >= self.target for s in self.studies)

    def as_json(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "storage": self.storage,
            "metric": self.metric,
            "trials": self.target,
            "best": {
                s.group_key: {
                    "params": s.best_params,
                    "value": s.best_value,
                    "trial": s.best_trial,
                    "run_id": s.best_run_id,
                    "status": s.best_status,
                    "group": s.group,
                    "N_non_embedding": s.n_params_non_embedding,
                }
                for s in self.studies
                if s.best_params is not None
            },
            "total_trials": self.total_trials,
            "new_trials": self.new_trials,
            "trained": self.trained,
            "reused": self.reused,
            "failed": self.failed,
            "rule": [rule.to_dict() for rule in self.rules],
            "report": str(self.report) if self.report else None,
            "best_file": str(self.best_file) if self.best_file else None,
            "studies": [
                {
                    "name": s.name,
                    "group": s.group,
                    "complete": s.complete,
                    "pruned": s.pruned,
                    "failed": s.failed,
                    "stopped": s.stopped,
                    "new": s.new,
                    "best_value": s.best_value,
                }
                for s in self.studies
            ],
        }


def write_outcome(plan: TunePlan, states: Sequence[StudyState], counts: CallCounts) -> TuneOutcome:
    """Read every study back, fit the size rules, write best.yaml and the report."""
    from analysis.report.tune import StudyPanel, write_tune_report

    results = [study_result(state) for state in states]
    numeric = [param.key for param in plan.params if param.numeric]
    rules = fit_size_rules(
        [
            TunedGroup(r.group, r.n_params_non_embedding, r.best_params)
            for r in results
            if r.best_params is not None
        ],
        numeric,
        slice_keys=[key for key in plan.per if key not in SIZE_KEYS],
    )
    outcome = TuneOutcome(
        grid=plan.grid.name,
        storage=plan.storage,
        metric=plan.metric,
        target=plan.trials,
        studies=results,
        trained=counts.trained,
        reused=counts.reused,
        failed=counts.failed,
        rules=rules,
    )
    plan.folder.mkdir(parents=True, exist_ok=True)
    outcome.best_file = plan.folder / BEST_FILE
    outcome.best_file.write_text(best_yaml(plan, outcome))
    panels = [
        StudyPanel(r.name, r.group_key, r.n_params_non_embedding, s.study) for r, s in zip(results, states)
    ]
    outcome.report = write_tune_report(
        workspace_dir() / "reports" / f"{plan.grid.name}-tune.html",
        grid=plan.grid.name,
        metric=plan.metric,
        storage=plan.storage,
        studies=panels,
        rules=rules,
        space={param.key: param.spec() for param in plan.params},
    )
    return outcome


def study_result(state: StudyState) -> StudyResult:
    """A study's counts and best trial, from the storage."""
    from analysis.report.tune import best_trial, trial_counts

    counts = trial_counts(state.study)
    result = StudyResult(
        name=state.name,
        group_key=state.group.key,
        group=dict(state.group.values),
        n_params_non_embedding=state.group.n_params_non_embedding,
        complete=counts["COMPLETE"],
        pruned=counts["PRUNED"],
        failed=counts["FAIL"],
        stopped=counts["STOPPED"],
        new=state.new,
    )
    best = best_trial(state.study)
    if best is None:
        return result
    return replace(
        result,
        best_params=dict(best.params),
        best_value=float(best.value),
        best_trial=best.number,
        best_run_id=best.user_attrs.get("run_id"),
        best_status=best.user_attrs.get("status"),
    )


def best_yaml(plan: TunePlan, outcome: TuneOutcome) -> str:
    """best.yaml: comments, then ``zip`` (the snippet), ``rule`` and ``best`` (the data)."""
    found = [s for s in outcome.studies if s.best_params is not None]
    lines = [
        (
            f"# Best values of `gammaray tune` on grid {plan.grid.name}: {plan.metric} minimized, "
            f"{plan.trials} finished trials per study, storage {plan.storage}."
        ),
        (
            "# The zip group pairs each study's group keys with its best values (rounded to "
            f"{ZIP_DIGITS} significant digits; exact values under best:)."
        ),
        "# Paste it into a grid's zip: list (in place of axes over its keys) to train every group at its best values.",
    ]
    for rule in outcome.rules:
        lines.append(f"# Rule: {rule.formula()}")
    if not outcome.rules:
        lines.append(
            "# Rule: none (a rule needs studies at two or more model sizes that differ in nothing else)."
        )
    missing = [s.group_key for s in outcome.studies if s.best_params is None]
    if missing:
        lines.append(f"# No complete trial yet, left out: {', '.join(missing)}.")
    document: dict[str, Any] = {}
    if found:
        zip_group: dict[str, list[Any]] = {}
        for key in plan.per:
            zip_group[key] = [_plain(s.group[key]) for s in found]
        for param in plan.params:
            zip_group[param.key] = [_rounded(s.best_params[param.key]) for s in found]  # type: ignore[index]
        document["zip"] = [zip_group]
    document["rule"] = [_plain_dict(rule.to_dict()) for rule in outcome.rules]
    document["best"] = [
        {
            "study": s.name,
            "group": {k: _plain(v) for k, v in s.group.items()},
            "params": {k: _plain(v) for k, v in (s.best_params or {}).items()},
            "value": s.best_value,
            "status": s.best_status,
            "trial": s.best_trial,
            "run_id": s.best_run_id,
            "N_non_embedding": s.n_params_non_embedding,
            "trials": {"complete": s.complete, "pruned": s.pruned, "failed": s.failed, "stopped": s.stopped},
        }
        for s in found
    ]
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, allow_unicode=True)
    return "\n".join(lines) + "\n" + body


def format_summary(outcome: TuneOutcome) -> str:
    """The lines printed on stdout: best values per study and the rules."""
    lines = []
    for s in outcome.studies:
        head = f"{s.name}: {s.finished} trials ({s.complete} complete, {s.pruned} pruned"
        head += f", {s.failed} failed" if s.failed else ""
        head += f", {s.stopped} stopped)" if s.stopped else ")"
        if s.best_params is None:
            lines.append(f"{head}; no complete trial")
            continue
        values = " ".join(f"{k}={_rounded(v)}" for k, v in s.best_params.items())
        diverged = " (diverged)" if s.best_status == "diverged" else ""
        found = f"{outcome.metric} {s.best_value:.4f}{diverged} (trial {s.best_trial}, run {s.best_run_id})"
        lines.append(f"{head}; best {values}: {found}")
    for rule in outcome.rules:
        lines.append(f"rule: {rule.formula()}")
    if outcome.best_file:
        lines.append(f"best values: {outcome.best_file}")
    if outcome.report:
        lines.append(f"report: {outcome.report}")
    return "\n".join(lines)


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{ZIP_DIGITS}g}")
    return _plain(value)


def _plain(value: Any) -> Any:
    """numpy scalars and other numbers as plain Python values, for YAML."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _plain_dict(document: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ([_plain(v) for v in value] if isinstance(value, list) else _plain(value))
        for k, value in document.items()
    }
