"""Seeded synthetic scaling-law data with known parameters, for tests, benchmarks and examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.fitting.fit import loss_nd

# Hoffmann et al. (2022), approach 3 estimates: a realistic default truth.
CHINCHILLA = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}


def grid_points(
    n_params: Sequence[float], tokens: Sequence[float], repeats: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Every (N, D) pair of a full factorial grid, each ``repeats`` times."""
    n, d = np.meshgrid(np.asarray(n_params, float), np.asarray(tokens, float), indexing="ij")
    return np.repeat(n.ravel(), repeats), np.repeat(d.ravel(), repeats)


def synthetic_runs(
    groups: Mapping[str, Mapping[str, float]] | None = None,
    *,
    n_params: Sequence[float] = (1e7, 3e7, 1e8, 3e8, 1e9, 3e9),
    tokens: Sequence[float] = (1e9, 3e9, 1e10, 3e10, 1e11),
    repeats: int = 1,
    noise: float = 0.01,
    seed: int = 0,
    group_column: str = "gamma",
) -> pd.DataFrame:
    """A CSV-shaped frame ``N, D, FLOPs, loss, <group_column>`` drawn from L(N, D) per group.

    ``groups`` maps a group value (e.g. ``"0.5"``) to its true ``E, A, alpha, B, beta``
    (default: one group with the Chinchilla estimates). The loss gets multiplicative
    log-normal noise of relative size ``noise``; ``FLOPs`` = 6·N·D.
    """
    rng = np.random.default_rng(seed)
    groups = groups or {"1.0": CHINCHILLA}
    frames = []
    for value, truth in groups.items():
        n, d = grid_points(n_params, tokens, repeats)
        clean = loss_nd(n, d, truth["E"], truth["A"], truth["alpha"], truth["B"], truth["beta"])
        loss = clean * np.exp(rng.normal(0.0, noise, clean.shape))
        frames.append(pd.DataFrame({"N": n, "D": d, "FLOPs": 6.0 * n * d, "loss": loss, group_column: value}))
    return pd.concat(frames, ignore_index=True)


def isoflop_runs(
    truth: Mapping[str, float] = CHINCHILLA,
    *,
    budgets: Sequence[float] = (1e18, 1e19, 1e20, 1e21),
    sizes_per_budget: int = 9,
    noise: float = 0.003,
    seed: int = 0,
) -> pd.DataFrame:
    """Runs on iso-FLOP slices (D = C / 6N), sizes spread log-uniformly around the optimum."""
    rng = np.random.default_rng(seed)
    alpha, beta = truth["alpha"], truth["beta"]
    # Optimum of L(N, C/6N) in N: N* = G·(C/6)^(β/(α+β)), G = (αA/βB)^(1/(α+β)).
    g = (alpha * truth["A"] / (beta * truth["B"])) ** (1.0 / (alpha + beta))
    rows = []
    for c in budgets:
        n_opt = g * (c / 6.0) ** (beta / (alpha + beta))
        for n in n_opt * np.logspace(-1.0, 1.0, sizes_per_budget):
            d = c / (6.0 * n)
            clean = loss_nd(n, d, truth["E"], truth["A"], alpha, truth["B"], beta)
            rows.append({"N": n, "D": d, "FLOPs": c, "loss": float(clean * np.exp(rng.normal(0.0, noise)))})
    return pd.DataFrame(rows)
