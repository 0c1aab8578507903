"""Does the law predict? Fit without the largest runs, predict them, compare with what they measured.

A scaling law earns trust by predicting the next scale. ``largest-n`` holds out the runs at each
fit's largest N (``largest-d``: largest D; ``largest-c``: largest training compute), refits the
rest exactly as the full fit was made (the same form and slice, the same treatment of E, jointly
with the same groups when E is shared), and predicts every held-out cell. The prediction
interval combines the refit's parameter bootstrap with the scatter of its residuals: each draw
is a bootstrap curve times exp(a resampled residual).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.fitting.bootstrap import bootstrap_fit, cell_ids, percentile_ci
from analysis.fitting.fit import POWER_FORMS, FitResult, fit_power_law
from analysis.fitting.shared import bootstrap_shared, can_share, fit_shared
from analysis.fitting.slices import FLOPS_REL_TOL, SLICE_REL_TOL, cluster_values

HOLDOUT_MODES = ("none", "largest-n", "largest-d", "largest-c")
# Distinct sizes per group from which ``largest-n`` is the default: three stay to fit.
MIN_SIZES_FOR_HOLDOUT = 4
_AXIS = {"largest-n": "N", "largest-d": "D", "largest-c": "FLOPs"}
# The forms whose fits can predict a held-out point of each mode (largest-n at fixed D is an
# L(N) prediction; an L(D) fit at the largest N slice would have nothing left to fit).
_FORMS = {"largest-n": ("n", "joint"), "largest-d": ("d", "joint"), "largest-c": POWER_FORMS}


@dataclass(frozen=True)
class HoldoutPrediction:
    """One held-out cell of one fit: the refit's prediction against the runs' mean loss."""

    group: dict[str, Any]
    form: str
    slice: dict[str, float]
    n_params: float
    tokens: float
    n_held_out: int  # runs in the cell (seeds)
    n_fitted: int  # runs the refit used
    predicted: float
    actual: float
    interval: tuple[float, float] | None
    e_mode: str
    refit: FitResult | None = field(
        default=None, repr=False, compare=False
    )  # the fit without the held-out runs

    @property
    def relative_error(self) -> float:
        """(predicted − actual) / actual."""
        return (self.predicted - self.actual) / self.actual

    @property
    def inside(self) -> bool | None:
        """Whether the measured loss lies in the prediction interval (None without one)."""
        return None if self.interval is None else bool(self.interval[0] <= self.actual <= self.interval[1])


def default_mode(n_distinct_per_group: Sequence[int]) -> str:
    """``largest-n`` when every group has at least four distinct N, else ``none``."""
    if n_distinct_per_group and min(n_distinct_per_group) >= MIN_SIZES_FOR_HOLDOUT:
        return "largest-n"
    return "none"


def held_out_mask(fit: FitResult, mode: str) -> np.ndarray:
    """Points of ``fit`` at its largest value of the mode's axis (values within tolerance count)."""
    values = {"N": fit.n_params, "D": fit.tokens, "FLOPs": fit.train_flops}[_AXIS[mode]]
    labels, centers = cluster_values(values, FLOPS_REL_TOL if mode == "largest-c" else SLICE_REL_TOL)
    if centers.size < 2:
        return np.zeros(fit.n_points, dtype=bool)
    return labels == centers.size - 1


def _subset(fit: FitResult, keep: np.ndarray) -> FitResult:
    """``fit``'s points ``keep`` refitted on their own, as a one-group fit of the same form."""
    return fit_power_law(
        fit.n_params[keep],
        fit.tokens[keep],
        fit.loss[keep],
        fit.form,
        run_ids=[r for r, k in zip(fit.run_ids, keep) if k],
        train_flops=fit.train_flops[keep],
        group=fit.group,
        slice=fit.slice,
    )


