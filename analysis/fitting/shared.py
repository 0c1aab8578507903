"""Several groups' laws fitted together with one irreducible loss E.

Settings that train on the same data (they differ in init, λ, ε or gating) share the loss no
model removes: E belongs to the data, not to the setting. Fitted per group, E and the exponent
trade off along a shallow ridge, so on a small grid two groups' exponents differ by as much as
their E's do and are not comparable. Here the groups of one comparison (one form, one slice)
are fitted jointly,

    L_g(N) = E + A_g·N^-α_g              (form "n"; "d" likewise with B_g, β_g)
    L_g(N, D) = E + A_g·N^-α_g + B_g·D^-β_g    (form "joint")

with one fitted E (``"shared"``) or E held at the data's known entropy rate (``"known"``; the
generated corpora know it exactly: it is the E of L(N, D) as N, D → ∞). For a one-variable law
at a fixed D (or N) the asymptote is E plus what that D leaves, shared when the settings leave
the same; the hold-out check (:mod:`analysis.fitting.holdout`) tells whether the assumption predicts.

:func:`bootstrap_shared` resamples runs of every group together (whole cells, or seeds within
cells: :func:`analysis.fitting.bootstrap.paired_weights`), so each exponent's interval, and that of
their difference, carries the uncertainty of the shared E.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.errors import warning
from analysis.fitting.batched import batched_refit
from analysis.fitting.bootstrap import MAX_SKIPPED, cell_ids, paired_weights, percentile_ci, skipped_note
from analysis.fitting.fit import (
    FORM_PARAMS,
    POWER_FORMS,
    FitResult,
    best_of,
    best_starts,
    bound_messages,
    design,
    is_data_message,
    n_distinct,
    predict,
)
from analysis.fitting.objective import (
    HUBER_DELTA,
    Layout,
    minimize_from,
    params_to_theta,
    single_threaded_blas,
    theta_to_params,
)
from analysis.labels import group_label

E_MODES = ("shared", "per-group", "known")
# Shares of the smallest loss tried as starting values of a shared E (besides each group's own E).
_E_START_FRACTIONS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
# The profile's fits at each E run for at most this many batch iterations; at the joint
# optimum's E the groups are refitted from this many starts each.
_PROFILE_ITERATIONS = 500
_REFINE_STARTS = 16


def can_share(fit: FitResult, known: bool) -> bool:
    """True when ``fit`` can join a joint fit: a full power-law fit, or with a known E any
    power-law fit at all (a known E needs only two distinct values per group)."""
    return fit.ok and fit.form in POWER_FORMS and (known or "E" not in fit.fixed)


def _stack(fits: Sequence[FitResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log_x, log_loss, group) of every group's points, one after the other."""
    form = fits[0].form
    log_x = np.concatenate([design(form, f.n_params, f.tokens) for f in fits])
    log_loss = np.concatenate([np.log(f.loss) for f in fits])
    group = np.concatenate([np.full(f.n_points, g, dtype=int) for g, f in enumerate(fits)])
    return log_x, log_loss, group


