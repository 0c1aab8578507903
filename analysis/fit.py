"""Power-law scaling fits: pure model functions, the robust objective, and a typed result.

Method (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3,
and its replication by Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"):
the model is written in log space with the log-sum-exp parameterization

    log L̂ = LSE(a − α·log N, b − β·log D, e),   E = exp(e), A = exp(a), B = exp(b)

and fitted by minimizing the Huber loss (δ = 1e-3) of log L̂ − log L over the runs with
L-BFGS-B, started from a grid of points; the best optimum is kept, then polished by a damped
Gauss–Newton step (:mod:`analysis.batched`), which only ever lowers the objective. The
gradient is analytic.

Forms:

- ``"n"``:     L(N)    = E + A·N^-α
- ``"d"``:     L(D)    = E + B·D^-β
- ``"joint"``: L(N, D) = E + A·N^-α + B·D^-β

N is the number of parameters (``n_params``), D the number of training tokens (``tokens``).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from analysis.batched import batched_refit

HUBER_DELTA = 1e-3
POWER_FORMS = ("n", "d", "joint")
ALL_FORMS = ("n", "d", "joint", "isoflop")

# Names of the fitted parameters of each form, in the order of the optimizer's vector
# (before the log transform of E, A, B).
FORM_PARAMS: dict[str, tuple[str, ...]] = {
    "n": ("E", "A", "alpha"),
    "d": ("E", "B", "beta"),
    "joint": ("E", "A", "alpha", "B", "beta"),
    "isoflop": ("a", "b", "N_coef", "D_coef"),
}
# Which axis each exponent belongs to.
EXPONENT_AXIS = {"alpha": "N", "beta": "D", "a": "FLOPs", "b": "FLOPs"}

# Starting grid of Hoffmann et al. (2022), appendix D.2: e, a, b and the exponents.
_GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)
_GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
_GRID_COEF = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
# Box for L-BFGS-B: exponents stay non-negative (a negative one is growth, not descent) and
# below a value no language-model scaling law comes near; log-coefficients are kept finite.
_BOUND_EXPONENT = (0.0, 5.0)
_BOUND_LOGCOEF = (-30.0, 100.0)
_LBFGS_OPTIONS = {"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-10, "maxls": 50}


# ----------------------------------------------------------------------------------------
# Model functions


def loss_n(n_params: Any, E: float, A: float, alpha: float) -> np.ndarray:
    """L(N) = E + A·N^-α, the loss as a function of the number of parameters N."""
    return E + A * np.power(np.asarray(n_params, dtype=float), -alpha)


def loss_d(tokens: Any, E: float, B: float, beta: float) -> np.ndarray:
    """L(D) = E + B·D^-β, the loss as a function of the number of training tokens D."""
    return E + B * np.power(np.asarray(tokens, dtype=float), -beta)


def loss_nd(n_params: Any, tokens: Any, E: float, A: float, alpha: float, B: float, beta: float) -> np.ndarray:
    """L(N, D) = E + A·N^-α + B·D^-β, the joint law of parameters N and training tokens D."""
    n = np.asarray(n_params, dtype=float)
    d = np.asarray(tokens, dtype=float)
    return E + A * np.power(n, -alpha) + B * np.power(d, -beta)


def predict(form: str, params: Mapping[str, float], n_params: Any = None, tokens: Any = None) -> np.ndarray:
    """The fitted loss of a power-law ``form`` at ``n_params`` and/or ``tokens``.

    Parameters missing from ``params`` (or NaN) count as absent terms, so a partial fit with
    E fixed at 0 predicts a pure power law.
    """

    def get(name: str) -> float:
        value = params.get(name, np.nan)
        return 0.0 if value is None or not np.isfinite(value) else float(value)

    if form == "n":
        return loss_n(n_params, get("E"), get("A"), get("alpha"))
    if form == "d":
        return loss_d(tokens, get("E"), get("B"), get("beta"))
    if form == "joint":
        return loss_nd(n_params, tokens, get("E"), get("A"), get("alpha"), get("B"), get("beta"))
    raise ValueError(f"predict: form must be one of {POWER_FORMS}, got {form!r}")


# ----------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class FitResult:
    """One fitted scaling law for one group of runs (and one slice of the grid).

    ``params`` holds every parameter of the form (``E, A, alpha, B, beta`` for power laws;
    ``a, b, N_coef, D_coef`` for ``isoflop``); parameters the form does not have are NaN.
    ``ci`` maps each fitted parameter to its percentile interval at ``ci_level`` when a
    bootstrap ran (``n_bootstrap > 0``), and ``samples`` holds the bootstrap draws.
    ``residuals`` are log(observed loss) − log(fitted loss), one per point. ``ok`` is False
    when nothing could be fitted; ``messages`` explain any dropped point, fallback or doubt.
    """

    form: str
    group: dict[str, Any]
    slice: dict[str, float]
    params: dict[str, float]
    ok: bool
    messages: tuple[str, ...]
    n_points: int
    run_ids: tuple[str, ...] = ()
    n_params: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    tokens: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    train_flops: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    loss: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    residuals: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    objective: float = float("nan")
    fixed: tuple[str, ...] = ()
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_level: float = 0.95
    n_bootstrap: int = 0
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def fitted_names(self) -> tuple[str, ...]:
        """Parameters this fit estimated (excludes those absent from the form or held fixed)."""
        return tuple(p for p in FORM_PARAMS[self.form] if p not in self.fixed and np.isfinite(self.params.get(p, np.nan)))

    def predict(self, n_params: Any = None, tokens: Any = None) -> np.ndarray:
        """The fitted loss at ``n_params`` and/or ``tokens`` (power-law forms only)."""
        return predict(self.form, self.params, n_params, tokens)

    def predict_samples(self, n_params: Any = None, tokens: Any = None) -> np.ndarray:
        """The loss under every bootstrap draw: shape (n_bootstrap, len(x)); empty without one."""
        if not self.samples:
            return np.empty((0, np.size(n_params if n_params is not None else tokens)))
        k = len(next(iter(self.samples.values())))
        draws = {p: self.samples.get(p, np.full(k, self.params.get(p, np.nan))) for p in FORM_PARAMS[self.form]}
        n = None if n_params is None else np.asarray(n_params, dtype=float)[None, :]
        d = None if tokens is None else np.asarray(tokens, dtype=float)[None, :]
        col = {p: np.nan_to_num(np.asarray(v, dtype=float), nan=0.0)[:, None] for p, v in draws.items()}
        if self.form == "n":
            out = col["E"] + col["A"] * np.power(n, -col["alpha"])
        elif self.form == "d":
            out = col["E"] + col["B"] * np.power(d, -col["beta"])
        else:
            out = col["E"] + col["A"] * np.power(n, -col["alpha"]) + col["B"] * np.power(d, -col["beta"])
        good = np.all(np.isfinite([draws[p] for p in self.fitted_names]), axis=0)
        return out[good]

    def band(self, n_params: Any = None, tokens: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise percentile band of the fitted loss at ``ci_level``, or None without a bootstrap."""
        draws = self.predict_samples(n_params, tokens)
        if draws.shape[0] < 2:
            return None
        tail = 100 * (1 - self.ci_level) / 2
        lo, hi = np.percentile(draws, [tail, 100 - tail], axis=0)
        return lo, hi


