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

E: groups that share their data share the irreducible loss, so by default (``e_mode="shared"``)
the groups of each form and slice are fitted jointly with one E (:mod:`analysis.fitting.shared`);
``"known"`` holds E at the data's entropy rate, ``"per-group"`` fits every group alone (chosen
automatically when the groups' data differ). Beside the fits: the paired gap per cell and its
trend (:mod:`analysis.fitting.gap`), the hold-out predictions (:mod:`analysis.fitting.holdout`) and the verdict
(:mod:`analysis.fitting.verdict`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.consistency import Inversion, inversion_notes, scale_inversions
from analysis.errors import AnalysisError
from analysis.fitting.bootstrap import DEFAULT_CI_LEVEL, DEFAULT_RESAMPLES, bootstrap_fit
from analysis.fitting.compare import Comparison, compare_fits
from analysis.fitting.fit import ALL_FORMS, FitResult, fit_power_law, n_distinct
from analysis.fitting.gap import GapComparison, compare_gaps
from analysis.fitting.holdout import HOLDOUT_MODES, HoldoutPrediction, default_mode, predict_held_out
from analysis.fitting.isoflop import fit_isoflop, has_iso_flop_slices
from analysis.fitting.shared import E_MODES, bootstrap_shared, can_share, fit_shared
from analysis.fitting.slices import cluster_values, locked_together
from analysis.fitting.verdict import Verdict, decide
from analysis.labels import group_label, plain_value, slice_label
from analysis.load import CORE_COLUMNS, ENTROPY_COLUMN, RunTable

# A cluster is a slice only if its values stay within this factor: continuous data (every run
# at its own D) would otherwise chain into one cluster spanning decades.
MAX_SLICE_SPAN = 1.1
# Runs whose loss scores only the composite task's answers (``train.loss_on=answers``) study the
# task, not a scaling curve: their loss falls towards 0 once the task is solved.
LOSS_ON_COLUMN = "train.loss_on"


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
    e_mode: str = "per-group"  # how E was treated: shared, per-group or known (after any fallback)
    e_known: float | None = None  # the data's entropy rate, when every run records the same one
    gaps: tuple[GapComparison, ...] = ()
    holdout_mode: str = "none"
    holdout: tuple[HoldoutPrediction, ...] = ()
    verdict: Verdict | None = None
    scaling: bool = True  # False for task studies (train.loss_on=answers): no law is fitted
    inversions: tuple[Inversion, ...] = ()  # larger cells that end higher than smaller ones

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
    e_mode: str = "shared",
    holdout: str | None = None,
) -> Analysis:
    """Fit every group of finished runs in ``table`` and compare the groups.

    ``by``: grouping columns (default ``table.default_by``); ``forms``: subset of
    ``n, d, joint, isoflop`` (default: every applicable one); ``n_bootstrap``: resamples per
    fit (0 for none); ``e_mode``: ``shared``, ``per-group`` or ``known``; ``holdout``: one of
    :data:`~analysis.fitting.holdout.HOLDOUT_MODES` (default: ``largest-n`` when every group has four or
    more distinct N, else ``none``). Raises :class:`AnalysisError` for an unknown column, form
    or mode, for ``known`` without a recorded entropy rate, or when no run is finished;
    degenerate data never raises and ends up in the results' messages.
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
    if e_mode not in E_MODES:
        raise AnalysisError(f"--e: unknown mode '{e_mode}' (expected one of {', '.join(E_MODES)})")
    if holdout is not None and holdout not in HOLDOUT_MODES:
        raise AnalysisError(
            f"--holdout: unknown mode '{holdout}' (expected one of {', '.join(HOLDOUT_MODES)})"
        )
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
    scaling = not _task_study(finished)
    if scaling:
        chosen, why = _choose_forms(finished, forms)
    else:
        chosen, why = (
            [],
            [
                "these runs score the composite task's answers alone (train.loss_on=answers): "
                "their loss is a task loss, not a scaling curve, so no law is fitted"
            ],
        )
    messages += why
    inversions, compared = scale_inversions(finished, by) if scaling else ([], {})
    messages += inversion_notes(inversions, compared)
    d_slices = _slices(d_all, n_all, finished.index) if "n" in chosen else []
    n_slices = _slices(n_all, d_all, finished.index) if "d" in chosen else []
    if not forms and "joint" in chosen:
        # Runs scattered over (N, D) without fixed slices (e.g. every run at its own D): a
        # one-variable law along them would mix both effects; the joint law separates them.
        for form, slices, axis in (("n", d_slices, "D"), ("d", n_slices, "N")):
            if form in chosen and not slices:
                chosen.remove(form)
                messages.append(
                    f"L({'N' if form == 'n' else 'D'}) is not fitted on its own: no slice of the runs holds {axis} fixed; the joint fit covers it"
                )

    fits: list[FitResult] = []
    for group, rows in _groups(finished, by):
        if "n" in chosen:
            fits += _sliced_fits(rows, group, "n", d_slices, "D")
        if "d" in chosen:
            fits += _sliced_fits(rows, group, "d", n_slices, "N")
        if "joint" in chosen:
            fits.append(_power_fit(rows, group, "joint", {}))
        if "isoflop" in chosen:
            fits.append(
                fit_isoflop(
                    rows["N"],
                    rows["D"],
                    rows["FLOPs"],
                    rows["loss"],
                    run_ids=list(rows["run_id"]),
                    group=group,
                )
            )
    e_known = _known_entropy(finished, e_mode)
    used_mode, why = _choose_e_mode(finished, by, e_mode)
    messages += why
    sets, why = _fit_sets(fits, used_mode, e_known)
    messages += why
    seeds = _seeds(finished)
    fitted: list[FitResult] = []
    for i, members in enumerate(sets):
        if len(members) == 1 and members[0].e_mode == "per-group":
            fitted.append(bootstrap_fit(members[0], n_bootstrap, seed=_seed(seed, i), ci_level=ci_level))
        else:
            fitted += bootstrap_shared(
                members, n_bootstrap, seed=_seed(seed, i), ci_level=ci_level, seeds=seeds
            )
    sets = _regroup(fitted, sets)
    comparisons = compare_fits(fitted, ci_level)
    gaps = (
        compare_gaps(finished, by, ci_level, seed_column="seed" if "seed" in finished.columns else None)
        if scaling
        else ()
    )
    if holdout is None:
        holdout = (
            default_mode([n_distinct(rows["N"].to_numpy(float)) for _, rows in _groups(finished, by)])
            if scaling
            else "none"
        )
    predictions, why = predict_held_out(
        sets, holdout, n_bootstrap, ci_level=ci_level, seeds=seeds, seed_for=lambda i: _seed(seed + 1, i)
    )
    messages += why
    groups = [g for g, _ in _groups(finished, by)]
    return Analysis(
        table=table,
        by=by,
        forms=tuple(chosen),
        fits=tuple(fitted),
        comparisons=comparisons,
        messages=tuple(messages),
        n_bootstrap=n_bootstrap,
        ci_level=ci_level,
        seed=seed,
        e_mode=used_mode,
        e_known=e_known,
        gaps=gaps,
        holdout_mode=holdout,
        holdout=predictions,
        verdict=decide(groups, comparisons, gaps) if scaling else None,
        scaling=scaling,
        inversions=tuple(inversions),
    )


def _task_study(finished: pd.DataFrame) -> bool:
    """True when every finished run trained on the composite task's answers alone."""
    return LOSS_ON_COLUMN in finished.columns and bool((finished[LOSS_ON_COLUMN] == "answers").all())


