"""Plain-language labels and number formats shared by the CLI, the comparisons and the report."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# Conventional symbols for the usual grouping axes.
AXIS_SYMBOLS = {
    "init.gamma": "γ",
    "gamma": "γ",
    "optim.weight_decay": "λ",
    "weight_decay": "λ",
    "lambda": "λ",
}
PARAM_SYMBOLS = {
    "alpha": "α",
    "beta": "β",
    "a": "a",
    "b": "b",
    "E": "E",
    "A": "A",
    "B": "B",
    "N_coef": "N₀",
    "D_coef": "D₀",
}
FORM_TITLES = {
    "n": "L(N) = E + A·N^-α",
    "d": "L(D) = E + B·D^-β",
    "joint": "L(N, D) = E + A·N^-α + B·D^-β",
    "isoflop": "IsoFLOP: N*(C) ∝ C^a, D*(C) ∝ C^b",
}
AXIS_NOUNS = {"N": "parameters", "D": "training tokens", "FLOPs": "training compute"}


def format_value(value: Any) -> str:
    """A group value as a short string: ``1.0``, ``0.02``, ``sigma``, ``none``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, float):
        return f"{value:g}" if not value.is_integer() else f"{value:.1f}"
    return str(value)


def group_label(group: Mapping[str, Any]) -> str:
    """``γ=1.0``, ``γ=1.0, λ=0.1``, or ``all runs`` for the empty grouping."""
    if not group:
        return "all runs"
    return ", ".join(f"{AXIS_SYMBOLS.get(k, k)}={format_value(v)}" for k, v in group.items())


def format_count(value: float) -> str:
    """A parameter or token count with an SI-style suffix: ``5.1M``, ``2.0B``, ``340k``."""
    if value is None or not math.isfinite(value):
        return "∞" if value == math.inf else "n/a"
    value = float(f"{value:.3g}")  # so 999.9999M prints as 1B, not 1e+03M
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}"


def format_axis_value(axis: str, value: float) -> str:
    """``N=5.1M``-style values; FLOPs in scientific notation."""
    if axis == "FLOPs":
        return f"{value:.2e}" if math.isfinite(value) else "n/a"
    return format_count(value)


def format_number(value: float, digits: int = 3) -> str:
    """A parameter value with ``digits`` significant digits; ``n/a`` for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def format_ci(ci: tuple[float, float] | None, digits: int = 3) -> str:
    """``[0.28, 0.34]`` or an empty string without an interval."""
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return ""
    return f"[{format_number(ci[0], digits)}, {format_number(ci[1], digits)}]"


def slice_label(slice_: Mapping[str, float]) -> str:
    """``D=2.0B`` for a slice, empty for the whole group."""
    return ", ".join(f"{k}={format_axis_value(k, v)}" for k, v in slice_.items())


def plain_value(value: Any) -> Any:
    """numpy scalars and NaN as plain Python values (JSON- and label-friendly)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
