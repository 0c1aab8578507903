"""Whether a group's runs descend with scale at all, before any law is fitted through them.

A run with at least as many parameters *and* at least as much data as another (one of them
more) should not end at a higher loss. When it does by more than ``RISE_TOLERANCE``, something
other than scale moved the loss (a learning rate that suits the small sizes only, a schedule, an
unstable run), and a power law fitted through those runs describes that, not scaling. Cells
are compared by their mean loss over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.errors import warning
from analysis.labels import format_count, group_label, plain_value

# Seed-to-seed noise of one cell of the CPU grids is about 1%, at most 2.5% (docs/analysis.md):
# a rise beyond 1% between cells that differ in scale is worth a look.
RISE_TOLERANCE = 0.01


@dataclass(frozen=True)
class Inversion:
    """A larger cell (more N and D, or more of one) ending higher than a smaller one."""

    group: dict[str, Any]
    smaller: tuple[float, float, float]  # N, D, mean final loss
    larger: tuple[float, float, float]

    @property
    def rise(self) -> float:
        """How much higher the larger cell's loss is, relative to the smaller's."""
        return self.larger[2] / self.smaller[2] - 1


def scale_inversions(
    finished: pd.DataFrame, by: Sequence[str], tolerance: float = RISE_TOLERANCE
) -> tuple[list[Inversion], dict[str, int]]:
    """Every pair of cells of a group where the larger ends more than ``tolerance`` higher, and
    per group label the number of ordered pairs compared."""
    inversions: list[Inversion] = []
    compared: dict[str, int] = {}
    groups = finished.groupby(list(by), dropna=False, sort=True) if by else [((), finished)]
    for key, rows in groups:
        values = key if isinstance(key, tuple) else (key,)
        group = {c: plain_value(v) for c, v in zip(by, values)}
        cells = rows.groupby(["N", "D"])["loss"].mean().dropna()
        points = [(float(n), float(d), float(loss)) for (n, d), loss in cells.items()]
        pairs = 0
        for small in points:
            for large in points:
                if large[:2] == small[:2] or large[0] < small[0] or large[1] < small[1]:
                    continue
                pairs += 1
                if large[2] > small[2] * (1 + tolerance):
                    inversions.append(Inversion(group, small, large))
        compared[group_label(group)] = pairs
    return inversions, compared


def inversion_notes(inversions: list[Inversion], compared: dict[str, int]) -> list[str]:
    """One warning per group with inversions, naming its worst pair."""
    by_group: dict[str, list[Inversion]] = {}
    for inversion in inversions:
        by_group.setdefault(group_label(inversion.group), []).append(inversion)
    notes = []
    for label, found in by_group.items():
        worst = max(found, key=lambda i: i.rise)
        notes.append(
            warning(
                f"{label}: in {len(found)} of {compared[label]} pairs of cells the larger one (more N, D or both) "
                f"ends higher, worst {_cell(worst.larger)} against {_cell(worst.smaller)} (+{worst.rise:.1%}): "
                "something other than scale moves these losses (the learning rate or schedule at the larger "
                "sizes?), and a law fitted through them is not credible"
            )
        )
    return notes


def _cell(cell: tuple[float, float, float]) -> str:
    n, d, loss = cell
    return f"N={format_count(n)}, D={format_count(d)} at {loss:.3f}"
