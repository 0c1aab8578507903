"""From a run table to fits and comparisons: grouping, slicing, choosing forms, bootstrapping.

Which fits are made:

- ``n`` — L(N) at each D slice (runs sharing D within 5%) that holds at least three distinct N
  (two give a partial fit with E = 0). When D moves with N (one D per size) or is constant,
  L(N) is fitted over all runs of a group, along the grid's D schedule.
- ``d`` — L(D) at each N slice, likewise.
- ``joint`` — L(N, D) per group, when N and D each take three or more values and are not locked
  together.
- ``isoflop`` — per group, when at least two FLOPs budgets hold three or more sizes.

Without an explicit form every applicable one is fitted. Slices are found on all finished runs
together, so every group is fitted on the same slices and can be compared.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import DEFAULT_CI_LEVEL, DEFAULT_RESAMPLES, bootstrap_fit
from analysis.compare import Comparison, compare_fits
from analysis.errors import AnalysisError
from analysis.fit import ALL_FORMS, FitResult, fit_power_law, n_distinct
from analysis.isoflop import fit_isoflop, has_iso_flop_slices
from analysis.load import CORE_COLUMNS, RunTable
from analysis.slices import cluster_values

# A cluster is a slice only if its values stay within this factor: continuous data (every run
# at its own D) would otherwise chain into one cluster spanning decades.
MAX_SLICE_SPAN = 1.1


@dataclass(frozen=True)
class Analysis:
    """Everything ``fit`` prints and ``report`` draws: the runs, fits, comparisons and notes."""

    table: RunTable
    by: tuple[str, ...]
    forms: tuple[str, ...]
    fits: tuple[FitResult, ...]
    comparisons: tuple[Comparison, ...]
    messages: tuple[str, ...]
    n_bootstrap: int
    ci_level: float
    seed: int

    @property
    def any_ok(self) -> bool:
        """True when at least one fit succeeded (fully or partially)."""
        return any(f.ok for f in self.fits)

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Distinct groups among the finished runs, in sorted order."""
        seen: list[dict[str, Any]] = []
        for fit in self.fits:
            if fit.group not in seen:
                seen.append(fit.group)
        return seen


def analyze(
    table: RunTable,
    by: Sequence[str] | None = None,
    forms: Sequence[str] | None = None,
    n_bootstrap: int = DEFAULT_RESAMPLES,
    *,
    seed: int = 0,
    ci_level: float = DEFAULT_CI_LEVEL,
) -> Analysis:
    """Fit every group of finished runs in ``table`` and compare the groups.

    ``by``: grouping columns (default ``table.default_by``); ``forms``: subset of
    ``n, d, joint, isoflop`` (default: every applicable one); ``n_bootstrap``: resamples per
    fit (0 for none). Raises :class:`AnalysisError` for an unknown column or form, or when no
    run is finished; degenerate data never raises and ends up in the results' messages.
    """
    by = tuple(table.default_by if by is None else by)
    for column in by:
        if column not in table.runs.columns:
            axes = ", ".join(table.axes) or "none"
            raise AnalysisError(f"--by: unknown column '{column}' in {table.name} (varying columns: {axes})")
    for form in forms or ():
        if form not in ALL_FORMS:
            raise AnalysisError(f"--form: unknown form '{form}' (expected one of {', '.join(ALL_FORMS)})")
    if not 0 < ci_level < 1:
        raise AnalysisError(f"ci_level: must be between 0 and 1, got {ci_level}")
    finished = table.finished
    if finished.empty:
        states = table.runs["state"].value_counts().to_dict()
        raise AnalysisError(f"{table.name}: no finished runs to fit (runs by state: {states})")
    messages = list(table.messages)
    skipped = len(table.runs) - len(finished)
    if skipped:
        messages.append(f"{skipped} run(s) not finished (failed, diverged or unfinished): listed, not fitted")
    messages += _grouping_notes(table, finished, by)

    n_all = finished["N"].to_numpy(float)
    d_all = finished["D"].to_numpy(float)
    chosen, why = _choose_forms(finished, forms)
    messages += why
    d_slices = _slices(d_all, n_all, finished.index) if "n" in chosen else []
    n_slices = _slices(n_all, d_all, finished.index) if "d" in chosen else []
    if not forms and "joint" in chosen:
        # Runs scattered over (N, D) without fixed slices (e.g. every run at its own D): a
        # one-variable law along them would mix both effects; the joint law separates them.
        for form, slices, axis in (("n", d_slices, "D"), ("d", n_slices, "N")):
            if form in chosen and not slices:
                chosen.remove(form)
                messages.append(f"L({'N' if form == 'n' else 'D'}) is not fitted on its own: no slice of the runs holds {axis} fixed; the joint fit covers it")

    fits: list[FitResult] = []
    for group, rows in _groups(finished, by):
        if "n" in chosen:
            fits += _sliced_fits(rows, group, "n", d_slices, "D")
        if "d" in chosen:
            fits += _sliced_fits(rows, group, "d", n_slices, "N")
        if "joint" in chosen:
            fits.append(_power_fit(rows, group, "joint", {}))
        if "isoflop" in chosen:
            fits.append(fit_isoflop(rows["N"], rows["D"], rows["FLOPs"], rows["loss"], run_ids=list(rows["run_id"]), group=group))
    fits = [bootstrap_fit(f, n_bootstrap, seed=_seed(seed, i), ci_level=ci_level) for i, f in enumerate(fits)]
    comparisons = compare_fits(fits, ci_level)
    return Analysis(
        table=table,
        by=by,
        forms=tuple(chosen),
        fits=tuple(fits),
        comparisons=comparisons,
        messages=tuple(messages),
        n_bootstrap=n_bootstrap,
        ci_level=ci_level,
        seed=seed,
    )


