"""Power-law scaling fits: pure model functions, the one-group fitter, and a typed result.

Method (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3,
and its replication by Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"):
the model is written in log space with the log-sum-exp parameterization

    log L̂ = LSE(a − α·log N, b − β·log D, e),   E = exp(e), A = exp(a), B = exp(b)

and fitted by minimizing the Huber loss (δ = 1e-3) of log L̂ − log L over the runs with
L-BFGS-B (:mod:`analysis.fitting.objective`), started from a grid of points; the best optimum is kept,
then polished by a damped Gauss–Newton step (:mod:`analysis.fitting.batched`), which only ever lowers
the objective. The gradient is analytic. Several groups fitted with one shared E are
:mod:`analysis.fitting.shared`'s.

Forms:

- ``"n"``:     L(N)    = E + A·N^-α
- ``"d"``:     L(D)    = E + B·D^-β
- ``"joint"``: L(N, D) = E + A·N^-α + B·D^-β

N is the number of parameters (``n_params``), D the number of training tokens (``tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.errors import warning
from analysis.fitting.batched import batched_refit
from analysis.fitting.objective import (
    BOUND_EXPONENT,
    BOUND_LOGCOEF,
    FORM_TERMS,
    HUBER_DELTA,
    Layout,
    RawFit,
    grid_values,
    minimize_from,
    single_threaded_blas,
    start_grid,
    theta_to_params,
)
from analysis.fitting.slices import locked_together

POWER_FORMS = ("n", "d", "joint")
ALL_FORMS = ("n", "d", "joint", "isoflop")
# A multi-start fit: its starts descend together for this many batched steps, then L-BFGS-B
# finishes the lowest few (one L-BFGS-B run costs as much as a batch of sixteen).
_SCREEN_ITERATIONS = 200
_FINISH_STARTS = 2
# A coefficient (E, A, B) at the bottom of its log range: indistinguishable from 0.
_COEF_FLOOR = float(np.exp(BOUND_LOGCOEF[0])) * (1 + 1e-6)

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

# ----------------------------------------------------------------------------------------
# Model functions


def loss_n(n_params: Any, E: float, A: float, alpha: float) -> np.ndarray:
    """L(N) = E + A·N^-α, the loss as a function of the number of parameters N."""
    return E + A * np.power(np.asarray(n_params, dtype=float), -alpha)


def loss_d(tokens: Any, E: float, B: float, beta: float) -> np.ndarray:
    """L(D) = E + B·D^-β, the loss as a function of the number of training tokens D."""
    return E + B * np.power(np.asarray(tokens, dtype=float), -beta)


def loss_nd(
    n_params: Any, tokens: Any, E: float, A: float, alpha: float, B: float, beta: float
) -> np.ndarray:
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
    ``e_mode`` says where E comes from: ``"per-group"`` (fitted for this group alone, or held
    at 0 in a partial fit), ``"shared"`` (one E fitted jointly with the groups named in
    ``extra["shared_with"]``: :mod:`analysis.fitting.shared`) or ``"known"`` (held at the data's
    entropy rate).
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
    e_mode: str = "per-group"

    @property
    def rms_residual(self) -> float:
        """Root mean square of the log residuals: the typical relative error of the fit."""
        r = self.residuals[np.isfinite(self.residuals)] if self.residuals.size else self.residuals
        return float(np.sqrt(np.mean(r * r))) if r.size else float("nan")

    @property
    def fitted_names(self) -> tuple[str, ...]:
        """Parameters this fit estimated (excludes those absent from the form or held fixed)."""
        return tuple(
            p
            for p in FORM_PARAMS[self.form]
            if p not in self.fixed and np.isfinite(self.params.get(p, np.nan))
        )

    def predict(self, n_params: Any = None, tokens: Any = None) -> np.ndarray:
        """The fitted loss at ``n_params`` and/or ``tokens`` (power-law forms only)."""
        return predict(self.form, self.params, n_params, tokens)

    def predict_samples(self, n_params: Any = None, tokens: Any = None) -> np.ndarray:
        """The loss under every bootstrap draw: shape (n_bootstrap, len(x)); empty without one."""
        if not self.samples:
            return np.empty((0, np.size(n_params if n_params is not None else tokens)))
        k = len(next(iter(self.samples.values())))
        draws = {
            p: self.samples.get(p, np.full(k, self.params.get(p, np.nan))) for p in FORM_PARAMS[self.form]
        }
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


def layout_of(fit: FitResult) -> Layout:
    """The one-group layout ``fit`` was made with: E fitted, or held at its value (0 or known)."""
    if "E" not in fit.fixed:
        return Layout.single(fit.n_points)
    e = fit.params.get("E", 0.0)
    return Layout(np.zeros(fit.n_points, dtype=int), 1, float(np.log(e)) if e > 0 else -np.inf)


# ----------------------------------------------------------------------------------------
# Optimization


def best_of(
    starts: np.ndarray,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    layout: Layout,
    delta: float = HUBER_DELTA,
) -> RawFit:
    """L-BFGS-B from every start, then a Gauss–Newton polish of the best optimum."""
    best: RawFit | None = None
    for start in starts:
        fit = minimize_from(start, log_x, log_loss, weights, layout, delta)
        if np.isfinite(fit.value) and (best is None or fit.value < best.value):
            best = fit
    if best is None:
        raise ValueError("no start gave a finite objective")
    # L-BFGS-B can stop early along the shallow E–A–α ridge; a damped Gauss–Newton polish
    # from its optimum only ever lowers the objective further.
    polished = batched_refit(best.theta, log_x, log_loss, weights[None, :], layout, delta=delta)
    if polished.converged[0] and polished.value[0] <= best.value:
        best = RawFit(theta=polished.theta[0], value=float(polished.value[0]), converged=True)
    return best


def best_starts(
    log_x: np.ndarray, log_loss: np.ndarray, layout: Layout, n_starts: int, delta: float = HUBER_DELTA
) -> np.ndarray:
    """The ``n_starts`` most promising points of :func:`start_grid` for a one-group fit.

    The whole grid is scored in one vectorized pass; starts with distinct scores come first
    (many grid points are equivalent when an exponent is 0).
    """
    grid = start_grid(log_x, log_loss, layout.with_e)
    if len(grid) <= n_starts:
        return grid
    scores = grid_values(grid, log_x, log_loss, layout, delta)
    order = np.argsort(scores, kind="stable")
    _, first = np.unique(np.round(scores[order], 12), return_index=True)
    picked = order[np.sort(first)][:n_starts]
    if len(picked) < n_starts:
        picked = np.concatenate([picked, order[~np.isin(order, picked)][: n_starts - len(picked)]])
    return grid[picked]


def multistart(
    log_x: np.ndarray,
    log_loss: np.ndarray,
    layout: Layout,
    weights: np.ndarray | None = None,
    n_starts: int = 16,
    exhaustive: bool = False,
    delta: float = HUBER_DELTA,
) -> RawFit:
    """A one-group fit (``layout.n_groups == 1``) from the :func:`best_starts`.

    The starts are first descended together by the batched Levenberg–Marquardt
    (:func:`~analysis.fitting.batched.batched_refit`, at most :data:`_SCREEN_ITERATIONS`
    steps), which ranks them by where they lead; L-BFGS-B then runs from the
    :data:`_FINISH_STARTS` that lead lowest, and the best optimum is kept. ``exhaustive=True``
    runs L-BFGS-B from every grid point, as in the published protocol.
    """
    w = np.ones(len(log_loss)) if weights is None else np.asarray(weights, dtype=float)
    with single_threaded_blas():
        if exhaustive:
            return best_of(start_grid(log_x, log_loss, layout.with_e), log_x, log_loss, w, layout, delta)
        starts = best_starts(log_x, log_loss, layout, n_starts, delta)
        if len(starts) > _FINISH_STARTS:
            screen = batched_refit(
                starts,
                log_x,
                log_loss,
                np.tile(w, (len(starts), 1)),
                layout,
                delta=delta,
                max_iter=_SCREEN_ITERATIONS,
            )
            lowest = np.argsort(np.where(np.isfinite(screen.value), screen.value, np.inf), kind="stable")
            # From the grid points themselves, in the grid's order: on a plateau of equal
            # optima the fit lands where L-BFGS-B from those starts lands.
            starts = starts[np.sort(lowest[:_FINISH_STARTS])]
        return best_of(starts, log_x, log_loss, w, layout, delta)


# ----------------------------------------------------------------------------------------
# Public fitter


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


_DROPPED = "dropped "


def is_data_message(message: str) -> bool:
    """True for a message about the data themselves (a dropped point), which holds for any fit
    of the same points; False for one about a particular optimum."""
    return message.startswith(_DROPPED)


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
            messages.append(
                f"{_DROPPED}{int(bad.sum())} point(s) with NaN or non-positive {name}: {ids}{more}"
            )
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
            sub = fit_power_law(
                n_arr,
                d_arr,
                loss_arr,
                sub_form,
                run_ids=ids,
                train_flops=c_arr,
                n_starts=n_starts,
                delta=delta,
            )
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
            messages.append(
                f"{len(loss_arr)} points for 5 parameters: the fit is barely determined; read the CIs with care"
            )
    else:
        axis = _AXIS_NAME[form]
        x = n_arr if form == "n" else d_arr
        distinct = n_distinct(x)
        if distinct <= 1:
            return failed(f"one {axis} only ({x[0]:.4g}): cannot fit L({axis})")
        with_e = distinct >= 3
        if not with_e:
            messages.append(
                f"only 2 distinct {axis}: fitted a pure power law with E fixed at 0 (partial result)"
            )
        elif len(loss_arr) <= 3:
            messages.append(f"{len(loss_arr)} points for 3 parameters: the curve passes through every point")

    log_x = design(form, n_arr, d_arr)
    log_loss = np.log(loss_arr)
    layout = Layout.single(len(loss_arr), with_e)
    raw = multistart(log_x, log_loss, layout, n_starts=n_starts, exhaustive=exhaustive, delta=delta)
    params = {**nan_params, **theta_to_params(raw.theta, form, layout)[0]}
    log_fit = np.log(predict(form, params, n_arr, d_arr))
    messages += bound_messages(params, form, e_fitted=with_e)
    if not raw.converged:
        messages.append(warning("the optimizer did not converge; treat the parameters as approximate"))
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
        return (
            "d",
            f"one N only ({n_arr[0]:.4g}): L(N, D) is not identifiable; fitted L(D) instead (partial result)",
        )
    if n_d <= 1:
        return (
            "n",
            f"one D only ({d_arr[0]:.4g}): L(N, D) is not identifiable; fitted L(N) instead (partial result)",
        )
    # With two values of an axis, E, its coefficient and its exponent are three unknowns
    # for two levels: any exponent fits, so the joint law is not identifiable.
    if n_n == 2 or n_d == 2:
        axis = "N" if n_n == 2 else "D"
        return (
            None,
            f"only 2 distinct {axis}: E, the {axis} coefficient and exponent of L(N, D) cannot be separated; see the one-variable fits",
        )
    if len(n_arr) < 5:
        return None, f"{len(n_arr)} points for 5 parameters: cannot fit L(N, D)"
    if locked_together(np.log(n_arr), np.log(d_arr)):
        return (
            "n",
            "log D is a linear function of log N in these runs: N and D effects cannot be separated; fitted L(N) along the grid's D schedule instead (partial result)",
        )
    return None


def params_at_bound(fit: FitResult) -> list[str]:
    """The fitted parameters of ``fit`` at a bound of the box: an exponent at 0 or its upper
    bound, or E, A or B at the lower end of their log range (indistinguishable from 0)."""
    if fit.form not in FORM_TERMS:
        return []
    out = []
    for name in fit.fitted_names:
        value = fit.params[name]
        if (
            name in ("alpha", "beta")
            and not BOUND_EXPONENT[0] + 1e-9 < value < BOUND_EXPONENT[1] - 1e-9
            or name in ("E", "A", "B")
            and value <= _COEF_FLOOR
        ):
            out.append(name)
    return out


def bound_messages(params: Mapping[str, float], form: str, e_fitted: bool = True) -> list[str]:
    """A message for every exponent of ``params`` at a bound of the fit's box (or whose
    coefficient is at the bottom of its range, which leaves it arbitrary), and for a fitted E
    at the bottom of its range."""
    axes = {"alpha": "N", "beta": "D"}
    out = []
    if e_fitted and params.get("E", 1.0) <= _COEF_FLOOR:
        out.append(
            warning(
                "E is at its lower bound (indistinguishable from 0): these runs do not show the curve bending "
                "toward a floor, so E and the exponents trade off; read them with care"
            )
        )
    for coef, name in FORM_TERMS[form]:
        value = params[name]
        if params[coef] <= _COEF_FLOOR:  # the term is 0 and its exponent arbitrary (a plateau of optima)
            out.append(
                warning(
                    f"{coef} is at its lower bound (indistinguishable from 0): the loss does not descend with "
                    f"{axes[name]} in these runs"
                )
            )
        elif value <= BOUND_EXPONENT[0] + 1e-9:
            out.append(
                warning(f"{_SYMBOL[name]} is at 0: the loss does not descend with {axes[name]} in these runs")
            )
        elif value >= BOUND_EXPONENT[1] - 1e-9:
            out.append(
                warning(f"{_SYMBOL[name]} hit its upper bound {BOUND_EXPONENT[1]}: the fit is not credible")
            )
    return out
