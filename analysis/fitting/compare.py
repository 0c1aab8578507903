"""Which setting's scaling curve descends faster, with error bars.

For every pair of groups fitted with the same form on the same slice, and every exponent of
that form: both exponents with their CIs, the difference with a CI from the paired bootstrap
draws (each group resampled independently; draw i of one minus draw i of the other), a
verdict only when that CI excludes 0, the effective-compute multiplier and the crossovers.

"Descends faster" means the larger exponent: α for N, β for D. For iso-FLOP fits the
exponents a and b describe how the compute-optimal N and D grow with compute, so their
comparison says which grows faster, not which descends faster.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq

from analysis.fitting.bootstrap import percentile_ci
from analysis.fitting.fit import EXPONENT_AXIS, FitResult
from analysis.labels import (
    AXIS_NOUNS,
    FORM_TITLES,
    PARAM_SYMBOLS,
    format_axis_value,
    format_ci,
    format_number,
    group_label,
    slice_label,
)

EXPONENTS = {"n": ("alpha",), "d": ("beta",), "joint": ("alpha", "beta"), "isoflop": ("a", "b")}


@dataclass(frozen=True)
class Multiplier:
    """How many times more of ``axis`` the slower setting needs to reach the faster one's loss.

    Measured at ``at``: the faster setting's largest measured value of ``axis`` (for FLOPs, on
    both settings' compute-optimal frontier). ``value`` is inf when the slower setting never
    reaches that loss (its E is higher), None when it cannot be computed; a value below 1 means
    the slower-descending setting is still ahead at that scale. ``ci`` comes from the draws.
    """

    axis: str
    at: float
    target_loss: float
    value: float | None
    ci: tuple[float, float] | None
    message: str
    fixed: dict[str, float]


@dataclass(frozen=True)
class Crossover:
    """A point where the two fitted curves cross along ``axis`` (other variables at ``fixed``)."""

    axis: str
    at: float
    loss: float
    within_range: bool
    fixed: dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """One exponent of one form on one slice, compared between two groups.

    ``first`` has the larger point estimate. ``difference`` = first − second with ``difference_ci``
    from the paired bootstrap draws. ``faster`` is the group whose exponent is significantly
    larger (None when the CI includes 0 or there is no bootstrap). ``verdict`` is one sentence.
    """

    form: str
    slice: dict[str, float]
    exponent: str
    axis: str
    first: dict[str, Any]
    second: dict[str, Any]
    first_value: float
    second_value: float
    first_ci: tuple[float, float] | None
    second_ci: tuple[float, float] | None
    difference: float
    difference_ci: tuple[float, float] | None
    excludes_zero: bool
    faster: dict[str, Any] | None
    multipliers: tuple[Multiplier, ...]
    crossovers: tuple[Crossover, ...]
    verdict: str
    ci_level: float = 0.95


def compare_fits(fits: Sequence[FitResult], ci_level: float = 0.95) -> tuple[Comparison, ...]:
    """Every pairwise comparison of groups that share a form and a slice."""
    out: list[Comparison] = []
    keyed: dict[tuple, list[FitResult]] = {}
    for fit in fits:
        if fit.ok:
            keyed.setdefault((fit.form, tuple(sorted(fit.slice.items()))), []).append(fit)
    for (form, _), members in keyed.items():
        for exponent in EXPONENTS[form]:
            usable = [f for f in members if exponent in f.fitted_names]
            for one, two in itertools.combinations(usable, 2):
                out.append(compare_pair(one, two, exponent, ci_level))
    return tuple(out)


def compare_pair(one: FitResult, two: FitResult, exponent: str, ci_level: float = 0.95) -> Comparison:
    """Compare ``exponent`` between two fits of the same form and slice."""
    if one.params[exponent] < two.params[exponent]:
        one, two = two, one
    difference = one.params[exponent] - two.params[exponent]
    draws = _paired(one.samples.get(exponent), two.samples.get(exponent))
    diff_ci = percentile_ci(draws[0] - draws[1], ci_level) if draws is not None else None
    if diff_ci is not None and not all(math.isfinite(v) for v in diff_ci):
        diff_ci = None
    excludes = diff_ci is not None and (diff_ci[0] > 0 or diff_ci[1] < 0)
    faster = None
    if excludes:
        faster = one.group if diff_ci[0] > 0 else two.group
    axis = EXPONENT_AXIS[exponent]
    multipliers: tuple[Multiplier, ...] = ()
    crossovers: tuple[Crossover, ...] = ()
    if one.form != "isoflop":
        better, worse = (one, two) if faster is None or faster == one.group else (two, one)
        multipliers = tuple(
            m
            for m in (
                _multiplier(better, worse, axis, ci_level),
                _flops_multiplier(better, worse, ci_level) if one.form == "joint" and axis == "N" else None,
            )
            if m
        )
        crossovers = tuple(_crossovers(one, two, axis))
    comparison = Comparison(
        form=one.form,
        slice=dict(one.slice),
        exponent=exponent,
        axis=axis,
        first=dict(one.group),
        second=dict(two.group),
        first_value=one.params[exponent],
        second_value=two.params[exponent],
        first_ci=one.ci.get(exponent),
        second_ci=two.ci.get(exponent),
        difference=difference,
        difference_ci=diff_ci,
        excludes_zero=excludes,
        faster=faster,
        multipliers=multipliers,
        crossovers=crossovers,
        verdict="",
        ci_level=ci_level,
    )
    return _with_verdict(comparison)


def _paired(a: np.ndarray | None, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    if a is None or b is None:
        return None
    m = min(len(a), len(b))
    a, b = np.asarray(a[:m], float), np.asarray(b[:m], float)
    good = np.isfinite(a) & np.isfinite(b)
    return (a[good], b[good]) if good.sum() >= 2 else None


# ----------------------------------------------------------------------------------------
# Effective-compute multiplier


def _param_arrays(fit: FitResult, draws: bool) -> dict[str, np.ndarray]:
    """Parameters as arrays: the point estimate (length 1) or the bootstrap draws."""
    names = ("E", "A", "alpha", "B", "beta")
    if draws and fit.samples:
        k = len(next(iter(fit.samples.values())))
        return {
            p: np.asarray(fit.samples.get(p, np.full(k, fit.params.get(p, np.nan))), float) for p in names
        }
    return {p: np.array([fit.params.get(p, np.nan)], float) for p in names}


def _term(coef: np.ndarray, x: float, expo: np.ndarray) -> np.ndarray:
    return np.where(
        np.isfinite(coef) & np.isfinite(expo), np.nan_to_num(coef) * np.power(x, -np.nan_to_num(expo)), 0.0
    )


def _loss_at(p: Mapping[str, np.ndarray], form: str, n: float, d: float) -> np.ndarray:
    e = np.nan_to_num(p["E"])
    if form == "n":
        return e + _term(p["A"], n, p["alpha"])
    if form == "d":
        return e + _term(p["B"], d, p["beta"])
    return e + _term(p["A"], n, p["alpha"]) + _term(p["B"], d, p["beta"])


def _solve_axis(
    p: Mapping[str, np.ndarray], form: str, axis: str, target: np.ndarray, n_ref: float, d_ref: float
) -> np.ndarray:
    """The value of ``axis`` at which curve ``p`` reaches ``target`` (inf when it never does)."""
    coef, expo = (p["A"], p["alpha"]) if axis == "N" else (p["B"], p["beta"])
    rest = target - np.nan_to_num(p["E"])
    if form == "joint":
        rest = rest - (_term(p["B"], d_ref, p["beta"]) if axis == "N" else _term(p["A"], n_ref, p["alpha"]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = np.power(coef / rest, 1.0 / expo)
    return np.where(rest > 0, value, np.inf)


def _multiplier(better: FitResult, worse: FitResult, axis: str, ci_level: float) -> Multiplier | None:
    xs = better.n_params if axis == "N" else better.tokens
    if xs.size == 0:
        return None
    at = float(np.nanmax(xs))
    n_ref = float(np.nanmax(better.n_params)) if better.n_params.size else np.nan
    d_ref = float(np.nanmax(better.tokens)) if better.tokens.size else np.nan
    fixed = (
        {"D": d_ref}
        if (better.form == "joint" and axis == "N")
        else {"N": n_ref}
        if better.form == "joint"
        else {}
    )
    n_at, d_at = (at, d_ref) if axis == "N" else (n_ref, at)

    def solve(draws: bool) -> np.ndarray:
        pb, pw = _param_arrays(better, draws), _param_arrays(worse, draws)
        m = min(len(pb["E"]), len(pw["E"]))
        pb = {k: v[:m] for k, v in pb.items()}
        pw = {k: v[:m] for k, v in pw.items()}
        target = _loss_at(pb, better.form, n_at, d_at)
        return _solve_axis(pw, worse.form, axis, target, n_ref, d_ref) / at

    target = float(_loss_at(_param_arrays(better, False), better.form, n_at, d_at)[0])
    value = float(solve(False)[0])
    ci = None
    if better.samples and worse.samples:
        draws = solve(True)
        ci = percentile_ci(np.where(np.isnan(draws), np.nan, draws), ci_level)
        if any(math.isnan(v) for v in ci):
            ci = None
    return Multiplier(
        axis,
        at,
        target,
        value if math.isfinite(value) else (math.inf if value == math.inf else None),
        ci,
        _multiplier_message(better, worse, axis, at, value, fixed),
        fixed,
    )


def _multiplier_message(
    better: FitResult, worse: FitResult, axis: str, at: float, value: float, fixed: Mapping[str, float]
) -> str:
    where = f"{axis}={format_axis_value(axis, at)}" + ("" if not fixed else " (" + slice_label(fixed) + ")")
    b, w = group_label(better.group), group_label(worse.group)
    noun = AXIS_NOUNS[axis]
    if value == math.inf:
        return f"{w} never reaches {b}'s loss at {where}: its irreducible loss is higher."
    if value is None or not math.isfinite(value):
        return f"the {noun} {w} needs to match {b} at {where} cannot be computed."
    if value >= 1:
        return f"To match {b}'s loss at {where}, {w} needs {value:.3g}× more {noun}."
    return f"At {where}, {w} still has the lower loss: it reaches {b}'s loss with {value:.3g}× the {noun}."


def _flops_per_param_token(fit: FitResult) -> float:
    ratio = fit.train_flops / (fit.n_params * fit.tokens)
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return float(np.median(ratio)) if ratio.size else 6.0


def _frontier_excess(p: Mapping[str, np.ndarray], flops: float, k: float) -> tuple[np.ndarray, np.ndarray]:
    """(L*(C) − E, the exponent of C) on the compute-optimal frontier of the joint law.

    With D = C/(kN), L(N) = E + A·N^-α + B·(C/kN)^-β is smallest at
    N* = (αA/βB)^(1/(α+β))·(C/k)^(β/(α+β)), and L*(C) − E falls as C^(−αβ/(α+β)).
    """
    a, alpha, b, beta = p["A"], p["alpha"], p["B"], p["beta"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n_opt = np.power(alpha * a / (beta * b), 1.0 / (alpha + beta)) * np.power(
            flops / k, beta / (alpha + beta)
        )
        d_opt = flops / (k * n_opt)
        excess = a * np.power(n_opt, -alpha) + b * np.power(d_opt, -beta)
        slope = alpha * beta / (alpha + beta)
    return excess, slope


def _flops_multiplier(better: FitResult, worse: FitResult, ci_level: float) -> Multiplier | None:
    if better.train_flops.size == 0 or not np.isfinite(better.train_flops).any():
        return None
    at = float(np.nanmax(better.train_flops))
    kb, kw = _flops_per_param_token(better), _flops_per_param_token(worse)

    def solve(draws: bool) -> tuple[np.ndarray, np.ndarray]:
        pb, pw = _param_arrays(better, draws), _param_arrays(worse, draws)
        m = min(len(pb["E"]), len(pw["E"]))
        pb = {k: v[:m] for k, v in pb.items()}
        pw = {k: v[:m] for k, v in pw.items()}
        excess_b, _ = _frontier_excess(pb, at, kb)
        target = pb["E"] + excess_b
        excess_w, slope_w = _frontier_excess(pw, at, kw)
        rest = target - pw["E"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # L*_w(C) − E_w = excess_w·(C/at)^(−slope_w) = rest  →  C/at = (excess_w/rest)^(1/slope_w)
            ratio = np.power(excess_w / rest, 1.0 / slope_w)
        return np.where(rest > 0, ratio, np.inf), target

    values, target = solve(False)
    value = float(values[0])
    ci = None
    if better.samples and worse.samples:
        ci = percentile_ci(solve(True)[0], ci_level)
        if any(math.isnan(v) for v in ci):
            ci = None
    message = _multiplier_message(better, worse, "FLOPs", at, value, {}).replace(
        f"at FLOPs={format_axis_value('FLOPs', at)}", f"at C={at:.2e} FLOPs on the compute-optimal frontier"
    )
    return Multiplier(
        "FLOPs",
        at,
        float(target[0]),
        value if math.isfinite(value) else (math.inf if value == math.inf else None),
        ci,
        message,
        {},
    )


# ----------------------------------------------------------------------------------------
# Crossovers


def _crossovers(one: FitResult, two: FitResult, axis: str) -> list[Crossover]:
    xs = np.concatenate([one.n_params, two.n_params] if axis == "N" else [one.tokens, two.tokens])
    xs = xs[np.isfinite(xs) & (xs > 0)]
    if xs.size == 0:
        return []
    lo, hi = float(xs.min()), float(xs.max())
    fixed: dict[str, float] = {}
    n_ref = d_ref = float("nan")
    if one.form == "joint":
        if axis == "N":
            d_ref = float(np.nanmax(np.concatenate([one.tokens, two.tokens])))
            fixed = {"D": d_ref}
        else:
            n_ref = float(np.nanmax(np.concatenate([one.n_params, two.n_params])))
            fixed = {"N": n_ref}
    p1, p2 = _param_arrays(one, False), _param_arrays(two, False)

    def gap(log_x: float) -> float:
        x = math.exp(log_x)
        n, d = (x, d_ref) if axis == "N" else (n_ref, x)
        return float(_loss_at(p1, one.form, n, d)[0] - _loss_at(p2, two.form, n, d)[0])

    # Search a wide window around the data: crossings far outside are reported as such.
    grid = np.linspace(math.log(lo) - math.log(100.0), math.log(hi) + math.log(1000.0), 400)
    values = np.array([gap(x) for x in grid])
    out = []
    for i in np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0):
        root = brentq(gap, grid[i], grid[i + 1], xtol=1e-10)
        at = math.exp(root)
        n, d = (at, d_ref) if axis == "N" else (n_ref, at)
        out.append(Crossover(axis, at, float(_loss_at(p1, one.form, n, d)[0]), lo <= at <= hi, fixed))
    return out


# ----------------------------------------------------------------------------------------
# Verdict


def _exp_text(value: float, ci: tuple[float, float] | None) -> str:
    text = format_number(value)
    return f"{text} {format_ci(ci)}" if ci else text


def _with_verdict(c: Comparison) -> Comparison:
    sym = PARAM_SYMBOLS[c.exponent]
    first, second = group_label(c.first), group_label(c.second)
    where = FORM_TITLES[c.form].split(" = ")[0] if c.form != "isoflop" else "IsoFLOP"
    if c.slice:
        where += f" at {slice_label(c.slice)}"
    pair = f"{sym} = {_exp_text(c.first_value, c.first_ci)} for {first} vs {_exp_text(c.second_value, c.second_ci)} for {second}"
    if c.difference_ci is None:
        text = (
            f"{first} has the larger {sym} in {where} ({format_number(c.first_value)} vs {format_number(c.second_value)} for {second}), "
            "but there are no bootstrap error bars (too few distinct runs per fit, or no bootstrap), so no verdict."
        )
    elif not c.excludes_zero:
        text = (
            f"No significant difference in {sym} ({where}): {pair}; difference "
            f"{format_number(c.difference)} {format_ci(c.difference_ci)} includes 0."
        )
    else:
        faster, slower = (first, second) if c.faster == c.first else (second, first)
        if c.form == "isoflop":
            grows = "N*(C)" if c.exponent == "a" else "D*(C)"
            head = f"{faster}'s compute-optimal {grows} grows faster with compute"
        else:
            head = f"{faster} descends faster in {c.axis} ({where})"
        text = f"{head}: {pair}; difference {format_number(c.difference)} {format_ci(c.difference_ci)} excludes 0."
        for m in c.multipliers:
            text += " " + m.message
            if (
                m.ci
                and m.value is not None
                and math.isfinite(m.value)
                and all(math.isfinite(v) for v in m.ci)
            ):
                text = text[:-1] + f" ({c.ci_level:.0%} CI {format_ci(m.ci)}×)."
    return dataclasses.replace(c, verdict=text)


def headline(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons a summary leads with: per exponent, the joint fit when there is one, else
    the one-variable fit on the largest slice; iso-FLOP comparisons last."""
    out: list[Comparison] = []
    for exponent, single in (("alpha", "n"), ("beta", "d")):
        joint = [c for c in comparisons if c.form == "joint" and c.exponent == exponent]
        if joint:
            out += joint
            continue
        one_var = [c for c in comparisons if c.form == single and c.exponent == exponent]
        if one_var:
            largest = max(next(iter(c.slice.values()), 0.0) for c in one_var)
            out += [c for c in one_var if next(iter(c.slice.values()), 0.0) == largest]
    out += [c for c in comparisons if c.form == "isoflop" and c.exponent == "a"]
    return out