def _known_entropy(finished: pd.DataFrame, e_mode: str) -> float | None:
    """The entropy rate every finished run records, or None; for ``known`` a missing or
    disagreeing rate is an :class:`AnalysisError`."""
    values = (
        finished[ENTROPY_COLUMN].to_numpy(float)
        if ENTROPY_COLUMN in finished.columns
        else np.full(len(finished), np.nan)
    )
    recorded = values[np.isfinite(values)]
    if recorded.size == len(finished) and recorded.size and np.ptp(recorded) <= 1e-9 * recorded.max():
        return float(recorded[0])
    if e_mode != "known":
        return None
    if recorded.size < len(finished):
        raise AnalysisError(
            f"--e known: {len(finished) - recorded.size} of {len(finished)} finished runs record no entropy rate "
            f"(their data source does not know it, or they predate it; a CSV needs a '{ENTROPY_COLUMN}' column)"
        )
    raise AnalysisError(
        f"--e known: the runs record different entropy rates ({recorded.min():.4g} .. {recorded.max():.4g}): "
        "they train on different data; fit them with --e per-group"
    )


def _choose_e_mode(finished: pd.DataFrame, by: tuple[str, ...], e_mode: str) -> tuple[str, list[str]]:
    """``e_mode``, or ``per-group`` when there is one group or the groups train on different data
    (then each has an E of its own); ``known`` applies to one group as well."""
    if e_mode == "known":
        return e_mode, []
    if e_mode == "per-group" or not by or finished.groupby(list(by), dropna=False).ngroups < 2:
        return "per-group", []
    for column in [c for c in finished.columns if c.startswith("data.")]:
        values = finished.groupby(list(by), dropna=False)[column].agg(
            lambda v: tuple(sorted(map(repr, set(v))))
        )
        if values.nunique() > 1:
            return "per-group", [
                f"the groups train on different data ('{column}' differs): E is fitted per group"
            ]
    return e_mode, []


