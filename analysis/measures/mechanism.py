"""Statistics of the trainer's eval-time measurements: mechanism, token buckets, probe, critical γ.

The trainer logs (``docs/diagnostics.md``) ``diag/<metric>/<scope>`` histories (condensation,
ranks, embedding spectrum, attention sink), ``tokens/loss/<bucket or role>`` at the final eval
and ``probe/<metric>`` histories of the composite reasoning probe. This module turns a
:class:`~analysis.load.RunTable`'s histories into per-run values, per-group comparisons with
bootstrap intervals, and the critical-γ summary. Pure pandas and numpy.

Runs are compared at matched (N, D): a *cell* is a pair of N and D clusters
(:func:`analysis.fitting.slices.cluster_values`, values within 5%), and a comparison between groups
uses only cells both hold. Bootstrap draws resample the cells, and the runs (seeds) within each
cell and group, with replacement: the interval covers both the spread over model and data
sizes and seed noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.fitting.bootstrap import DEFAULT_CI_LEVEL, percentile_ci
from analysis.fitting.slices import cluster_values
from analysis.labels import AXIS_SYMBOLS, group_label, plain_value

TOKEN_BUCKETS = ("trivial", "context", "other")
PROBE_METRICS = ("probe/seen_accuracy", "probe/heldout_compositional", "probe/heldout_mirrored")
# Below this trained-pair accuracy (in every group) the composite task was not learned, and what a
# model answers on the held-out pair is noise, not a choice between composing and memorizing.
LEARNED_SEEN_ACCURACY = 0.5


# ---- runs, groups and values --------------------------------------------------------------------


def metric_names(histories: pd.DataFrame, prefix: str) -> list[str]:
    """The distinct metrics of a histories frame that start with ``prefix``, sorted."""
    if histories is None or histories.empty:
        return []
    names = histories["metric"].drop_duplicates()
    return sorted(names[names.str.startswith(prefix)])


def final_values(histories: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """A run_id × metric frame of each metric's value at its last logged step."""
    rows = histories[histories["metric"].isin(list(metrics))]
    if rows.empty:
        return pd.DataFrame(columns=list(metrics))
    last = rows.sort_values("step", kind="stable").groupby(["run_id", "metric"]).tail(1)
    return last.pivot(index="run_id", columns="metric", values="value").reindex(columns=list(metrics))


def run_groups(runs: pd.DataFrame, by: Sequence[str]) -> tuple[pd.Series, list[str], dict[str, Any]]:
    """Group label of every run (by ``by``), the labels in sorted order, and each label's
    numeric γ-like value when ``by`` is one numeric column (else an empty dict)."""
    if not by:
        return pd.Series("all runs", index=runs["run_id"]), ["all runs"], {}
    labels: dict[str, str] = {}
    order: list[str] = []
    numeric: dict[str, Any] = {}
    for key, rows in runs.groupby(list(by), dropna=False, sort=True):
        values = key if isinstance(key, tuple) else (key,)
        group = {c: plain_value(v) for c, v in zip(by, values)}
        label = group_label(group)
        order.append(label)
        labels.update(dict.fromkeys(rows["run_id"], label))
        value = plain_value(values[0])
        if len(by) == 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
            numeric[label] = float(value)
    if len(numeric) != len(order):
        numeric = {}
    missing = runs["run_id"][~runs["run_id"].isin(list(labels))]  # a NaN grouping value
    labels.update(dict.fromkeys(missing, group_label({c: None for c in by})))
    return pd.Series(labels).reindex(runs["run_id"]), order, numeric


def group_axis_title(by: Sequence[str]) -> str:
    """γ for ``init.gamma``, else the column name, else ``group``."""
    return AXIS_SYMBOLS.get(by[0], by[0]) if len(by) == 1 else "group"


def cells(runs: pd.DataFrame) -> pd.Series:
    """A matched-(N, D) cell key per run (``"n<i>-d<j>"``), NaN where N or D is missing."""
    n_labels, _ = cluster_values(runs["N"].to_numpy(float))
    d_labels, _ = cluster_values(runs["D"].to_numpy(float))
    keys = [f"n{n}-d{d}" if n >= 0 and d >= 0 else None for n, d in zip(n_labels, d_labels)]
    return pd.Series(keys, index=runs["run_id"].to_numpy())


def tokens_per_step(histories: pd.DataFrame) -> dict[str, float]:
    """Training tokens per optimizer step of each run, from its ``tokens`` history."""
    rows = histories[(histories["metric"] == "tokens") & (histories["step"] > 0)]
    ratio = rows["value"] / rows["step"]
    return ratio.groupby(rows["run_id"]).median().to_dict()


# ---- bootstrap over matched cells ---------------------------------------------------------------

Samples = dict[str, np.ndarray]  # cell key → the values of one group's runs in that cell


def group_samples(values: pd.Series, groups: pd.Series, cell_of: pd.Series) -> dict[str, Samples]:
    """Per group label, per cell, the finite values of the group's runs."""
    frame = pd.DataFrame(
        {"value": values, "group": groups.reindex(values.index), "cell": cell_of.reindex(values.index)}
    )
    frame = frame[np.isfinite(frame["value"].astype(float)) & frame["cell"].notna()]
    out: dict[str, Samples] = {}
    for (group, cell), rows in frame.groupby(["group", "cell"]):
        out.setdefault(group, {})[cell] = rows["value"].to_numpy(float)
    return out


