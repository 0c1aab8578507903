"""Bootstrap over runs: percentile confidence intervals for every fitted parameter.

Each resample draws the group's runs with replacement and refits. A resample is expressed as
multiplicity weights on the original points (a run drawn twice counts twice), which is the
same objective as refitting the duplicated rows but keeps one design matrix for all
resamples. Every refit starts from the full-data optimum (a warm start) and all of them run
together as one vectorized batch (:mod:`analysis.batched`); a refit the batch does not settle
is finished by L-BFGS-B, and only one that still fails goes back to the multi-start grid. Resamples whose runs cannot identify the form (too few
distinct N or D) are skipped and counted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.fit import (
    FORM_PARAMS,
    FitResult,
    _bounds,
    design,
    minimize_from,
    multistart,
    n_distinct,
    params_to_theta,
    single_threaded_blas,
    theta_to_params,
)
from analysis.batched import batched_refit
from analysis.isoflop import isoflop_core

DEFAULT_RESAMPLES = 1000
DEFAULT_CI_LEVEL = 0.95
# Largest share of resamples that may be unfittable (too few distinct points) for a CI to be given.
MAX_SKIPPED = 0.2


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
        note = (f"{distinct} distinct design point(s) for {len(result.fitted_names)} parameters: "
                "no residual degrees of freedom, so no bootstrap CI (and no verdict)")
        return dataclasses.replace(result, messages=result.messages + (note,))
    rng = np.random.default_rng(seed)
    weights = resample_weights(result.n_points, n_resamples, rng)
    with single_threaded_blas():
        if result.form == "isoflop":
            samples, skipped = _isoflop_draws(result, weights)
        else:
            samples, skipped = _power_draws(result, weights, warm_start)
    names = result.fitted_names
    messages = list(result.messages)
    if skipped > MAX_SKIPPED * n_resamples:
        # Dropping many degenerate resamples keeps only the well-spread ones and narrows the
        # interval; better no interval (and no verdict) than a falsely confident one.
        messages.append(f"{skipped} of {n_resamples} bootstrap resamples drew too few distinct points to fit: "
                        f"too few runs for a CI (about 5 distinct sizes per fit are needed); no CI")
        return dataclasses.replace(result, messages=tuple(messages))
    ci = {p: percentile_ci(samples[p], ci_level) for p in names}
    if skipped > 0.02 * n_resamples:
        messages.append(f"{skipped} of {n_resamples} bootstrap resamples drew too few distinct points to fit and were skipped")
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
    return n_distinct(result.n_params[drawn]) >= 3 and n_distinct(result.tokens[drawn]) >= 3 and int(drawn.sum()) >= 6


def _power_draws(result: FitResult, weights: np.ndarray, warm_start: bool) -> tuple[dict[str, np.ndarray], int]:
    with_e = "E" not in result.fixed
    log_x = design(result.form, result.n_params, result.tokens)
    log_loss = np.log(result.loss)
    start = params_to_theta(result.params, result.form, with_e)
    draws = np.full((len(weights), start.size), np.nan)
    fittable = np.array([_identifiable(result, w) for w in weights], dtype=bool)
    rows = np.flatnonzero(fittable)
    converged = np.zeros(len(weights), dtype=bool)
    if warm_start and rows.size:
        draws[rows], converged[rows] = batched_refit(start, log_x, log_loss, weights[rows], with_e, _bounds(log_x.shape[1], with_e))
    for i in rows[~converged[rows]]:
        # One by one: L-BFGS-B from where the batch stopped (or the warm start), then the grid.
        fit = minimize_from(draws[i] if warm_start else start, log_x, log_loss, weights[i], with_e) if warm_start else None
        if fit is None or not fit.converged:
            fit = multistart(log_x, log_loss, with_e, weights=weights[i])
        draws[i] = fit.theta
    samples = {p: np.full(len(weights), np.nan) for p in FORM_PARAMS[result.form]}
    for i in rows:
        for p, v in theta_to_params(draws[i], result.form, with_e).items():
            samples[p][i] = v
    return {p: v for p, v in samples.items() if p in result.fitted_names}, int((~fittable).sum())


def _isoflop_draws(result: FitResult, weights: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
    samples = {p: np.full(len(weights), np.nan) for p in FORM_PARAMS["isoflop"]}
    skipped = 0
    for i, w in enumerate(weights):
        params, _ = isoflop_core(result.n_params, result.tokens, result.train_flops, result.loss, w)
        if not np.isfinite(params["a"]):
            skipped += 1
            continue
        for p, v in params.items():
            samples[p][i] = v
    return samples, skipped