# ----------------------------------------------------------------------------------------
# Objective


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while fitting.

    L-BFGS-B calls BLAS on tiny matrices thousands of times; a multi-threaded BLAS then spends
    far longer waking threads than computing, and stalls badly on a busy machine (measured:
    3 ms vs up to 300 ms per fit on 2 loaded cores).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it fits are the same, only slower on a busy machine
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def huber_lse_objective(
    theta: np.ndarray,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    with_e: bool,
    delta: float = HUBER_DELTA,
) -> tuple[float, np.ndarray]:
    """Weighted mean Huber loss of log-space residuals, divided by δ, and its gradient.

    ``theta`` is ``[e, a_1, α_1, …, a_k, α_k]`` (without ``e`` when ``with_e`` is False);
    ``log_x`` is (n, k): the log of each power-law variable; the model is
    ``log L̂ = LSE(e, a_1 − α_1·log x_1, …)``. Dividing by δ rescales the objective to the size
    of a residual, so L-BFGS-B's tolerances mean the same thing for any δ; the minimizer is
    unchanged. ``weights`` are bootstrap multiplicities (ones for a plain fit).
    """
    offset = 1 if with_e else 0
    coef = theta[offset::2]
    expo = theta[offset + 1 :: 2]
    power_terms = coef - log_x * expo  # (n, k)
    if with_e:
        terms = np.empty((log_x.shape[0], log_x.shape[1] + 1))
        terms[:, 0] = theta[0]
        terms[:, 1:] = power_terms
    else:
        terms = power_terms
    top = terms.max(axis=1, keepdims=True)
    expd = np.exp(terms - top)
    total = expd.sum(axis=1)
    resid = top[:, 0] + np.log(total) - log_loss
    abs_r = np.abs(resid)
    loss = np.where(abs_r <= delta, 0.5 * resid * resid / delta, abs_r - 0.5 * delta)
    w_sum = weights.sum()
    value = float((weights * loss).sum()) / w_sum
    dr = np.clip(resid / delta, -1.0, 1.0) * weights / w_sum  # d value / d resid_i
    soft = expd / total[:, None]  # d resid_i / d term_j
    # Column sums of elementwise products rather than ``dr @ soft``: a BLAS call on arrays
    # this small costs more in thread wake-ups than it computes, and stalls on a busy machine.
    weighted = soft * dr[:, None]
    d_terms = weighted.sum(axis=0)
    grad = np.empty_like(theta)
    if with_e:
        grad[0] = d_terms[0]
    grad[offset::2] = d_terms[offset:]
    grad[offset + 1 :: 2] = -(weighted[:, offset:] * log_x).sum(axis=0)
    return value, grad