def _seed(seed: int, index: int) -> int:
    # Independent, reproducible streams per fit: each group is resampled on its own.
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _groups(finished: pd.DataFrame, by: tuple[str, ...]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    if not by:
        return [({}, finished)]
    out = []
    for key, rows in finished.groupby(list(by), dropna=False, sort=True):
        values = key if isinstance(key, tuple) else (key,)
        out.append(({c: plain_value(v) for c, v in zip(by, values)}, rows))
    return out


def plain_value(value: Any) -> Any:
    """numpy scalars and NaN as plain Python values (JSON- and label-friendly)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _slices(axis_values: np.ndarray, other_values: np.ndarray, index: pd.Index) -> list[tuple[float, pd.Index]]:
    """Valid slices of ``axis_values`` as (center, the row labels of their runs).

    A slice keeps the axis (nearly) fixed and spans at least two distinct values of the other
    axis. Slices with three or more distinct values are preferred; two-value slices are used
    only when no slice has three.
    """
    labels, centers = cluster_values(axis_values)
    candidates = []
    for j, center in enumerate(centers):
        mask = labels == j
        values = axis_values[mask]
        if values.max() / values.min() > MAX_SLICE_SPAN:
            continue
        candidates.append((float(center), index[mask], n_distinct(other_values[mask & np.isfinite(other_values)])))
    best = [c for c in candidates if c[2] >= 3] or [c for c in candidates if c[2] == 2]
    return [(center, members) for center, members, _ in best]


def _choose_forms(finished: pd.DataFrame, forms: Sequence[str] | None) -> tuple[list[str], list[str]]:
    n_all = finished["N"].to_numpy(float)
    d_all = finished["D"].to_numpy(float)
    good = np.isfinite(n_all) & np.isfinite(d_all) & (n_all > 0) & (d_all > 0)
    n_n, n_d = n_distinct(n_all[good]), n_distinct(d_all[good])
    if forms:
        return list(dict.fromkeys(forms)), []
    chosen, notes = [], []
    if n_n >= 2:
        chosen.append("n")
    if n_d >= 2:
        chosen.append("d")
    if n_n >= 3 and n_d >= 3 and _separable(np.log(n_all[good]), np.log(d_all[good])):
        chosen.append("joint")
    if has_iso_flop_slices(finished["FLOPs"].to_numpy(float), n_all):
        chosen.append("isoflop")
    if not chosen:
        notes.append("every finished run has the same N and the same D: there is no scaling to fit")
    return chosen, notes


def _separable(log_n: np.ndarray, log_d: np.ndarray) -> bool:
    """False when log D is (almost) a linear function of log N, as on a D = k·N schedule."""
    centered = np.column_stack([log_n, log_d])
    centered = centered - centered.mean(axis=0)
    sv = np.linalg.svd(centered, compute_uv=False)
    return bool(sv[-1] > 1e-6 * sv[0])


def _sliced_fits(rows: pd.DataFrame, group: dict[str, Any], form: str, slices: list, axis: str) -> list[FitResult]:
    if not slices:
        # No slice holds the axis fixed: fit along whatever schedule the grid follows.
        fit = _power_fit(rows, group, form, {})
        other = "N" if axis == "D" else "D"
        if n_distinct(rows[axis].to_numpy(float)) > 1:
            note = f"{axis} is not held fixed across {other} in these runs: L({other}) is fitted along the grid's {axis} values"
            fit = _add_message(fit, note)
        return [fit]
    out = []
    for center, members in slices:
        member = rows[rows.index.isin(members)]
        if not member.empty:
            out.append(_power_fit(member, group, form, {axis: center}))
    return out


def _power_fit(rows: pd.DataFrame, group: dict[str, Any], form: str, slice_: dict[str, float]) -> FitResult:
    return fit_power_law(
        rows["N"].to_numpy(float),
        rows["D"].to_numpy(float),
        rows["loss"].to_numpy(float),
        form,
        run_ids=list(rows["run_id"]),
        train_flops=rows["FLOPs"].to_numpy(float),
        group=group,
        slice=slice_,
    )


def _add_message(fit: FitResult, message: str) -> FitResult:
    return dataclasses.replace(fit, messages=fit.messages + (message,))


def _grouping_notes(table: RunTable, finished: pd.DataFrame, by: tuple[str, ...]) -> list[str]:
    """Warn about axes that vary within a group independently of N and D."""
    notes = []
    keys = ["N", "D", *by]
    frame = finished.copy()
    for column in keys:
        frame[column] = frame[column].map(lambda v: "∅" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v))
    for axis in table.axes:
        if axis in by or axis in CORE_COLUMNS or axis.split(".")[-1] in ("seed", "run_id") or axis not in frame:
            continue
        values = frame[axis].map(lambda v: "∅" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v))
        spread = values.groupby([frame[k] for k in keys]).nunique()
        if (spread > 1).any():
            suggestion = ",".join([*by, axis])
            notes.append(f"runs that share N, D and the grouping differ in '{axis}': they are pooled in one fit; to separate them use --by {suggestion}")
    return notes
