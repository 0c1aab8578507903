"""The optimizer's side of a power-law fit: coordinates, the robust objective and its minimizer.

A fit in log space writes each point's prediction as a log-sum-exp of log-parameterized terms

    log L̂_i = LSE(e, a_g1 − α_g1·log x_i1, …, a_gk − α_gk·log x_ik),   g = the group of point i,

with E = exp(e), A = exp(a). One vector θ holds every group's parameters, laid out by a
:class:`Layout`: ``θ = [e] + [a_g1, α_g1, …, a_gk, α_gk for each group g]``. A single group is
the usual fit; several groups with one ``e`` fit their laws jointly with a shared irreducible
loss; ``e`` can also be held fixed (a known E, or E = 0 for a pure power law).

The objective is the weighted mean Huber loss (δ = 1e-3) of the log-space residuals (Hoffmann
et al. 2022, approach 3; Besiroglu et al. 2024), minimized by L-BFGS-B with the analytic
gradient (:func:`minimize_from`) from a grid of starting points (:func:`start_grid`);
:mod:`analysis.fitting.fit` picks the starts and polishes the best optimum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

HUBER_DELTA = 1e-3

# Power-law terms of each form: (coefficient, exponent) name pairs, in θ's order.
FORM_TERMS: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (("A", "alpha"),),
    "d": (("B", "beta"),),
    "joint": (("A", "alpha"), ("B", "beta")),
}

# Starting grid of Hoffmann et al. (2022), appendix D.2: e, a, b and the exponents.
_GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)
_GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
_GRID_COEF = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
# Box for L-BFGS-B: exponents stay non-negative (a negative one is growth, not descent) and
# below a value no language-model scaling law comes near; log-coefficients are kept finite.
BOUND_EXPONENT = (0.0, 5.0)
BOUND_LOGCOEF = (-30.0, 100.0)
_LBFGS_OPTIONS = {"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-10, "maxls": 50}


@dataclass(frozen=True)
class Layout:
    """Which entries of θ each point uses.

    ``group[i]`` is point i's group (0 .. ``n_groups`` − 1). ``log_e`` is None when one ``e``
    is fitted (θ[0], shared by every group), else the fixed log E (−inf: E = 0); a batch of
    K fits (:func:`analysis.fitting.batched.batched_refit`) may hold each at its own, a (K, 1) array.
    """

    group: np.ndarray
    n_groups: int
    log_e: float | np.ndarray | None = None

    @classmethod
    def single(cls, n_points: int, with_e: bool = True) -> Layout:
        """One group; E fitted, or fixed at 0 (a pure power law) when ``with_e`` is False."""
        return cls(np.zeros(n_points, dtype=int), 1, None if with_e else -np.inf)

    @property
    def with_e(self) -> bool:
        """True when θ[0] is a fitted e."""
        return self.log_e is None

    @property
    def offset(self) -> int:
        """Where the power-law pairs start in θ."""
        return 1 if self.with_e else 0

    def size(self, n_terms: int) -> int:
        """Length of θ for ``n_terms`` power-law terms per group."""
        return self.offset + 2 * n_terms * self.n_groups

    def bounds(self, n_terms: int) -> list[tuple[float, float]]:
        """The L-BFGS-B box of θ."""
        return ([BOUND_LOGCOEF] if self.with_e else []) + [BOUND_LOGCOEF, BOUND_EXPONENT] * (
            n_terms * self.n_groups
        )


def group_sums(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sums of the rows of ``values`` (…, n, k) per group: (…, n_groups, k)."""
    if n_groups == 1:
        return values.sum(axis=-2, keepdims=True)
    onehot = (group[:, None] == np.arange(n_groups)[None, :]).astype(float)  # (n, G)
    return np.einsum("...nk,ng->...gk", values, onehot)


def log_terms(theta: np.ndarray, log_x: np.ndarray, layout: Layout) -> np.ndarray:
    """The (…, n, k + 1) log terms [e, a_j − α_j·log x_j] of each point, for θ of shape (…, p)."""
    k = log_x.shape[1]
    pairs = theta[..., layout.offset :].reshape(theta.shape[:-1] + (layout.n_groups, k, 2))
    if layout.n_groups == 1:  # every point has the same pairs: broadcast rather than gather
        coef, expo = pairs[..., :1, :, 0], pairs[..., :1, :, 1]  # (…, 1, k)
    else:
        coef = pairs[..., 0][..., layout.group, :]  # (…, n, k)
        expo = pairs[..., 1][..., layout.group, :]
    terms = np.empty(theta.shape[:-1] + (log_x.shape[0], k + 1))
    terms[..., 0] = theta[..., :1] if layout.with_e else layout.log_e
    terms[..., 1:] = coef - log_x * expo
    return terms


