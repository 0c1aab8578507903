"""How a tuned hyperparameter moves with model size: a power law in N, by least squares.

For each numeric tuned parameter θ (a learning rate, say) and each setting of the other group
keys, the best values found at different sizes are fitted with

    log θ*(N) = a + k·log N,   i.e.   θ*(N) = exp(a)·N^k

by ordinary least squares in log-log space, N being the non-embedding parameter count. A
learning rate that shrinks with size has k < 0 (θ* ∝ N^-|k|). Two sizes give an exact line; from
three on, the slope's standard error is reported too. Imports neither torch nor ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TunedGroup:
    """One study's outcome, as the fit needs it."""

    group: Mapping[str, Any]  # the group keys and their values, e.g. {"model.preset": "tiny"}
    n_params_non_embedding: float  # N
    best: Mapping[str, Any]  # tuned key -> best value found


@dataclass(frozen=True)
class SizeRule:
    """θ*(N) = exp(a)·N^k for one parameter at one setting of the other group keys."""

    param: str  # the tuned config key, e.g. optim.lr
    where: dict[str, Any]  # the other (non-size) group keys' values this rule holds at
    a: float  # intercept of log θ* against log N
    k: float  # exponent: θ* ∝ N^k
    k_stderr: float | None  # standard error of k; None with two sizes (an exact fit)
    n_params: tuple[float, ...]  # N of each group fitted
    best: tuple[float, ...]  # θ* of each group fitted
    residuals: tuple[float, ...] = field(default=())  # log θ* − fit, natural log

    @property
    def coefficient(self) -> float:
        """exp(a): θ* at N = 1."""
        return math.exp(self.a)

    def predict(self, n_params: float) -> float:
        """θ*(N) by the rule."""
        return math.exp(self.a + self.k * math.log(n_params))

    def formula(self) -> str:
        """``optim.lr ≈ 0.0513 · N^-0.274 (± 0.05; 3 sizes)``."""
        error = f" ± {self.k_stderr:.2g}" if self.k_stderr is not None else ""
        where = ", ".join(f"{k}={v}" for k, v in self.where.items())
        at = f" at {where}" if where else ""
        return (
            f"{self.param} ≈ {self.coefficient:.4g} · N^{self.k:.3f}{error}{at} ({len(self.n_params)} sizes)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "where": dict(self.where),
            "a": self.a,
            "k": self.k,
            "k_stderr": self.k_stderr,
            "coefficient": self.coefficient,
            "n_groups": len(self.n_params),
            "N": list(self.n_params),
            "best": list(self.best),
            "formula": self.formula(),
        }


def power_law_fit(
    n_params: Sequence[float], values: Sequence[float]
) -> tuple[float, float, float | None, np.ndarray]:
    """Least squares of log(values) = a + k·log(n_params): returns (a, k, stderr of k, residuals).

    Needs at least two distinct positive N and positive values; stderr is None with two points.
    """
    x = np.log(np.asarray(n_params, dtype=float))
    y = np.log(np.asarray(values, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a size rule needs at least two distinct N")
    design = np.column_stack([np.ones_like(x), x])
    (a, k), *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - (a + k * x)
    stderr = None
    if len(x) > 2:
        sigma2 = float(residuals @ residuals) / (len(x) - 2)
        stderr = math.sqrt(sigma2 / float(((x - x.mean()) ** 2).sum()))
    return float(a), float(k), stderr, residuals


def fit_size_rules(
    groups: Sequence[TunedGroup], params: Sequence[str], slice_keys: Sequence[str]
) -> list[SizeRule]:
    """One rule per parameter and per setting of ``slice_keys`` (the group keys that are not
    model size) that has groups at two or more sizes. Parameters whose best values are not
    positive numbers (choices, zero) are skipped: a power law cannot hold them."""
    slices: dict[tuple, list[TunedGroup]] = {}
    for group in groups:
        key = tuple((k, repr(group.group.get(k))) for k in slice_keys)
        slices.setdefault(key, []).append(group)
    rules = []
    for members in slices.values():
        where = {k: members[0].group.get(k) for k in slice_keys}
        for param in params:
            points = [
                (float(g.n_params_non_embedding), float(g.best[param]))
                for g in members
                if _positive(g.best.get(param)) and g.n_params_non_embedding > 0
            ]
            if len({n for n, _ in points}) < 2:
                continue
            points.sort()
            n_params, values = zip(*points)
            a, k, stderr, residuals = power_law_fit(n_params, values)
            rules.append(
                SizeRule(
                    param=param,
                    where=where,
                    a=a,
                    k=k,
                    k_stderr=stderr,
                    n_params=tuple(n_params),
                    best=tuple(values),
                    residuals=tuple(float(r) for r in residuals),
                )
            )
    return rules


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