def _bounds(k: int, with_e: bool) -> list[tuple[float, float]]:
    return ([_BOUND_LOGCOEF] if with_e else []) + [_BOUND_LOGCOEF, _BOUND_EXPONENT] * k


def start_grid(log_x: np.ndarray, log_loss: np.ndarray, with_e: bool) -> np.ndarray:
    """Starting points: Hoffmann et al.'s grid, plus starts scaled to the data.

    The published grid assumes losses of order 1–5 nats and N, D of order 1e7–1e12; the extra
    points put E just below the smallest loss and each power term at the size of the loss
    range at the middle of the data, so grids of tiny models on a CPU start near the optimum too.
    """
    k = log_x.shape[1]
    min_loss = float(np.exp(log_loss.min()))
    spread = max(float(np.exp(log_loss.max()) - min_loss), 1e-3 * min_loss)
    e_values = sorted(set(_GRID_E) | {float(np.log(min_loss * f)) for f in (0.5, 0.8, 0.95)}) if with_e else [None]
    exponents = _GRID_EXPONENT
    points = []
    for e in e_values:
        per_term = []
        for j in range(k):
            mid = float(np.mean(log_x[:, j]))
            options = [(c, x) for c in _GRID_COEF for x in exponents]
            options += [(np.log(spread) + x * mid, x) for x in exponents if x > 0]
            per_term.append(options)
        for combo in itertools.product(*per_term):
            flat = [v for pair in combo for v in pair]
            points.append(([e] if with_e else []) + flat)
    grid = np.asarray(points, dtype=float)
    lows, highs = np.asarray(_bounds(k, with_e)).T
    return np.clip(grid, lows, highs)


def _grid_values(grid: np.ndarray, log_x: np.ndarray, log_loss: np.ndarray, with_e: bool, delta: float) -> np.ndarray:
    """The objective at every starting point (no gradient), in chunks: used to rank the grid."""
    offset = 1 if with_e else 0
    k = log_x.shape[1]
    out = np.empty(len(grid))
    chunk = 512  # keeps the (chunk, n) temporaries in cache
    for lo in range(0, len(grid), chunk):
        g = grid[lo : lo + chunk]
        lse = None
        for j in range(k):
            term = g[:, offset + 2 * j, None] - g[:, offset + 2 * j + 1, None] * log_x[None, :, j]
            lse = term if lse is None else np.logaddexp(lse, term)
        if with_e:
            lse = np.logaddexp(lse, g[:, 0, None])
        abs_r = np.abs(lse - log_loss[None, :])
        out[lo : lo + chunk] = np.where(abs_r <= delta, 0.5 * abs_r * abs_r / delta, abs_r - 0.5 * delta).mean(axis=1)
    return out


@dataclass(frozen=True)
class RawFit:
    """An optimum in the optimizer's coordinates: ``theta`` (log-coefficients, exponents)."""

    theta: np.ndarray
    value: float
    converged: bool