class Design:
    """The points of a fit as the model sees them: its distinct (group, design row) pairs.

    A point's prediction depends only on its group and its row of log N, log D; the runs of
    one cell (its seeds) differ in their loss alone. So the model is evaluated once per
    distinct row (``log_x``, with the rows' ``layout``) and spread to the points by
    ``inverse``, and sums over points become sums over rows (:meth:`row_sums`): the same
    sums, at a tenth of the cost for a grid of ten seeds. The points are taken in ``order``
    (sorted by row, so that each row's points are one run starting at ``starts``): callers
    pass per-point arrays (losses, weights) through :meth:`points`.
    """

    def __init__(self, log_x: np.ndarray, layout: Layout):
        rows, inverse = np.unique(np.column_stack([layout.group, log_x]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        self.order = np.argsort(inverse, kind="stable")
        self.inverse = inverse[self.order]
        self.starts = np.flatnonzero(np.r_[True, np.diff(self.inverse) != 0])
        self.log_x = rows[:, 1:]
        self.layout = Layout(rows[:, 0].astype(int), layout.n_groups, layout.log_e)
        bounds = np.searchsorted(self.layout.group, np.arange(layout.n_groups + 1))  # rows sorted by group
        self.group_rows = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def points(self, values: np.ndarray) -> np.ndarray:
        """Per-point ``values`` (…, n) in the design's order."""
        return values[..., self.order]

    def row_sums(self, values: np.ndarray) -> np.ndarray:
        """Sums of per-point ``values`` (…, n, in the design's order) over each row's points: (…, m)."""
        return np.add.reduceat(values, self.starts, axis=-1)

    def model(self, theta: np.ndarray, log_e: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """log L̂ (…, m) at every row for θ of shape (…, p), and the softmax of each row's log
        terms (…, m, k + 1): the derivative of log L̂ by each term. ``log_e`` replaces the
        layout's fixed log E's (a batch's, for the fits in θ)."""
        layout = self.layout if log_e is None else dataclasses.replace(self.layout, log_e=log_e)
        terms = log_terms(theta, self.log_x, layout)
        top = terms.max(axis=-1, keepdims=True)
        expd = np.exp(terms - top)
        total = expd.sum(axis=-1, keepdims=True)
        return top[..., 0] + np.log(total[..., 0]), expd / total


def huber_values(resid: np.ndarray, weights: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Weighted mean Huber loss of residuals (…, n) over the last axis, divided by δ."""
    abs_r = np.abs(resid)
    loss = np.where(abs_r <= delta, 0.5 * abs_r * abs_r / delta, abs_r - 0.5 * delta)
    return (weights * loss).sum(axis=-1) / weights.sum(axis=-1)


def huber_lse_objective(
    theta: np.ndarray,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    layout: Layout,
    delta: float = HUBER_DELTA,
) -> tuple[float, np.ndarray]:
    """Weighted mean Huber loss of log-space residuals, divided by δ, and its gradient.

    ``log_x`` is (n, k): the log of each power-law variable. Dividing by δ rescales the
    objective to the size of a residual, so L-BFGS-B's tolerances mean the same thing for any
    δ; the minimizer is unchanged. ``weights`` are bootstrap multiplicities (ones for a plain fit).
    """
    design = Design(log_x, layout)
    return design_objective(theta, design, design.points(log_loss), design.points(weights), delta)


def design_objective(
    theta: np.ndarray, design: Design, log_loss: np.ndarray, weights: np.ndarray, delta: float = HUBER_DELTA
) -> tuple[float, np.ndarray]:
    """:func:`huber_lse_objective` on a :class:`Design`, with ``log_loss`` and ``weights`` in its order."""
    log_pred, soft = design.model(theta)
    resid = log_pred[design.inverse] - log_loss
    value = float(huber_values(resid, weights, delta))
    dr = np.clip(resid / delta, -1.0, 1.0) * weights / weights.sum()  # d value / d resid_i
    # d resid_i / d term_j is the softmax of its row; column sums of elementwise products
    # rather than matrix products: a BLAS call on arrays this small costs more in thread
    # wake-ups than it computes, and stalls on a busy machine.
    weighted = soft * design.row_sums(dr)[:, None]  # (m, k + 1)
    layout = design.layout
    d_coef = group_sums(weighted[:, 1:], layout.group, layout.n_groups)  # (G, k)
    d_expo = -group_sums(weighted[:, 1:] * design.log_x, layout.group, layout.n_groups)
    grad = np.empty_like(theta)
    if layout.with_e:
        grad[0] = weighted[:, 0].sum()
    pairs = grad[layout.offset :].reshape(layout.n_groups, design.log_x.shape[1], 2)  # a view into grad
    pairs[..., 0] = d_coef
    pairs[..., 1] = d_expo
    return value, grad


def start_grid(log_x: np.ndarray, log_loss: np.ndarray, with_e: bool) -> np.ndarray:
    """Starting points of a one-group fit: Hoffmann et al.'s grid, plus starts scaled to the data.

    The published grid assumes losses of order 1–5 nats and N, D of order 1e7–1e12; the extra
    points put E just below the smallest loss and each power term at the size of the loss
    range at the middle of the data, so grids of tiny models on a CPU start near the optimum too.
    """
    k = log_x.shape[1]
    min_loss = float(np.exp(log_loss.min()))
    spread = max(float(np.exp(log_loss.max()) - min_loss), 1e-3 * min_loss)
    e_values = (
        sorted(set(_GRID_E) | {float(np.log(min_loss * f)) for f in (0.5, 0.8, 0.95)}) if with_e else [None]
    )
    points = []
    for e in e_values:
        per_term = []
        for j in range(k):
            mid = float(np.mean(log_x[:, j]))
            options = [(c, x) for c in _GRID_COEF for x in _GRID_EXPONENT]
            options += [(np.log(spread) + x * mid, x) for x in _GRID_EXPONENT if x > 0]
            per_term.append(options)
        for combo in itertools.product(*per_term):
            flat = [v for pair in combo for v in pair]
            points.append(([e] if with_e else []) + flat)
    grid = np.asarray(points, dtype=float)
    lows, highs = np.asarray(Layout.single(1, with_e).bounds(k)).T
    return np.clip(grid, lows, highs)


def grid_values(
    grid: np.ndarray, log_x: np.ndarray, log_loss: np.ndarray, layout: Layout, delta: float
) -> np.ndarray:
    """The objective at every starting point (no gradient), in chunks: used to rank the grid."""
    design = Design(log_x, layout)
    log_loss = design.points(log_loss)
    weights = np.ones_like(log_loss)
    out = np.empty(len(grid))
    chunk = 512  # keeps the (chunk, m, k + 1) temporaries in cache
    for lo in range(0, len(grid), chunk):
        lse = np.logaddexp.reduce(log_terms(grid[lo : lo + chunk], design.log_x, design.layout), axis=-1)
        out[lo : lo + chunk] = huber_values(lse[:, design.inverse] - log_loss, weights, delta)
    return out


@dataclass(frozen=True)
class RawFit:
    """An optimum in the optimizer's coordinates: ``theta`` (log-coefficients, exponents)."""

    theta: np.ndarray
    value: float
    converged: bool


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


def minimize_from(
    start: np.ndarray,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    layout: Layout,
    delta: float = HUBER_DELTA,
) -> RawFit:
    """One L-BFGS-B run from ``start``, with the analytic gradient."""
    design = Design(log_x, layout)
    res = minimize(
        design_objective,
        np.asarray(start, dtype=float),
        args=(design, design.points(log_loss), design.points(weights), delta),
        jac=True,
        method="L-BFGS-B",
        bounds=layout.bounds(log_x.shape[1]),
        options=_LBFGS_OPTIONS,
    )
    theta = np.asarray(res.x, dtype=float)
    value = float(res.fun)
    # A line-search stop at the noise floor of the objective is a converged optimum here;
    # only running out of iterations or leaving finite values is a failure.
    converged = bool(
        np.all(np.isfinite(theta)) and np.isfinite(value) and res.nit < _LBFGS_OPTIONS["maxiter"]
    )
    return RawFit(theta=theta, value=value, converged=converged)


def theta_to_params(theta: np.ndarray, form: str, layout: Layout) -> list[dict[str, float]]:
    """Natural parameters (E, A, alpha, B, beta) of every group from the optimizer's vector."""
    terms = FORM_TERMS[form]
    e = float(np.exp(theta[0])) if layout.with_e else float(np.exp(layout.log_e))
    pairs = theta[layout.offset :].reshape(layout.n_groups, len(terms), 2)
    out = []
    for g in range(layout.n_groups):
        params = {"E": e}
        for j, (coef, expo) in enumerate(terms):
            params[coef] = float(np.exp(pairs[g, j, 0]))
            params[expo] = float(pairs[g, j, 1])
        out.append(params)
    return out


def params_to_theta(params: list[Mapping[str, float]], form: str, layout: Layout) -> np.ndarray:
    """The optimizer's vector from every group's natural parameters (inverse of :func:`theta_to_params`)."""
    theta = [float(np.log(params[0]["E"]))] if layout.with_e else []
    for group in params:
        for coef, expo in FORM_TERMS[form]:
            theta += [float(np.log(group[coef])), float(group[expo])]
    return np.asarray(theta)
