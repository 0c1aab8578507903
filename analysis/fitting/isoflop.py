"""IsoFLOP profiles: compute-optimal model size and data (Hoffmann et al. 2022, approach 2).

For each iso-FLOP slice (runs with the same training FLOPs C), a parabola in log N is fitted
to the final loss; its minimum gives N*(C), and likewise D*(C) from a parabola in log D.
The exponents then come from least squares on the minima:

    N*(C) = N_coef · C^a        D*(C) = D_coef · C^b
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.fitting.fit import FORM_PARAMS, FitResult, n_distinct
from analysis.fitting.slices import FLOPS_REL_TOL, cluster_values

MIN_DISTINCT_N = 3  # a parabola needs three distinct sizes


@dataclass(frozen=True)
class IsoSlice:
    """One iso-FLOP slice: its budget ``train_flops`` (C), the parabola minima and their loss.

    ``n_opt``/``tokens_opt``/``loss_opt`` are NaN when the slice has no interior minimum;
    ``extrapolated`` is True when the minimum lies outside the slice's measured N range.
    ``coef_n`` are the parabola's coefficients (highest power first) in log N.
    """

    train_flops: float
    n_points: int
    n_range: tuple[float, float]
    n_opt: float
    tokens_opt: float
    loss_opt: float
    coef_n: tuple[float, float, float] | None
    ok: bool
    extrapolated: bool
    message: str | None


def iso_flop_labels(
    train_flops: np.ndarray, n_params: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Cluster runs by FLOPs; also return the clusters that hold enough distinct N for a parabola."""
    labels, centers = cluster_values(train_flops, FLOPS_REL_TOL)
    usable = [j for j in range(len(centers)) if n_distinct(n_params[labels == j]) >= MIN_DISTINCT_N]
    return labels, centers, usable


def has_iso_flop_slices(train_flops: np.ndarray, n_params: np.ndarray) -> bool:
    """True when at least two FLOPs budgets each hold three or more distinct model sizes."""
    good = np.isfinite(train_flops) & np.isfinite(n_params) & (n_params > 0)
    return len(iso_flop_labels(train_flops[good], n_params[good])[2]) >= 2


def _parabola_min(
    log_x: np.ndarray, loss: np.ndarray, weights: np.ndarray
) -> tuple[float, float, np.ndarray] | None:
    """(argmin of log x, loss at it, coefficients in powers of log x, highest first) of one
    weighted parabola (:func:`_parabolas`); None without a minimum."""
    coef, center = _parabolas(log_x, loss, weights[None, :])
    c2, c1, c0 = coef[0]
    if not np.all(np.isfinite(coef)) or c2 <= 0:
        return None
    in_log_x = np.array([c2, c1 - 2 * c2 * center, c2 * center**2 - c1 * center + c0])
    return float(center - c1 / (2 * c2)), float(c0 - c1 * c1 / (4 * c2)), in_log_x


def isoflop_core(
    n_params: np.ndarray, tokens: np.ndarray, train_flops: np.ndarray, loss: np.ndarray, weights: np.ndarray
) -> tuple[dict[str, float], list[IsoSlice]]:
    """Parameters ``a, b, N_coef, D_coef`` (NaN if fewer than two slices have a minimum) and the slices."""
    labels, centers, usable = iso_flop_labels(train_flops, n_params)
    slices: list[IsoSlice] = []
    for j in usable:
        members = labels == j
        w = weights[members]
        n_j, d_j, l_j = n_params[members], tokens[members], loss[members]
        present = w > 0
        n_range = (
            (float(n_j[present].min()), float(n_j[present].max())) if present.any() else (np.nan, np.nan)
        )
        by_n = _parabola_min(np.log(n_j), l_j, w)
        by_d = _parabola_min(np.log(d_j), l_j, w)
        if by_n is None or by_d is None:
            slices.append(
                IsoSlice(
                    centers[j],
                    int(present.sum()),
                    n_range,
                    np.nan,
                    np.nan,
                    np.nan,
                    None,
                    False,
                    False,
                    "no interior minimum: the loss does not turn up at either end of this slice",
                )
            )
            continue
        n_opt = float(np.exp(by_n[0]))
        extrapolated = not (n_range[0] <= n_opt <= n_range[1])
        slices.append(
            IsoSlice(
                centers[j],
                int(present.sum()),
                n_range,
                n_opt,
                float(np.exp(by_d[0])),
                by_n[1],
                tuple(float(c) for c in by_n[2]),
                True,
                extrapolated,
                "the minimum lies outside the measured sizes (extrapolated)" if extrapolated else None,
            )
        )
    # The line through the slices' minima: the same least squares as every bootstrap draw's.
    drawn = isoflop_draws(n_params, tokens, train_flops, loss, weights[None, :])
    params = {p: float(drawn[p][0]) for p in FORM_PARAMS["isoflop"]}
    return params, slices


