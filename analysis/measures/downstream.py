"""Downstream scores (``gammaray eval``): accuracy per task against scale, gaps between settings,
and the link from loss to accuracy.

``gammaray eval`` logs ``eval/<task>/<metric>`` for each scored run (``acc``, its standard
error ``acc_stderr`` and, for gammaray's own tasks, the ``chance`` accuracy) at the step it
scored. Gaps between groups are taken at matched (N, D) cells and bootstrapped like the other
measurements (``analysis.measures.mechanism``). The link is the Llama 3 report's mapping from
loss to accuracy: a sigmoid of the eval loss, rising from chance,
``acc = chance + (1 − chance) / (1 + exp(k · (L − L₀)))``, fitted where a task has at least
``LINK_MIN_RUNS`` scored runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from analysis.fitting.bootstrap import DEFAULT_CI_LEVEL
from analysis.load import DOWNSTREAM_METRIC
from analysis.measures.mechanism import bootstrap_means, cells, final_values, point_means, run_groups

SCORE = "acc"
LINK_MIN_RUNS = 5
SIGNAL_STDERRS = 2.0  # a group's mean accuracy this many standard errors above chance is a signal


def downstream_tasks(histories: pd.DataFrame) -> list[str]:
    """The tasks some run has an ``acc`` score for, sorted."""
    if histories is None or histories.empty:
        return []
    tasks = {
        m.group("task")
        for m in map(DOWNSTREAM_METRIC.match, histories["metric"].drop_duplicates())
        if m is not None and m.group("metric") == SCORE
    }
    return sorted(tasks)


@dataclass(frozen=True)
class TaskScores:
    """One task's scores over the finished runs that have one."""

    task: str
    chance: float | None  # the accuracy of guessing, where the task logs it
    runs: pd.DataFrame  # run_id, group, cell, N, D, loss, acc, acc_stderr (NaN where not logged)
    groups: tuple[str, ...]  # the groups that have scores, in the report's order


@dataclass(frozen=True)
class TaskGain:
    """``group``'s mean accuracy minus ``reference``'s over the (N, D) cells both scored.

    The interval is normal, from two variances added: the documents' (the harness's standard
    errors) and the runs' (a bootstrap over cells and the runs within them), so that one run per
    cell still gets the uncertainty of a finite task."""

    task: str
    group: str
    reference: str
    value: float
    ci: tuple[float, float]
    n_cells: int


@dataclass(frozen=True)
class LossLink:
    """``acc = chance + (1 − chance) / (1 + exp(k (L − L₀)))`` fitted to one task's runs."""

    task: str
    chance: float
    k: float
    loss_mid: float  # L₀: the loss at which accuracy is half-way from chance to 1
    rms: float  # root-mean-square residual, in accuracy
    n_runs: int

    def predict(self, loss: np.ndarray) -> np.ndarray:
        return _sigmoid_link(np.asarray(loss, float), self.chance, self.k, self.loss_mid)


def _sigmoid_link(loss: np.ndarray, chance: float, k: float, loss_mid: float) -> np.ndarray:
    return chance + (1 - chance) / (1 + np.exp(np.clip(k * (loss - loss_mid), -50, 50)))


def task_scores(runs: pd.DataFrame, histories: pd.DataFrame, by: Sequence[str], task: str) -> TaskScores:
    finished = runs[runs["state"] == "finished"]
    keys = [f"eval/{task}/{m}" for m in (SCORE, f"{SCORE}_stderr", "chance")]
    values = final_values(histories, keys).reindex(finished["run_id"])
    groups, order, _ = run_groups(finished, by)
    frame = pd.DataFrame(
        {
            "run_id": finished["run_id"].to_numpy(),
            "group": groups.to_numpy(),
            "cell": cells(finished).to_numpy(),
            "N": finished["N"].to_numpy(float),
            "D": finished["D"].to_numpy(float),
            "loss": finished["loss"].to_numpy(float),
            SCORE: values[keys[0]].to_numpy(float),
            f"{SCORE}_stderr": values[keys[1]].to_numpy(float),
        }
    )
    frame = frame[frame[SCORE].notna()]
    chance = values[keys[2]].dropna()
    present = tuple(g for g in order if g in set(frame["group"]))
    return TaskScores(task, float(chance.iloc[0]) if len(chance) else None, frame, present)