def predict_held_out(
    fit_sets: Sequence[Sequence[FitResult]],
    mode: str,
    n_bootstrap: int,
    *,
    ci_level: float = 0.95,
    seeds: Mapping[str, Any] | None = None,
    seed_for: Callable[[int], int] = lambda i: i,
) -> tuple[tuple[HoldoutPrediction, ...], tuple[str, ...]]:
    """Predictions for every held-out cell of every set of fits made together, and notes.

    ``fit_sets`` are the analysis's fits grouped as they were made: one fit alone (E per group)
    or the members of one joint fit (E shared or known). ``seeds`` maps run ids to training
    seeds (for the joint bootstrap); ``seed_for(i)`` seeds the resampling of set i. A set whose
    held-out fit would leave too little to fit is skipped with a note.
    """
    if mode == "none":
        return (), ()
    predictions, notes = [], []
    for index, members in enumerate(fit_sets):
        members = [f for f in members if f.ok and f.form in _FORMS[mode]]
        if not members:
            continue
        masks = [held_out_mask(f, mode) for f in members]
        if not all(m.any() for m in masks):
            continue
        reduced = [_subset(f, ~m) for f, m in zip(members, masks)]
        e_mode = members[0].e_mode
        where = f"{members[0].form}" + (
            f" at {', '.join(f'{k}={v:.3g}' for k, v in members[0].slice.items())}"
            if members[0].slice
            else ""
        )
        if e_mode in ("shared", "known"):
            known = e_mode == "known"
            if not all(can_share(r, known) for r in reduced):
                notes.append(
                    f"hold-out ({mode}, {where}): too few runs left to refit without the held-out ones"
                )
                continue
            refits = fit_shared(reduced, e_known=members[0].params["E"] if known else None)
            refits = bootstrap_shared(
                refits, n_bootstrap, seed=seed_for(index), ci_level=ci_level, seeds=seeds
            )
        else:
            if not all(r.ok and r.fixed == f.fixed for r, f in zip(reduced, members)):
                notes.append(
                    f"hold-out ({mode}, {where}): too few runs left to refit without the held-out ones"
                )
                continue
            refits = [bootstrap_fit(r, n_bootstrap, seed=seed_for(index), ci_level=ci_level) for r in reduced]
        rng = np.random.default_rng(seed_for(index))
        for fit, mask, refit in zip(members, masks, refits):
            predictions += _cells(fit, mask, refit, ci_level, rng)
    return tuple(predictions), tuple(notes)


def _cells(
    fit: FitResult, mask: np.ndarray, refit: FitResult, ci_level: float, rng: np.random.Generator
) -> list[HoldoutPrediction]:
    n, d, loss = fit.n_params[mask], fit.tokens[mask], fit.loss[mask]
    cells = cell_ids(n, d)
    out = []
    for cell in np.unique(cells):
        in_cell = cells == cell
        n_c, d_c = float(n[in_cell].mean()), float(d[in_cell].mean())
        predicted = float(refit.predict(np.array([n_c]), np.array([d_c]))[0])
        draws = refit.predict_samples(np.array([n_c]), np.array([d_c]))[:, 0]
        interval = None
        resid = refit.residuals[np.isfinite(refit.residuals)]
        if draws.size >= 2 and resid.size:
            # Fitted residuals understate the noise by the parameters they used up: scale them back.
            resid = resid * np.sqrt(resid.size / max(resid.size - len(refit.fitted_names), 1))
            scatter = np.exp(rng.choice(resid, size=draws.size, replace=True))
            interval = percentile_ci(draws * scatter, ci_level)
        out.append(
            HoldoutPrediction(
                group=dict(fit.group),
                form=fit.form,
                slice=dict(fit.slice),
                n_params=n_c,
                tokens=d_c,
                n_held_out=int(in_cell.sum()),
                n_fitted=refit.n_points,
                predicted=predicted,
                actual=float(loss[in_cell].mean()),
                interval=interval,
                e_mode=refit.e_mode,
                refit=refit,
            )
        )
    return out