def minimize_from(
    start: np.ndarray,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    with_e: bool,
    delta: float = HUBER_DELTA,
) -> RawFit:
    """One L-BFGS-B run from ``start``, with the analytic gradient."""
    res = minimize(
        huber_lse_objective,
        np.asarray(start, dtype=float),
        args=(log_x, log_loss, weights, with_e, delta),
        jac=True,
        method="L-BFGS-B",
        bounds=_bounds(log_x.shape[1], with_e),
        options=_LBFGS_OPTIONS,
    )
    theta = np.asarray(res.x, dtype=float)
    value = float(res.fun)
    # A line-search stop at the noise floor of the objective is a converged optimum here;
    # only running out of iterations or leaving finite values is a failure.
    converged = bool(np.all(np.isfinite(theta)) and np.isfinite(value) and res.nit < _LBFGS_OPTIONS["maxiter"])
    return RawFit(theta=theta, value=value, converged=converged)


def multistart(
    log_x: np.ndarray,
    log_loss: np.ndarray,
    with_e: bool,
    weights: np.ndarray | None = None,
    n_starts: int = 16,
    exhaustive: bool = False,
    delta: float = HUBER_DELTA,
) -> RawFit:
    """L-BFGS-B from the best ``n_starts`` points of :func:`start_grid`; the best optimum wins.

    The whole grid is scored in one vectorized pass and only the most promising starts are
    optimized; ``exhaustive=True`` optimizes from every grid point, as in the published protocol.
    """
    w = np.ones(len(log_loss)) if weights is None else np.asarray(weights, dtype=float)
    grid = start_grid(log_x, log_loss, with_e)
    if not exhaustive and len(grid) > n_starts:
        scores = _grid_values(grid, log_x, log_loss, with_e, delta)
        order = np.argsort(scores, kind="stable")
        _, first = np.unique(np.round(scores[order], 12), return_index=True)
        # Prefer starts with distinct scores (many grid points are equivalent when an exponent is 0).
        picked = order[np.sort(first)][:n_starts]
        if len(picked) < n_starts:
            picked = np.concatenate([picked, order[~np.isin(order, picked)][: n_starts - len(picked)]])
        grid = grid[picked]
    best: RawFit | None = None
    with single_threaded_blas():
        for start in grid:
            fit = minimize_from(start, log_x, log_loss, w, with_e, delta)
            if np.isfinite(fit.value) and (best is None or fit.value < best.value):
                best = fit
        assert best is not None  # the grid is never empty and the objective is finite on it
        # L-BFGS-B can stop early along the shallow E–A–α ridge; a damped Gauss–Newton polish
        # from its optimum only ever lowers the objective further.
        theta, converged = batched_refit(best.theta, log_x, log_loss, w[None, :], with_e, _bounds(log_x.shape[1], with_e), delta)
        value = huber_lse_objective(theta[0], log_x, log_loss, w, with_e, delta)[0]
        if converged[0] and value <= best.value:
            best = RawFit(theta=theta[0], value=value, converged=True)
    return best


# ----------------------------------------------------------------------------------------
# Public fitter


def theta_to_params(theta: np.ndarray, form: str, with_e: bool) -> dict[str, float]:
    """Natural parameters (E, A, alpha, B, beta) from the optimizer's vector."""
    params = {p: float("nan") for p in FORM_PARAMS[form]}
    params["E"] = float(np.exp(theta[0])) if with_e else 0.0
    offset = 1 if with_e else 0
    names = {"n": [("A", "alpha")], "d": [("B", "beta")], "joint": [("A", "alpha"), ("B", "beta")]}[form]
    for j, (coef, expo) in enumerate(names):
        params[coef] = float(np.exp(theta[offset + 2 * j]))
        params[expo] = float(theta[offset + 2 * j + 1])
    return params


def params_to_theta(params: Mapping[str, float], form: str, with_e: bool) -> np.ndarray:
    """The optimizer's vector from natural parameters (inverse of :func:`theta_to_params`)."""
    names = {"n": [("A", "alpha")], "d": [("B", "beta")], "joint": [("A", "alpha"), ("B", "beta")]}[form]
    theta = [float(np.log(params["E"]))] if with_e else []
    for coef, expo in names:
        theta += [float(np.log(params[coef])), float(params[expo])]
    return np.asarray(theta)


