"""A comparison that needs no fitted form: the paired loss gap per cell and its trend with scale.

For two groups and every (N, D) cell where both ran, the gap is loss(second) − loss(first):
positive where the first group is lower. Across the cells: how many favour each group, the mean
gap, and the slope of the gap against log10 N, log10 D and log10 C (compute), in nats per
decade. A gap that widens with scale in one group's favour is what "its curve descends faster"
means on the data themselves, whatever law is fitted to them.

Uncertainty: with several seeds per cell, a cell's gap is the mean of its per-seed differences
(seeds are paired: the same seed draws the same data stream) with a t-interval over seeds.
Trends are least-squares slopes over the cells' mean gaps with t-intervals over cells; when N
and D both vary independently they are fitted together (the N slope at fixed D and the D slope
at fixed N), the compute slope on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.fitting.bootstrap import cell_ids
from analysis.fitting.fit import n_distinct
from analysis.fitting.slices import locked_together
from analysis.labels import AXIS_NOUNS, format_ci, format_number, group_label, plain_value

TREND_AXES = ("N", "D", "FLOPs")


@dataclass(frozen=True)
class Cell:
    """One (N, D) cell both groups ran: ``gap`` = mean loss(second) − loss(first) in nats."""

    n_params: float
    tokens: float
    train_flops: float
    first_loss: float
    second_loss: float
    gap: float
    ci: tuple[float, float] | None  # over paired seeds; None with one seed
    n_seeds: int


@dataclass(frozen=True)
class Trend:
    """How the gap changes per decade of ``axis``, with the other axes in ``controls`` held fixed."""

    axis: str
    slope: float  # nats per decade
    ci: tuple[float, float] | None
    n_cells: int
    controls: tuple[str, ...]

    @property
    def significant(self) -> bool:
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)


@dataclass(frozen=True)
class GapComparison:
    """Two groups compared cell by cell. ``faster`` is the group whose advantage grows with scale
    along the headline trend (N when it varies, else D, else compute) when that slope's interval
    excludes 0; ``text`` says it in one sentence."""

    first: dict[str, Any]
    second: dict[str, Any]
    cells: tuple[Cell, ...]
    first_lower: int
    second_lower: int
    mean_gap: float
    mean_ci: tuple[float, float] | None
    trends: tuple[Trend, ...]
    faster: dict[str, Any] | None
    text: str
    ci_level: float = 0.95

    @property
    def headline_trend(self) -> Trend | None:
        for axis in TREND_AXES:
            for trend in self.trends:
                if trend.axis == axis:
                    return trend
        return None


def compare_gaps(
    finished: pd.DataFrame, by: Sequence[str], ci_level: float = 0.95, seed_column: str | None = None
) -> tuple[GapComparison, ...]:
    """Every pair of groups of ``finished`` (columns N, D, FLOPs, loss and ``by``) that share cells,
    the group that is lower in more cells first."""
    if not by:
        return ()
    frame = finished[
        np.isfinite(finished["loss"].astype(float)) & (finished["loss"].astype(float) > 0)
    ].copy()
    frame["_cell"] = cell_ids(frame["N"].to_numpy(float), frame["D"].to_numpy(float))
    groups = [
        (dict(zip(by, key if isinstance(key, tuple) else (key,))), rows)
        for key, rows in frame.groupby(list(by), dropna=False, sort=True)
    ]
    out = []
    for (g1, r1), (g2, r2) in itertools.combinations(groups, 2):
        comparison = compare_pair(g1, r1, g2, r2, ci_level, seed_column)
        if comparison is not None and comparison.second_lower > comparison.first_lower:
            # Lead with the group that is lower in more cells, so that most gaps read positive.
            comparison = compare_pair(g2, r2, g1, r1, ci_level, seed_column)
        if comparison is not None:
            out.append(comparison)
    return tuple(out)


def compare_pair(
    first: dict,
    rows1: pd.DataFrame,
    second: dict,
    rows2: pd.DataFrame,
    ci_level: float,
    seed_column: str | None,
) -> GapComparison | None:
    """The two groups' gaps on the cells they share (None when they share none)."""
    first, second = ({k: plain_value(v) for k, v in g.items()} for g in (first, second))
    cells = []
    for cell in sorted(set(rows1["_cell"]) & set(rows2["_cell"])):
        a, b = rows1[rows1["_cell"] == cell], rows2[rows2["_cell"] == cell]
        cells.append(_cell(a, b, ci_level, seed_column))
    if not cells:
        return None
    gaps = np.array([c.gap for c in cells])
    mean_ci = _mean_ci(gaps, ci_level)
    trends = _trends(cells, ci_level)
    comparison = GapComparison(
        first,
        second,
        tuple(cells),
        int((gaps > 0).sum()),
        int((gaps < 0).sum()),
        float(gaps.mean()),
        mean_ci,
        trends,
        None,
        "",
        ci_level,
    )
    head = comparison.headline_trend
    faster = None
    if head is not None and head.significant:
        faster = first if head.slope > 0 else second
    return _with_text(GapComparison(**{**comparison.__dict__, "faster": faster}))