def isoflop_draws(
    n_params: np.ndarray, tokens: np.ndarray, train_flops: np.ndarray, loss: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """The IsoFLOP parameters ``a, b, N_coef, D_coef`` for K weightings of the same runs at
    once: ``weights`` is (K, n) (bootstrap multiplicities; :func:`isoflop_core` passes one row),
    each parameter a (K,) array, NaN where fewer than two slices have a minimum.

    Each slice's weighted parabolas in log N and log D come from :func:`_parabolas`; the line
    through their minima is the least squares over each draw's slices that have one.
    """
    labels, centers, usable = iso_flop_labels(train_flops, n_params)
    n_fits = weights.shape[0]
    log_n_opt = np.full((n_fits, len(usable)), np.nan)
    log_d_opt = np.full((n_fits, len(usable)), np.nan)
    for s, j in enumerate(usable):
        members = labels == j
        w = weights[:, members]
        log_n_opt[:, s] = _parabola_minima(np.log(n_params[members]), loss[members], w)
        log_d_opt[:, s] = _parabola_minima(np.log(tokens[members]), loss[members], w)
    good = np.isfinite(log_n_opt) & np.isfinite(log_d_opt)
    log_c = np.log(np.asarray(centers, dtype=float)[usable])
    out = {}
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # draws with < 2 slices: NaN
        for slope, coef, log_opt in (("a", "N_coef", log_n_opt), ("b", "D_coef", log_d_opt)):
            count = good.sum(axis=1)
            mean_c = np.where(good, log_c, 0.0).sum(axis=1) / count
            mean_y = np.where(good, log_opt, 0.0).sum(axis=1) / count
            dc = np.where(good, log_c - mean_c[:, None], 0.0)
            dy = np.where(good, log_opt - mean_y[:, None], 0.0)
            fitted = (dc * dy).sum(axis=1) / (dc * dc).sum(axis=1)
            fitted[count < 2] = np.nan
            out[slope] = fitted
            out[coef] = np.exp(mean_y - fitted * mean_c)
    return out


def _parabolas(log_x: np.ndarray, loss: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float]:
    """The weighted least-squares parabola c2·u² + c1·u + c0 in u = log x − center for each row
    of ``weights`` (K, n): its coefficients (K, 3), NaN where the drawn points hold fewer than
    three distinct values, and the center (the mean of ``log_x``).

    Solved from the normal equations in the centered u, which for three coefficients are as
    exact as a QR least squares (``np.polyfit``) and take every row at once.
    """
    distinct = np.unique(np.round(log_x / 1e-3), return_inverse=True)[1].reshape(-1)
    drawn = (weights > 0).astype(float) @ (distinct[:, None] == np.arange(distinct.max() + 1)[None, :])
    center = float(log_x.mean())
    powers = (log_x - center)[None, :] ** np.arange(5)[:, None]  # (5, n): 1, u, …, u⁴
    s = weights @ powers.T  # (K, 5): Σ w·u^k
    t = weights @ (powers[:3] * loss[None, :]).T  # (K, 3): Σ w·u^k·y
    system = np.stack([s[:, [4, 3, 2]], s[:, [3, 2, 1]], s[:, [2, 1, 0]]], axis=1)  # rows for (c2, c1, c0)
    rhs = t[:, [2, 1, 0]]
    enough = (drawn > 0).sum(axis=1) >= MIN_DISTINCT_N
    coef = np.full((len(weights), 3), np.nan)
    if enough.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            coef[enough] = np.linalg.solve(system[enough], rhs[enough][..., None])[..., 0]
    return coef, center


def _parabola_minima(log_x: np.ndarray, loss: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The argmin in ``log_x`` of each row's parabola (:func:`_parabolas`): NaN where it has
    none (too few distinct points, or it opens down)."""
    coef, center = _parabolas(log_x, loss, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        opens_up = np.isfinite(coef).all(axis=1) & (coef[:, 0] > 0)
        return np.where(opens_up, center - coef[:, 1] / (2 * coef[:, 0]), np.nan)


def fit_isoflop(
    n_params: Sequence[float] | np.ndarray,
    tokens: Sequence[float] | np.ndarray,
    train_flops: Sequence[float] | np.ndarray,
    loss: Sequence[float] | np.ndarray,
    *,
    run_ids: Sequence[str] | None = None,
    group: Mapping[str, Any] | None = None,
) -> FitResult:
    """Chinchilla's approach 2 on one group of runs: exponents of N*(C) and D*(C).

    Needs at least two FLOPs budgets with three or more distinct N each and an interior
    minimum; otherwise ``ok=False`` with a message. Never raises on bad data.
    """
    n_arr, d_arr, c_arr, l_arr = (np.asarray(v, dtype=float) for v in (n_params, tokens, train_flops, loss))
    ids = [str(i) for i in (run_ids if run_ids is not None else range(len(l_arr)))]
    keep = np.ones(len(l_arr), dtype=bool)
    messages: list[str] = []
    for name, values in (("loss", l_arr), ("N", n_arr), ("D", d_arr), ("FLOPs", c_arr)):
        bad = keep & ~(np.isfinite(values) & (values > 0))
        if bad.any():
            messages.append(f"dropped {int(bad.sum())} point(s) with NaN or non-positive {name}")
            keep &= ~bad
    n_arr, d_arr, c_arr, l_arr = n_arr[keep], d_arr[keep], c_arr[keep], l_arr[keep]
    ids = [i for i, k in zip(ids, keep) if k]
    params, slices = isoflop_core(n_arr, d_arr, c_arr, l_arr, np.ones(len(l_arr)))
    good = [s for s in slices if s.ok]
    for s in slices:
        if s.message:
            messages.append(f"FLOPs slice {s.train_flops:.3g}: {s.message}")
    ok = len(good) >= 2
    if not ok:
        messages.append(
            f"{len(good)} iso-FLOP slice(s) with a minimum: need at least 2 for the N*(C), D*(C) exponents"
        )
    elif len(good) == 2:
        messages.append("only 2 iso-FLOP slices: the exponents are a line through two points")
    residuals = np.full(len(l_arr), np.nan)
    labels, _, _ = iso_flop_labels(c_arr, n_arr)
    centers = {s.train_flops: s for s in slices}
    _, all_centers = cluster_values(c_arr, FLOPS_REL_TOL)
    for j, center in enumerate(all_centers):
        s = centers.get(center)
        if s is not None and s.coef_n is not None:
            members = labels == j
            residuals[members] = np.log(l_arr[members]) - np.log(np.polyval(s.coef_n, np.log(n_arr[members])))
    return FitResult(
        form="isoflop",
        group=dict(group or {}),
        slice={},
        params=params,
        ok=ok,
        messages=tuple(messages),
        n_points=len(l_arr),
        run_ids=tuple(ids),
        n_params=n_arr,
        tokens=d_arr,
        train_flops=c_arr,
        loss=l_arr,
        residuals=residuals,
        extra={"slices": tuple(slices)},
    )