def task_gains(
    scores: TaskScores, n_boot: int = 1000, seed: int = 0, level: float = DEFAULT_CI_LEVEL
) -> list[TaskGain]:
    """Each group's accuracy gain over the first group (positive: more accurate), see :class:`TaskGain`."""
    if len(scores.groups) < 2:
        return []
    frame = scores.runs[scores.runs["cell"].notna()]
    samples = {
        group: {cell: rows[SCORE].to_numpy(float) for cell, rows in members.groupby("cell")}
        for group, members in frame.groupby("group")
    }
    # Each cell's mean over runs has document variance sum(se²) / n²: runs score independent models.
    doc_var = frame.groupby(["group", "cell"])[f"{SCORE}_stderr"].agg(
        lambda se: np.nansum(se**2) / len(se) ** 2
    )
    z = float(norm.ppf(0.5 + level / 2))
    rng = np.random.default_rng(seed)
    reference, gains = scores.groups[0], []
    for group in scores.groups[1:]:
        common = sorted(set(samples.get(group, {})) & set(samples.get(reference, {})))
        if not common:
            continue
        pair = [samples[group], samples[reference]]
        value = float(np.subtract(*point_means(pair, common)))
        variance = sum(doc_var[(group, c)] + doc_var[(reference, c)] for c in common) / len(common) ** 2
        if n_boot:
            draws = bootstrap_means(pair, common, n_boot, rng)
            variance += float(np.var(draws[:, 0] - draws[:, 1]))
        half = z * math.sqrt(variance)
        gains.append(
            TaskGain(scores.task, group, reference, value, (value - half, value + half), len(common))
        )
    return gains


def best_above_chance(scores: TaskScores) -> tuple[str, float] | None:
    """The group whose mean accuracy is furthest above chance, in standard errors of that mean
    (the harness's per-run errors combined); None without a chance level or scores."""
    if scores.chance is None:
        return None
    best = None
    for group in scores.groups:
        members = scores.runs[scores.runs["group"] == group]
        stderr = members[f"{SCORE}_stderr"].to_numpy(float)
        spread = float(np.sqrt(np.nansum(stderr**2)) / len(stderr))
        margin = (float(members[SCORE].mean()) - scores.chance) / spread if spread > 0 else math.inf
        if best is None or margin > best[1]:
            best = (group, margin)
    return best


def has_signal(scores: TaskScores) -> bool:
    """Some group scores above chance by ``SIGNAL_STDERRS`` standard errors."""
    best = best_above_chance(scores)
    return best is not None and best[1] >= SIGNAL_STDERRS


def loss_link(scores: TaskScores) -> LossLink | None:
    """The sigmoid link from eval loss to accuracy; None with fewer than ``LINK_MIN_RUNS`` runs,
    without a chance level, or when the fit does not converge."""
    from scipy.optimize import curve_fit

    rows = scores.runs[np.isfinite(scores.runs["loss"])]
    if scores.chance is None or len(rows) < LINK_MIN_RUNS:
        return None
    chance = scores.chance
    loss, acc = rows["loss"].to_numpy(float), rows[SCORE].to_numpy(float)

    def link(x: np.ndarray, k: float, mid: float) -> np.ndarray:
        return _sigmoid_link(x, chance, k, mid)

    try:
        (k, mid), _ = curve_fit(link, loss, acc, p0=(2.0, float(np.median(loss))), maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    if not (math.isfinite(k) and math.isfinite(mid)):
        return None
    rms = float(np.sqrt(np.mean((link(loss, k, mid) - acc) ** 2)))
    return LossLink(scores.task, chance, float(k), float(mid), rms, len(rows))