def _fit_sets(
    fits: list[FitResult], e_mode: str, e_known: float | None
) -> tuple[list[list[FitResult]], list[str]]:
    """The fits as they are made: alone (E per group), or jointly per form and slice (E shared or known)."""
    if e_mode == "per-group":
        return [[f] for f in fits], []
    known = e_mode == "known"
    keyed: dict[tuple, list[FitResult]] = {}
    for fit in fits:
        if can_share(fit, known):
            keyed.setdefault((fit.form, tuple(sorted(fit.slice.items()))), []).append(fit)
    notes, joint_ids = [], set()
    sets: list[list[FitResult]] = []
    for members in keyed.values():
        if len(members) < 2 and not known:
            continue
        sets.append(list(fit_shared(members, e_known=e_known if known else None)))
        joint_ids |= {id(f) for f in members}
    for fit in fits:
        if id(fit) in joint_ids:
            continue
        if fit.form != "isoflop" and fit.ok:
            where = f"{group_label(fit.group)}, {fit.form}" + (
                f" at {slice_label(fit.slice)}" if fit.slice else ""
            )
            notes.append(
                f"{where}: fitted with its own E (too few distinct points, or no other group to share E with)"
            )
        sets.append([fit])
    return sets, notes


def _regroup(fitted: list[FitResult], sets: list[list[FitResult]]) -> list[list[FitResult]]:
    """``fitted`` (the sets' members after the bootstrap, in order) cut back into the sets."""
    out, i = [], 0
    for members in sets:
        out.append(fitted[i : i + len(members)])
        i += len(members)
    return out


def _seeds(finished: pd.DataFrame) -> dict[str, Any] | None:
    """Run id → training seed, when the runs record seeds."""
    if "seed" not in finished.columns:
        return None
    return {r: plain_value(s) for r, s in zip(finished["run_id"], finished["seed"])}


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


def _slices(
    axis_values: np.ndarray, other_values: np.ndarray, index: pd.Index
) -> list[tuple[float, pd.Index]]:
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
        candidates.append(
            (float(center), index[mask], n_distinct(other_values[mask & np.isfinite(other_values)]))
        )
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
    # D set by N (a tokens-per-parameter schedule): L(N) along the schedule is the one fit; an
    # L(D) along it would be the same points again.
    locked = n_n >= 2 and n_d >= 2 and locked_together(np.log(n_all[good]), np.log(d_all[good]))
    if n_n >= 2:
        chosen.append("n")
    if n_d >= 2 and not locked:
        chosen.append("d")
    if locked:
        notes.append(
            "D moves with N in these runs (one D schedule): L(N) is fitted along it, and L(D) would be the same fit"
        )
    if n_n >= 3 and n_d >= 3 and not locked:
        chosen.append("joint")
    if has_iso_flop_slices(finished["FLOPs"].to_numpy(float), n_all):
        chosen.append("isoflop")
    if not chosen:
        notes.append("every finished run has the same N and the same D: there is no scaling to fit")
    return chosen, notes


def _sliced_fits(
    rows: pd.DataFrame, group: dict[str, Any], form: str, slices: list, axis: str
) -> list[FitResult]:
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
        frame[column] = frame[column].map(
            lambda v: "∅" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)
        )
    chosen_over = table.selection.keys if table.selection is not None else ()
    for axis in table.axes:
        if (
            axis in by
            or axis in chosen_over
            or axis in CORE_COLUMNS
            or axis.split(".")[-1] in ("seed", "run_id")
            or axis not in frame
        ):
            continue
        values = frame[axis].map(
            lambda v: "∅" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)
        )
        spread = values.groupby([frame[k] for k in keys]).nunique()
        if (spread > 1).any():
            suggestion = ",".join([*by, axis])
            notes.append(
                f"runs that share N, D and the grouping differ in '{axis}': they are pooled in one fit; to separate them use --by {suggestion}"
            )
    return notes