def _cell(a: pd.DataFrame, b: pd.DataFrame, ci_level: float, seed_column: str | None) -> Cell:
    n, d, c = (float(pd.concat([a[k], b[k]]).astype(float).mean()) for k in ("N", "D", "FLOPs"))
    la, lb = a["loss"].astype(float), b["loss"].astype(float)
    diffs = None
    if seed_column and seed_column in a and seed_column in b:
        paired = pd.merge(
            a[[seed_column, "loss"]], b[[seed_column, "loss"]], on=seed_column, suffixes=("_a", "_b")
        )
        if len(paired) >= 2:
            diffs = (paired["loss_b"] - paired["loss_a"]).to_numpy(float)
    if diffs is not None:
        return Cell(
            n,
            d,
            c,
            float(paired["loss_a"].mean()),
            float(paired["loss_b"].mean()),
            float(diffs.mean()),
            _mean_ci(diffs, ci_level),
            len(diffs),
        )
    return Cell(
        n, d, c, float(la.mean()), float(lb.mean()), float(lb.mean() - la.mean()), None, min(len(la), len(lb))
    )


def _mean_ci(values: np.ndarray, level: float) -> tuple[float, float] | None:
    """t-interval of the mean of ``values``; None with fewer than two."""
    if len(values) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def _trends(cells: Sequence[Cell], level: float) -> tuple[Trend, ...]:
    gaps = np.array([c.gap for c in cells])
    logs = {
        "N": np.log10([c.n_params for c in cells]),
        "D": np.log10([c.tokens for c in cells]),
        "FLOPs": np.log10([c.train_flops for c in cells]),
    }
    varying = [a for a in ("N", "D") if n_distinct(10 ** logs[a]) >= 2]
    out = []
    if len(varying) == 2 and not locked_together(logs["N"], logs["D"]):
        out += _regress(gaps, logs, ("N", "D"), level)
    else:
        for axis in varying:
            out += _regress(gaps, logs, (axis,), level)
    if n_distinct(10 ** logs["FLOPs"]) >= 3 and not (
        len(varying) == 1 and locked_together(logs[varying[0]], logs["FLOPs"])
    ):
        out += _regress(gaps, logs, ("FLOPs",), level)
    return tuple(out)


def _regress(
    gaps: np.ndarray, logs: dict[str, np.ndarray], axes: tuple[str, ...], level: float
) -> list[Trend]:
    """Least-squares slopes of the gap on the log10 of ``axes`` together, each with a t-interval."""
    x = np.column_stack([np.ones(len(gaps))] + [logs[a] for a in axes])
    dof = len(gaps) - x.shape[1]
    if dof < 0:
        return []
    coef, *_ = np.linalg.lstsq(x, gaps, rcond=None)
    out = []
    for j, axis in enumerate(axes, start=1):
        ci = None
        if dof >= 1:
            resid = gaps - x @ coef
            sigma2 = float(resid @ resid) / dof
            cov = sigma2 * np.linalg.pinv(x.T @ x)
            half = stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(max(cov[j, j], 0.0))
            ci = (float(coef[j] - half), float(coef[j] + half))
        out.append(Trend(axis, float(coef[j]), ci, len(gaps), tuple(a for a in axes if a != axis)))
    return out


def trend_text(trend: Trend, first: str, second: str) -> str:
    """``the gap moves 0.12 [0.08, 0.16] nats per decade of N toward γ=1.0``: toward the group
    whose loss falls faster relative to the other's (the interval in that direction)."""
    sign = 1.0 if trend.slope > 0 else -1.0
    favoured = first if sign > 0 else second
    ci = "" if trend.ci is None else " " + format_ci(tuple(sorted(sign * v for v in trend.ci)))
    held = f" at fixed {' and '.join(trend.controls)}" if trend.controls else ""
    where = f"per decade of {'compute' if trend.axis == 'FLOPs' else trend.axis}{held}"
    size = format_number(abs(trend.slope))
    if trend.ci is None:
        return f"the gap moves {size} nats {where} toward {favoured} (too few cells for an interval)"
    if not trend.significant:
        return f"the gap moves {size}{ci} nats {where} toward {favoured}, an interval that includes 0"
    return f"the gap moves {size}{ci} nats {where} toward {favoured}"


def _with_text(c: GapComparison) -> GapComparison:
    one, two = group_label(c.first), group_label(c.second)
    total = len(c.cells)
    if c.first_lower >= c.second_lower:
        lower, count, sign = one, c.first_lower, 1.0
    else:
        lower, count, sign = two, c.second_lower, -1.0
    mean = sign * c.mean_gap
    ci_text = f" {format_ci(tuple(sorted(sign * v for v in c.mean_ci)))}" if c.mean_ci else ""
    text = f"{lower} has the lower loss in {count} of {total} cells (by {format_number(mean)}{ci_text} nats on average)"
    head = c.headline_trend
    if head is not None:
        text += "; " + trend_text(head, one, two)
    if c.faster is not None:
        noun = AXIS_NOUNS.get(head.axis, head.axis)
        text += f": {group_label(c.faster)} descends faster with {noun} on the data themselves"
    return GapComparison(**{**c.__dict__, "text": text + "."})