def _profile(
    log_es: Sequence[float],
    log_x: np.ndarray,
    log_loss: np.ndarray,
    group: np.ndarray,
    weights: np.ndarray,
    n_groups: int,
    n_starts: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Every group fitted alone with E held at each of ``log_es``: per E, the summed objective
    (C,) and the joint θ without e (C, p − 1). Given E the groups do not interact, so this is
    the joint optimum at that E.

    A group's fits at every E, from the ``n_starts`` best starts of each, are made together in
    one batch of at most :data:`_PROFILE_ITERATIONS` steps. With E held the E–A–α ridge is
    gone and nearly all of them settle well within it; the few that do not are only ranked
    here, since the joint fit that follows is finished by L-BFGS-B.
    """
    log_es = np.asarray(log_es, dtype=float)
    totals, thetas = np.zeros(len(log_es)), []
    for g in range(n_groups):
        mask = group == g
        x, y, w = log_x[mask], log_loss[mask], weights[mask]
        one = np.zeros(int(mask.sum()), dtype=int)
        starts = [best_starts(x, y, Layout(one, 1, e), n_starts) for e in log_es]
        per_e = len(starts[0])
        fixed = np.repeat(log_es, per_e)[:, None]
        batch = batched_refit(
            np.concatenate(starts),
            x,
            y,
            np.tile(w, (len(fixed), 1)),
            Layout(one, 1, fixed),
            max_iter=_PROFILE_ITERATIONS,
        )
        values = np.where(np.isfinite(batch.value), batch.value, np.inf).reshape(len(log_es), per_e)
        best = values.argmin(axis=1)
        totals += values[np.arange(len(log_es)), best] * w.sum()
        thetas.append(batch.theta.reshape(len(log_es), per_e, -1)[np.arange(len(log_es)), best])
    return totals / weights.sum(), np.concatenate(thetas, axis=1)


def fit_theta(
    log_x: np.ndarray,
    log_loss: np.ndarray,
    layout: Layout,
    weights: np.ndarray | None = None,
    own_e: Sequence[float] = (),
    delta: float = HUBER_DELTA,
):
    """The joint optimum for ``layout``: a profile over E picks the starts, L-BFGS-B finishes.

    With E known the profile is the answer (polished once); with E shared, starting values of
    E are each group's own E (``own_e``) and shares of the smallest loss; the three best are
    optimized jointly, then every group is refitted from more starts at the E found and the
    joint fit polished from there, kept when lower.
    """
    w = np.ones(len(log_loss)) if weights is None else np.asarray(weights, dtype=float)
    if not layout.with_e:
        _, theta = _profile([layout.log_e], log_x, log_loss, layout.group, w, layout.n_groups)
        return best_of(theta, log_x, log_loss, w, layout, delta)
    min_loss = float(np.exp(log_loss[w > 0].min()))
    candidates = {float(np.log(min_loss * f)) for f in _E_START_FRACTIONS}
    candidates |= {float(np.log(e)) for e in own_e if np.isfinite(e) and 0 < e < min_loss}
    log_es = np.array(sorted(candidates))
    values, thetas = _profile(log_es, log_x, log_loss, layout.group, w, layout.n_groups)
    best = np.argsort(values, kind="stable")[:3]
    raw = best_of(np.column_stack([log_es, thetas])[best], log_x, log_loss, w, layout, delta)
    # With many groups the joint optimum can keep one group in a poor mode of its own (its few
    # points leave several): measured on an eight-group grid, 0.9% above the best found.
    _, thetas = _profile([raw.theta[0]], log_x, log_loss, layout.group, w, layout.n_groups, _REFINE_STARTS)
    refined = best_of(np.column_stack([[raw.theta[0]], thetas]), log_x, log_loss, w, layout, delta)
    return refined if refined.value < raw.value else raw


def fit_shared(fits: Sequence[FitResult], *, e_known: float | None = None) -> tuple[FitResult, ...]:
    """The one-group fits ``fits`` (one form and slice, each :func:`can_share`) refitted jointly:
    one shared E, or E held at ``e_known``. Returns one result per group, in the same order."""
    form = fits[0].form
    log_x, log_loss, group = _stack(fits)
    layout = Layout(group, len(fits), None if e_known is None else float(np.log(e_known)))
    with single_threaded_blas():
        raw = fit_theta(log_x, log_loss, layout, own_e=[f.params.get("E", np.nan) for f in fits])
    mode = "shared" if e_known is None else "known"
    labels = [group_label(f.group) for f in fits]
    out = []
    for g, (fit, params) in enumerate(zip(fits, theta_to_params(raw.theta, form, layout))):
        params = {**{p: float("nan") for p in FORM_PARAMS[form]}, **params}
        messages = [m for m in fit.messages if is_data_message(m)] + bound_messages(
            params, form, e_fitted=e_known is None
        )
        if not raw.converged:
            messages.append(warning("the optimizer did not converge; treat the parameters as approximate"))
        residuals = np.log(fit.loss) - np.log(predict(form, params, fit.n_params, fit.tokens))
        out.append(
            dataclasses.replace(
                fit,
                params=params,
                messages=tuple(messages),
                residuals=residuals,
                objective=raw.value,
                fixed=("E",) if e_known is not None else (),
                e_mode=mode,
                ci={},
                samples={},
                n_bootstrap=0,
                extra={**fit.extra, "shared_with": [label for h, label in enumerate(labels) if h != g]},
            )
        )
    return tuple(out)


def bootstrap_shared(
    fits: Sequence[FitResult],
    n_resamples: int,
    *,
    seed: int = 0,
    ci_level: float = 0.95,
    seeds: Mapping[str, Any] | None = None,
) -> tuple[FitResult, ...]:
    """``fits`` (the output of :func:`fit_shared`) with CIs from resampling all groups together.

    ``seeds`` maps run ids to their training seed: with several seeds per cell the seeds are
    resampled within each cell, else whole cells are (every group's runs of a drawn cell come
    together). Draw i of every group comes from the same resample, so differences of their
    parameters are paired.
    """
    if n_resamples <= 0:
        return tuple(fits)
    form = fits[0].form
    known = fits[0].e_mode == "known"
    log_x, log_loss, group = _stack(fits)
    layout = Layout(group, len(fits), float(np.log(fits[0].params["E"])) if known else None)
    run_ids = [r for f in fits for r in f.run_ids]
    n_all = np.concatenate([f.n_params for f in fits])
    d_all = np.concatenate([f.tokens for f in fits])
    cells = cell_ids(n_all, d_all)
    seed_values = None if seeds is None else np.array([seeds.get(r) for r in run_ids], dtype=object)
    weights, unit = paired_weights(cells, seed_values, n_resamples, np.random.default_rng(seed))
    fittable = np.array([_identifiable(form, n_all, d_all, group, w > 0, len(fits), known) for w in weights])
    start = params_to_theta([f.params for f in fits], form, layout)
    draws = np.full((n_resamples, start.size), np.nan)
    rows = np.flatnonzero(fittable)
    with single_threaded_blas():
        if rows.size:
            draws[rows], converged, _ = batched_refit(start, log_x, log_loss, weights[rows], layout)
            for i in rows[~converged]:  # one by one: L-BFGS-B from where the batch stopped, then the profile
                raw = minimize_from(draws[i], log_x, log_loss, weights[i], layout)
                if not raw.converged:
                    raw = fit_theta(log_x, log_loss, layout, weights[i])
                draws[i] = raw.theta
    skipped = int((~fittable).sum())
    note = skipped_note(skipped, n_resamples)
    if skipped > MAX_SKIPPED * n_resamples:
        return tuple(dataclasses.replace(f, messages=f.messages + (note,)) for f in fits)
    per_draw = [theta_to_params(draws[i], form, layout) if fittable[i] else None for i in range(n_resamples)]
    out = []
    for g, fit in enumerate(fits):
        names = fit.fitted_names
        samples = {p: np.array([d[g][p] if d else np.nan for d in per_draw]) for p in names}
        messages = list(fit.messages) + ([note] if note else [])
        out.append(
            dataclasses.replace(
                fit,
                ci={p: percentile_ci(samples[p], ci_level) for p in names},
                ci_level=ci_level,
                n_bootstrap=n_resamples,
                samples=samples,
                messages=tuple(messages),
                extra={**fit.extra, "resampled": unit},
            )
        )
    return tuple(out)


def _identifiable(
    form: str,
    n_all: np.ndarray,
    d_all: np.ndarray,
    group: np.ndarray,
    drawn: np.ndarray,
    n_groups: int,
    known: bool,
) -> bool:
    """Whether a resample still determines every group's law (E shared: three distinct values
    per group; E known: two)."""
    need = 2 if known else 3
    for g in range(n_groups):
        mask = drawn & (group == g)
        if form == "n" and n_distinct(n_all[mask]) < need:
            return False
        if form == "d" and n_distinct(d_all[mask]) < need:
            return False
        if form == "joint" and (
            n_distinct(n_all[mask]) < 3 or n_distinct(d_all[mask]) < 3 or int(mask.sum()) < 5
        ):
            return False
    return True