def bootstrap_means(
    samples: Sequence[Samples], common: Sequence[str], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot, n_groups) draws of each group's mean over the cells ``common``: cells resampled
    with replacement (the same draw for every group, keeping the pairing), runs within each
    (group, cell) resampled with replacement."""
    pick = rng.integers(0, len(common), size=(n_boot, len(common)))  # (B, cells)
    out = np.empty((n_boot, len(samples)))
    for g, per_cell in enumerate(samples):
        cell_draws = np.stack(
            [  # (B, cells): a resampled mean of the runs in each cell
                rng.choice(per_cell[c], size=(n_boot, len(per_cell[c]))).mean(1) for c in common
            ],
            axis=1,
        )
        out[:, g] = np.take_along_axis(cell_draws, pick, axis=1).mean(1)
    return out


def point_means(samples: Sequence[Samples], common: Sequence[str]) -> np.ndarray:
    """Each group's mean over the cells ``common`` of its per-cell mean."""
    return np.array([np.mean([s[c].mean() for c in common]) for s in samples])


@dataclass(frozen=True)
class Gain:
    """How much lower ``group``'s ``metric`` is than ``reference``'s, at matched (N, D):
    mean over shared cells of reference − group (positive: ``group`` is better)."""

    metric: str
    group: str
    reference: str
    value: float
    ci: tuple[float, float]
    n_cells: int
    n_runs: int


def paired_gain(
    metric: str,
    group: str,
    reference: str,
    samples: dict[str, Samples],
    n_boot: int,
    rng: np.random.Generator,
    level: float = DEFAULT_CI_LEVEL,
) -> Gain | None:
    """The :class:`Gain` of ``group`` over ``reference``; None without a shared cell."""
    a, b = samples.get(reference, {}), samples.get(group, {})
    common = sorted(set(a) & set(b))
    if not common:
        return None
    value = float(np.subtract(*point_means([a, b], common)))
    ci = (math.nan, math.nan)
    if n_boot:
        draws = bootstrap_means([a, b], common, n_boot, rng)
        ci = percentile_ci(draws[:, 0] - draws[:, 1], level)
    n_runs = sum(len(a[c]) + len(b[c]) for c in common)
    return Gain(metric, group, reference, value, ci, len(common), n_runs)


# ---- token buckets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenGains:
    """Final ``tokens/loss/<name>`` per group, and every group's gain over the reference group."""

    reference: str
    means: pd.DataFrame  # group label × metric: mean final value over finished runs
    gains: tuple[Gain, ...]  # buckets first, then roles


def token_gains(
    runs: pd.DataFrame,
    histories: pd.DataFrame,
    by: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = DEFAULT_CI_LEVEL,
) -> TokenGains | None:
    """Per token bucket (and role), the loss gain of each group over the first group (in sorted
    order, e.g. the smallest γ) at matched (N, D); None when no finished run logged any."""
    metrics = metric_names(histories, "tokens/loss/")
    finished = runs[runs["state"] == "finished"]
    values = final_values(histories, metrics).reindex(finished["run_id"])
    if not metrics or values.dropna(how="all").empty:
        return None
    buckets = [f"tokens/loss/{b}" for b in TOKEN_BUCKETS if f"tokens/loss/{b}" in metrics]
    metrics = buckets + [m for m in metrics if m not in buckets]
    groups, order, _ = run_groups(finished, by)
    cell_of = cells(finished)
    present = [g for g in order if values.loc[groups.index[groups == g]].notna().any().any()]
    means = values.groupby(groups.reindex(values.index)).mean().reindex(index=present, columns=metrics)
    rng = np.random.default_rng(seed)
    gains = []
    for metric in metrics:
        samples = group_samples(values[metric], groups, cell_of)
        for group in present[1:]:
            gain = paired_gain(metric, group, present[0], samples, n_boot, rng, level)
            if gain is not None:
                gains.append(gain)
    return TokenGains(present[0], means, tuple(gains))


# ---- condensation over training -----------------------------------------------------------------


def condensation_summary(
    runs: pd.DataFrame, histories: pd.DataFrame, by: Sequence[str], metric: str
) -> pd.DataFrame:
    """Per group: runs with a ``metric`` history, the mean over runs of its peak (largest value
    over training), of the fraction of training at which the peak came, and of its final value.
    Condensation that rises and then falls back ("condense, then expand") shows as a peak above
    the final value, reached before the end."""
    rows = histories[histories["metric"] == metric].sort_values("step", kind="stable")
    if rows.empty:
        return pd.DataFrame(columns=["group", "runs", "peak", "peak_at", "final"])
    per_run = rows.groupby("run_id").agg(
        peak=("value", "max"),
        final=("value", "last"),
        peak_step=("step", lambda s: s.iloc[int(np.argmax(rows.loc[s.index, "value"].to_numpy()))]),
        last_step=("step", "max"),
    )
    per_run["peak_at"] = per_run["peak_step"] / per_run["last_step"].where(per_run["last_step"] > 0)
    groups, order, _ = run_groups(runs, by)
    per_run["group"] = groups.reindex(per_run.index)
    table = per_run.groupby("group").agg(
        runs=("peak", "size"), peak=("peak", "mean"), peak_at=("peak_at", "mean"), final=("final", "mean")
    )
    return table.reindex([g for g in order if g in table.index]).reset_index()