def design(form: str, n_params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The (n, k) matrix of log power-law variables for ``form``."""
    if form == "n":
        return np.log(n_params)[:, None]
    if form == "d":
        return np.log(tokens)[:, None]
    return np.column_stack([np.log(n_params), np.log(tokens)])


def n_distinct(values: np.ndarray) -> int:
    """Number of distinct positive values, treating values within 0.1% as equal."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return 0
    return int(np.unique(np.round(np.log(values) / 1e-3)).size)


_AXIS_NAME = {"n": "N", "d": "D"}
_SYMBOL = {"alpha": "α", "beta": "β", "E": "E", "A": "A", "B": "B"}


def clean_points(
    n_params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, run_ids: Sequence[str], form: str
) -> tuple[np.ndarray, list[str]]:
    """Mask of usable points and a message for each kind of dropped point."""
    needed = {"n": [("N", n_params)], "d": [("D", tokens)], "joint": [("N", n_params), ("D", tokens)]}[form]
    keep = np.ones(len(loss), dtype=bool)
    messages: list[str] = []
    for name, values in [("loss", loss)] + needed:
        bad = ~(np.isfinite(values) & (values > 0)) & keep
        if bad.any():
            ids = ", ".join(str(run_ids[i]) for i in np.flatnonzero(bad)[:5])
            more = "" if bad.sum() <= 5 else f" and {bad.sum() - 5} more"
            messages.append(f"dropped {int(bad.sum())} point(s) with NaN or non-positive {name}: {ids}{more}")
            keep &= ~bad
    return keep, messages


def fit_power_law(
    n_params: Sequence[float] | np.ndarray | None,
    tokens: Sequence[float] | np.ndarray | None,
    loss: Sequence[float] | np.ndarray,
    form: str = "joint",
    *,
    run_ids: Sequence[str] | None = None,
    train_flops: Sequence[float] | np.ndarray | None = None,
    group: Mapping[str, Any] | None = None,
    slice: Mapping[str, float] | None = None,
    n_starts: int = 16,
    exhaustive: bool = False,
    delta: float = HUBER_DELTA,
) -> FitResult:
    """Fit one power-law ``form`` ("n", "d" or "joint") to one set of runs.

    ``n_params`` is N (parameters), ``tokens`` is D (training tokens), ``loss`` the final eval
    loss in nats; ``train_flops`` is only carried along for comparisons. Never raises on bad
    data: points with NaN or non-positive values are dropped with a message; with too few
    distinct N (or D) the result is partial (E fixed at 0 with two distinct values) or
    ``ok=False`` (one value); equal losses give ``ok=False`` with E set to that loss.
    """
    if form not in POWER_FORMS:
        raise ValueError(f"fit_power_law: form must be one of {POWER_FORMS}, got {form!r}")
    loss_arr = np.asarray(loss, dtype=float)
    size = len(loss_arr)
    n_arr = np.full(size, np.nan) if n_params is None else np.asarray(n_params, dtype=float)
    d_arr = np.full(size, np.nan) if tokens is None else np.asarray(tokens, dtype=float)
    c_arr = np.full(size, np.nan) if train_flops is None else np.asarray(train_flops, dtype=float)
    ids = [str(i) for i in (run_ids if run_ids is not None else range(size))]
    keep, messages = clean_points(n_arr, d_arr, loss_arr, ids, form)
    n_arr, d_arr, c_arr, loss_arr = n_arr[keep], d_arr[keep], c_arr[keep], loss_arr[keep]
    ids = [i for i, k in zip(ids, keep) if k]
    base = dict(
        form=form,
        group=dict(group or {}),
        slice=dict(slice or {}),
        run_ids=tuple(ids),
        n_params=n_arr,
        tokens=d_arr,
        train_flops=c_arr,
        loss=loss_arr,
        n_points=len(loss_arr),
    )
    nan_params = {p: float("nan") for p in FORM_PARAMS[form]}

    def failed(message: str, params: dict[str, float] | None = None) -> FitResult:
        return FitResult(params=params or nan_params, ok=False, messages=tuple(messages + [message]), **base)

    if len(loss_arr) == 0:
        return failed("no usable points")
    if np.ptp(np.log(loss_arr)) < 1e-12:
        return failed(
            f"all {len(loss_arr)} losses are equal ({loss_arr[0]:.6g}): no descent to fit; E set to that loss",
            {**nan_params, "E": float(loss_arr[0])},
        )

    if form == "joint":
        partial = _joint_fallback(n_arr, d_arr)
        if partial is not None:
            sub_form, why = partial
            if sub_form is None:
                return failed(why)
            sub = fit_power_law(n_arr, d_arr, loss_arr, sub_form, run_ids=ids, train_flops=c_arr, n_starts=n_starts, delta=delta)
            params = {**nan_params, **{k: v for k, v in sub.params.items() if np.isfinite(v)}}
            return FitResult(
                params=params,
                ok=False,
                messages=tuple(messages + [why] + list(sub.messages)),
                residuals=sub.residuals,
                objective=sub.objective,
                fixed=sub.fixed + tuple(p for p in FORM_PARAMS[form] if p not in FORM_PARAMS[sub_form]),
                extra={"partial_form": sub_form},
                **base,
            )
        with_e = True
        if len(loss_arr) <= 6:
            messages.append(f"{len(loss_arr)} points for 5 parameters: the fit is barely determined; read the CIs with care")
    else:
        axis = _AXIS_NAME[form]
        x = n_arr if form == "n" else d_arr
        distinct = n_distinct(x)
        if distinct <= 1:
            return failed(f"one {axis} only ({x[0]:.4g}): cannot fit L({axis})")
        with_e = distinct >= 3
        if not with_e:
            messages.append(f"only 2 distinct {axis}: fitted a pure power law with E fixed at 0 (partial result)")
        elif len(loss_arr) <= 3:
            messages.append(f"{len(loss_arr)} points for 3 parameters: the curve passes through every point")

    log_x = design(form, n_arr, d_arr)
    log_loss = np.log(loss_arr)
    raw = multistart(log_x, log_loss, with_e, n_starts=n_starts, exhaustive=exhaustive, delta=delta)
    params = theta_to_params(raw.theta, form, with_e)
    log_fit = np.log(predict(form, params, n_arr, d_arr))
    messages += _bound_messages(raw.theta, form, with_e)
    if not raw.converged:
        messages.append("the optimizer did not converge; treat the parameters as approximate")
    return FitResult(
        params=params,
        ok=True,
        messages=tuple(messages),
        residuals=log_loss - log_fit,
        objective=raw.value,
        fixed=() if with_e else ("E",),
        **base,
    )


def _joint_fallback(n_arr: np.ndarray, d_arr: np.ndarray) -> tuple[str | None, str] | None:
    """Why L(N, D) cannot be identified, and which one-variable form to fit instead."""
    n_n, n_d = n_distinct(n_arr), n_distinct(d_arr)
    if n_n <= 1 and n_d <= 1:
        return None, "one N and one D only: cannot fit L(N, D)"
    if n_n <= 1:
        return "d", f"one N only ({n_arr[0]:.4g}): L(N, D) is not identifiable; fitted L(D) instead (partial result)"
    if n_d <= 1:
        return "n", f"one D only ({d_arr[0]:.4g}): L(N, D) is not identifiable; fitted L(N) instead (partial result)"
    # With two values of an axis, E, its coefficient and its exponent are three unknowns
    # for two levels: any exponent fits, so the joint law is not identifiable.
    if n_n == 2 or n_d == 2:
        axis = "N" if n_n == 2 else "D"
        return None, f"only 2 distinct {axis}: E, the {axis} coefficient and exponent of L(N, D) cannot be separated; see the one-variable fits"
    if len(n_arr) < 5:
        return None, f"{len(n_arr)} points for 5 parameters: cannot fit L(N, D)"
    centered = np.column_stack([np.log(n_arr), np.log(d_arr)])
    centered = centered - centered.mean(axis=0)
    sv = np.linalg.svd(centered, compute_uv=False)
    if sv[-1] <= 1e-6 * sv[0]:
        return "n", "log D is a linear function of log N in these runs: N and D effects cannot be separated; fitted L(N) along the grid's D schedule instead (partial result)"
    return None


def _bound_messages(theta: np.ndarray, form: str, with_e: bool) -> list[str]:
    offset = 1 if with_e else 0
    names = {"n": ["alpha"], "d": ["beta"], "joint": ["alpha", "beta"]}[form]
    axes = {"alpha": "N", "beta": "D"}
    out = []
    for j, name in enumerate(names):
        value = theta[offset + 2 * j + 1]
        if value <= _BOUND_EXPONENT[0] + 1e-9:
            out.append(f"{_SYMBOL[name]} is at 0: the loss does not descend with {axes[name]} in these runs")
        elif value >= _BOUND_EXPONENT[1] - 1e-9:
            out.append(f"{_SYMBOL[name]} hit its upper bound {_BOUND_EXPONENT[1]}: the fit is not credible")
    return out
