"""All bootstrap refits of one power law at once: a batched Levenberg–Marquardt on the Huber objective.

One L-BFGS-B call per resample costs ~70 objective evaluations of Python and numpy overhead,
whatever the number of points; for the small fits of a grid slice that overhead is the whole
cost. Here every resample is one row of a (K, n) array and all K fits advance together.

Each step is Gauss–Newton on iteratively reweighted least squares, the standard scheme for
M-estimators: with residuals r = log L̂ − log L, the Huber gradient is Σ c_i·r_i·J_i with
c_i = w_i·min(1/δ, 1/|r_i|), and H = Σ c_i·J_i·J_iᵀ is its Gauss–Newton curvature. A
Levenberg–Marquardt damping per resample keeps every accepted step downhill; parameters are
projected onto the same box as the L-BFGS-B fit. Resamples that do not converge are
returned as such and refitted one by one by the caller.
"""

from __future__ import annotations

import numpy as np

from analysis.fitting.objective import HUBER_DELTA, Layout, log_terms


def _residuals_and_jacobian(
    theta: np.ndarray, log_x: np.ndarray, log_loss: np.ndarray, layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """r (K, n) and dr/dθ (K, n, p) of the log-sum-exp model for K parameter vectors."""
    terms = log_terms(theta, log_x, layout)  # (K, n, k + 1)
    top = terms.max(axis=2, keepdims=True)
    expd = np.exp(terms - top)
    total = expd.sum(axis=2, keepdims=True)
    resid = top[..., 0] + np.log(total[..., 0]) - log_loss[None, :]
    soft = expd / total  # (K, n, k + 1)
    k = log_x.shape[1]
    jac = np.zeros(soft.shape[:2] + (theta.shape[1],))
    if layout.with_e:
        jac[..., 0] = soft[..., 0]
    # Point i's pairs sit at offset + 2·(g_i·k + j) (coefficient) and one after (exponent).
    rows = np.arange(log_x.shape[0])[:, None]
    coef_col = layout.offset + 2 * (layout.group[:, None] * k + np.arange(k)[None, :])  # (n, k)
    jac[:, rows, coef_col] = soft[..., 1:]
    jac[:, rows, coef_col + 1] = -soft[..., 1:] * log_x[None, :, :]
    return resid, jac


def _huber_values(resid: np.ndarray, weights: np.ndarray, delta: float) -> np.ndarray:
    abs_r = np.abs(resid)
    loss = np.where(abs_r <= delta, 0.5 * abs_r * abs_r / delta, abs_r - 0.5 * delta)
    return (weights * loss).sum(axis=1) / weights.sum(axis=1)


def batched_refit(
    start: np.ndarray,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    layout: Layout,
    delta: float = HUBER_DELTA,
    max_iter: int = 3000,
    f_tol: float = 1e-12,
    x_tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray]:
    """Refit K weighted problems; ``weights`` is (K, n), ``start`` one warm start (p,) or one per fit (K, p).

    Parameters are kept in the same box as the L-BFGS-B fit (``layout.bounds``).

    Returns ``(theta, converged)``: (K, p) optima in the optimizer's coordinates and a (K,)
    mask. A resample converges when its gradient is negligible, or when an accepted step
    changes the objective by less than ``f_tol`` (relative) and every parameter by less than
    ``x_tol`` (exponents then agree with a fully converged fit to ~1e-6); one whose damping
    blows up or that runs out of iterations does not.
    """
    start = np.asarray(start, float)
    n_fits, n_params = weights.shape[0], start.shape[-1]
    lows, highs = np.asarray(layout.bounds(log_x.shape[1]), float).T
    theta = np.array(np.broadcast_to(start, (n_fits, n_params)))
    w_sum = weights.sum(axis=1, keepdims=True)
    resid, jac = _residuals_and_jacobian(theta, log_x, log_loss, layout)
    value = _huber_values(resid, weights, delta)
    damping = np.full(n_fits, 1e-3)
    done = np.zeros(n_fits, dtype=bool)
    converged = np.zeros(n_fits, dtype=bool)
    eye = np.eye(n_params)
    for _ in range(max_iter):
        active = np.flatnonzero(~done)
        if active.size == 0:
            break
        r, j, w = resid[active], jac[active], weights[active]
        c = w * np.minimum(1.0 / delta, 1.0 / np.maximum(np.abs(r), 1e-300)) / w_sum[active]
        grad = np.matmul((c * r)[:, None, :], j)[:, 0, :]
        hess = np.matmul(np.swapaxes(j * c[..., None], 1, 2), j)
        small_grad = np.max(np.abs(grad), axis=1) < 1e-12
        diag = np.einsum("kpp->kp", hess)
        system = hess + (damping[active][:, None] * np.maximum(diag, 1e-12))[:, :, None] * eye + 1e-14 * eye
        try:
            step = -np.linalg.solve(system, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -grad / np.maximum(diag, 1e-12)
        trial = np.clip(theta[active] + step, lows, highs)
        t_resid, t_jac = _residuals_and_jacobian(trial, log_x, log_loss, layout)
        t_value = _huber_values(t_resid, w, delta)
        better = np.isfinite(t_value) & (t_value <= value[active])
        moved = np.max(np.abs(trial - theta[active]), axis=1)
        gain = value[active] - t_value
        accept = active[better]
        theta[accept], resid[accept], jac[accept] = trial[better], t_resid[better], t_jac[better]
        value[accept] = t_value[better]
        damping[accept] = np.maximum(damping[accept] * 0.3, 1e-12)
        damping[active[~better]] *= 10.0
        # Stationary: negligible gradient, or an accepted step that changes neither the
        # objective (relative 1e-15) nor the parameters (1e-10).
        settled = small_grad | (better & (gain <= f_tol * np.maximum(t_value, 1e-300)) & (moved < x_tol))
        settled |= better & (moved < 1e-3 * x_tol)
        # A settled projected iteration on a bound is that bound's optimum (exponent 0: no
        # descent in this resample), as L-BFGS-B would return it.
        stuck = damping[active] > 1e12
        converged[active[settled]] = True
        done[active[settled | stuck]] = True
    return theta, converged
