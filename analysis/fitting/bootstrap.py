"""Bootstrap over runs: percentile confidence intervals for every fitted parameter.

Each resample draws the group's runs with replacement and refits. A resample is expressed as
multiplicity weights on the original points (a run drawn twice counts twice), which is the
same objective as refitting the duplicated rows but keeps one design matrix for all
resamples. Every refit starts from the full-data optimum (a warm start) and all of them run
together as one vectorized batch (:mod:`analysis.fitting.batched`); a refit the batch does not settle
is finished by L-BFGS-B, and only one that still fails goes back to the multi-start grid. Resamples whose runs cannot identify the form (too few
distinct N or D) are skipped and counted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.errors import warning
from analysis.fitting.batched import batched_refit
from analysis.fitting.fit import FORM_PARAMS, FitResult, design, layout_of, multistart, n_distinct
from analysis.fitting.isoflop import isoflop_draws
from analysis.fitting.objective import minimize_from, params_to_theta, single_threaded_blas, theta_to_params

DEFAULT_RESAMPLES = 1000
DEFAULT_CI_LEVEL = 0.95
# Shares of unfittable resamples (too few distinct points): above NOTE_SKIPPED they are counted in
# a note; above WARN_SKIPPED the note is a warning (the interval rests on the better-spread
# resamples and may be too narrow); above MAX_SKIPPED no interval is given at all.
NOTE_SKIPPED = 0.02
WARN_SKIPPED = 0.10
MAX_SKIPPED = 0.2


def skipped_note(skipped: int, n_resamples: int) -> str | None:
    """The note on ``skipped`` unfittable resamples of ``n_resamples``, or None when too few to matter."""
    if skipped > MAX_SKIPPED * n_resamples:
        return warning(
            f"{skipped} of {n_resamples} bootstrap resamples drew too few distinct points to fit: "
            "too few runs for a CI (about 5 distinct sizes per fit are needed); no CI"
        )
    if skipped > WARN_SKIPPED * n_resamples:
        return warning(
            f"{skipped} of {n_resamples} bootstrap resamples drew too few distinct points to fit and were "
            "skipped: the intervals rest on the rest and may be too narrow"
        )
    if skipped > NOTE_SKIPPED * n_resamples:
        return f"{skipped} of {n_resamples} bootstrap resamples drew too few distinct points to fit and were skipped"
    return None


def percentile_ci(samples: np.ndarray, level: float = DEFAULT_CI_LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite samples; (nan, nan) if fewer than 2."""
    values = np.asarray(samples, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    # "inverted_cdf" picks observed draws, so infinite draws (a curve that never reaches a
    # loss) never meet in an interpolation.
    lo, hi = np.percentile(values, [tail, 100 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def resample_weights(n_points: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_points) multiplicities of runs drawn with replacement."""
    return rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_resamples).astype(float)


def cell_ids(n_params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(n,) an integer per distinct (N, D) cell, values within 0.1% counting as equal."""
    keys = np.column_stack([np.round(np.log(np.asarray(v, float)) / 1e-3) for v in (n_params, tokens)])
    keys = np.nan_to_num(keys, nan=-1e18)  # a missing N or D is a value of its own
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def paired_weights(
    cells: np.ndarray, seeds: np.ndarray | None, n_resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """(n_resamples, n) multiplicities for a bootstrap that keeps groups paired, and its unit.

    When every cell holds runs of at least two seeds, each cell's seeds are drawn with
    replacement (``"seeds within cells"``): every cell stays in each resample and only the
    replicate noise is resampled. Otherwise whole cells are drawn with replacement
    (``"cells"``). Either way every run of a drawn cell (and seed) comes with it, whatever
    its group, so the groups of a comparison are resampled together.
    """
    cells = np.asarray(cells)
    distinct = np.unique(cells)
    if seeds is not None:
        seed_keys = np.array([repr(s) for s in seeds])
        per_cell = [np.unique(seed_keys[cells == c]) for c in distinct]
        if all(len(s) >= 2 for s in per_cell):
            weights = np.zeros((n_resamples, len(cells)))
            for c, options in zip(distinct, per_cell):
                counts = rng.multinomial(
                    len(options), np.full(len(options), 1.0 / len(options)), size=n_resamples
                )
                in_cell = cells == c
                for j, s in enumerate(options):
                    weights[:, in_cell & (seed_keys == s)] = counts[:, j : j + 1]
            return weights, "seeds within cells"
    counts = rng.multinomial(len(distinct), np.full(len(distinct), 1.0 / len(distinct)), size=n_resamples)
    position = np.searchsorted(distinct, cells)
    return counts[:, position].astype(float), "cells"


def bootstrap_fit(
    result: FitResult,
    n_resamples: int = DEFAULT_RESAMPLES,
    *,
    seed: int = 0,
    ci_level: float = DEFAULT_CI_LEVEL,
    warm_start: bool = True,
) -> FitResult:
    """``result`` with ``ci``, ``samples`` and ``n_bootstrap`` filled in by resampling its runs.

    ``warm_start=False`` refits every resample from the multi-start grid (the slow reference
    used by the benchmark). A result that is not ``ok`` is returned unchanged.
    """
    if not result.ok or n_resamples <= 0:
        return result
    distinct = _distinct_designs(result)
    if distinct <= len(result.fitted_names):
        # As many distinct designs as parameters: every resample refits the same curve or a
        # degenerate one, so resampling would report a spuriously narrow interval.
        note = (
            f"{distinct} distinct design point(s) for {len(result.fitted_names)} parameters: "
            "no residual degrees of freedom, so no bootstrap CI (and no verdict)"
        )
        return dataclasses.replace(result, messages=result.messages + (note,))
    rng = np.random.default_rng(seed)
    weights = resample_weights(result.n_points, n_resamples, rng)
    with single_threaded_blas():
        if result.form == "isoflop":
            samples, skipped = _isoflop_draws(result, weights)
        else:
            samples, skipped = _power_draws(result, weights, warm_start)
    names = result.fitted_names
    note = skipped_note(skipped, n_resamples)
    messages = list(result.messages) + ([note] if note else [])
    if skipped > MAX_SKIPPED * n_resamples:
        # Dropping many degenerate resamples keeps only the well-spread ones and narrows the
        # interval; better no interval (and no verdict) than a falsely confident one.
        return dataclasses.replace(result, messages=tuple(messages))
    ci = {p: percentile_ci(samples[p], ci_level) for p in names}
    return dataclasses.replace(
        result, ci=ci, ci_level=ci_level, n_bootstrap=n_resamples, samples=samples, messages=tuple(messages)
    )


def _distinct_designs(result: FitResult) -> int:
    if result.form == "n":
        return n_distinct(result.n_params)
    if result.form == "d":
        return n_distinct(result.tokens)
    pairs = np.round(np.log(np.column_stack([result.n_params, result.tokens])) / 1e-3)
    return int(len(np.unique(pairs[np.all(np.isfinite(pairs), axis=1)], axis=0)))


def _identifiable(result: FitResult, w: np.ndarray) -> bool:
    drawn = w > 0
    with_e = "E" not in result.fixed
    need = 3 if with_e else 2
    if result.form == "n":
        return n_distinct(result.n_params[drawn]) >= need
    if result.form == "d":
        return n_distinct(result.tokens[drawn]) >= need
    return (
        n_distinct(result.n_params[drawn]) >= 3
        and n_distinct(result.tokens[drawn]) >= 3
        and int(drawn.sum()) >= 6
    )


def _power_draws(
    result: FitResult, weights: np.ndarray, warm_start: bool
) -> tuple[dict[str, np.ndarray], int]:
    layout = layout_of(result)
    log_x = design(result.form, result.n_params, result.tokens)
    log_loss = np.log(result.loss)
    start = params_to_theta([result.params], result.form, layout)
    draws = np.full((len(weights), start.size), np.nan)
    fittable = np.array([_identifiable(result, w) for w in weights], dtype=bool)
    rows = np.flatnonzero(fittable)
    converged = np.zeros(len(weights), dtype=bool)
    if warm_start and rows.size:
        batch = batched_refit(start, log_x, log_loss, weights[rows], layout)
        draws[rows], converged[rows] = batch.theta, batch.converged
    for i in rows[~converged[rows]]:
        # One by one: L-BFGS-B from where the batch stopped (or the warm start), then the grid.
        fit = minimize_from(draws[i], log_x, log_loss, weights[i], layout) if warm_start else None
        if fit is None or not fit.converged:
            fit = multistart(log_x, log_loss, layout, weights=weights[i])
        draws[i] = fit.theta
    samples = {p: np.full(len(weights), np.nan) for p in FORM_PARAMS[result.form]}
    for i in rows:
        for p, v in theta_to_params(draws[i], result.form, layout)[0].items():
            samples[p][i] = v
    return {p: v for p, v in samples.items() if p in result.fitted_names}, int((~fittable).sum())


def _isoflop_draws(result: FitResult, weights: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
    samples = isoflop_draws(result.n_params, result.tokens, result.train_flops, result.loss, weights)
    unfit = ~np.isfinite(samples["a"])
    for values in samples.values():
        values[unfit] = np.nan
    return samples, int(unfit.sum())
