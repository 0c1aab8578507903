"""The critical γ: final loss, reasoning-probe accuracy and training stability against γ.

The γ-initialization papers find that a smaller initialization (larger γ) improves reasoning up
to a point past which training becomes unstable; the *critical γ* balances the two. Per group
(a γ value, or whatever the grouping is) this module reports the final eval loss, the probe's
held-out compositional rate, diverged runs and loss spikes, and picks:

- the **best γ by loss**: the lowest mean final loss over the (N, D) cells that every candidate
  finished, the candidates being the groups none of whose runs diverged;
- the **best γ by reasoning**: the highest mean held-out compositional rate, likewise, among the
  groups whose runs learned the probe's trained pairs (mean accuracy at least
  ``LEARNED_SEEN_ACCURACY``): below it the held-out rates are noise, and no best is named.

Each comes with how often every group wins over bootstrap draws (cells and runs within cells
resampled, :func:`analysis.measures.mechanism.bootstrap_means`) and, for a numeric γ, the percentile
interval of the winning γ.

A *loss spike* is a ``train/loss`` record above ``SPIKE_FACTOR`` (1.25) × the median of the
``SPIKE_WINDOW`` (5) records before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.fitting.bootstrap import DEFAULT_CI_LEVEL, percentile_ci
from analysis.measures.mechanism import (
    LEARNED_SEEN_ACCURACY,
    PROBE_METRICS,
    Samples,
    bootstrap_means,
    cells,
    final_values,
    group_samples,
    point_means,
    run_groups,
)

# Per-batch noise of the small batches of a laptop grid stays well under 25%; a spike does not.
SPIKE_FACTOR = 1.25
SPIKE_WINDOW = 5


def count_spikes(losses: Sequence[float], factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> int:
    """Train-loss records above ``factor`` × the median of the ``window`` records before them."""
    values = np.asarray(losses, dtype=float)
    return sum(
        1 for i in range(window, len(values)) if values[i] > factor * np.median(values[i - window : i])
    )


def spikes_per_run(histories: pd.DataFrame) -> pd.Series:
    """Loss spikes of each run's ``train/loss`` history (in step order)."""
    rows = histories[histories["metric"] == "train/loss"].sort_values("step", kind="stable")
    return rows.groupby("run_id")["value"].apply(lambda v: count_spikes(v.to_numpy())).astype(int)


@dataclass(frozen=True)
class Best:
    """The group that optimizes a metric at matched (N, D), and how often each group does so
    across bootstrap draws (a draw in which k groups tie credits each with 1/k)."""

    metric: str
    label: str  # the best group; the first of them when several tie
    tied: tuple[str, ...]  # every group with the best value (one unless there is a tie)
    frequency: dict[str, float]  # group label → share of bootstrap draws it is best in (empty: no bootstrap)
    value_ci: tuple[float, float] | None  # percentile interval of the best numeric γ over draws
    n_cells: int
    candidates: tuple[str, ...]


def best_group(
    metric: str,
    samples: dict[str, Samples],
    candidates: Sequence[str],
    numeric: dict[str, float],
    lower_is_better: bool,
    n_boot: int,
    rng: np.random.Generator,
    level: float = DEFAULT_CI_LEVEL,
) -> Best | None:
    """The candidate with the best mean ``metric`` over the cells all candidates share; None
    with fewer than two candidates or no shared cell."""
    candidates = [c for c in candidates if c in samples]
    if len(candidates) < 2:
        return None
    common = sorted(set.intersection(*(set(samples[c]) for c in candidates)))
    if not common:
        return None
    per_group = [samples[c] for c in candidates]
    sign = 1.0 if lower_is_better else -1.0  # minimize sign × metric
    winners = _winners(sign * point_means(per_group, common)[None])[0]
    tied = tuple(c for c, w in zip(candidates, winners) if w)
    frequency: dict[str, float] = {}
    value_ci = None
    if n_boot:
        draws = _winners(sign * bootstrap_means(per_group, common, n_boot, rng))  # (B, groups) bool
        shares = (draws / draws.sum(1, keepdims=True)).mean(0)
        frequency = {c: float(f) for c, f in zip(candidates, shares) if f > 0}
        if numeric:
            first = draws.argmax(1)  # the first best group of each draw
            value_ci = percentile_ci(np.array([numeric[c] for c in candidates])[first], level)
    return Best(metric, tied[0], tied, frequency, value_ci, len(common), tuple(candidates))


def _winners(values: np.ndarray) -> np.ndarray:
    """(B, groups) → bool mask of the smallest value in each row (ties within 1e-12)."""
    return values <= values.min(1, keepdims=True) + 1e-12


@dataclass(frozen=True)
class CriticalGamma:
    """Per-group final loss, probe accuracy and stability, and the best groups."""

    # One row per group label: runs, finished, diverged, spiky_runs, spikes, loss, probe ...
    table: pd.DataFrame
    best_loss: Best | None
    best_probe: Best | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    probe_learned: bool = False  # some group learned the probe's trained pairs


def critical_gamma(
    runs: pd.DataFrame,
    histories: pd.DataFrame,
    by: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = DEFAULT_CI_LEVEL,
) -> CriticalGamma:
    """Final loss, probe rates and stability per group; the best group by loss among the groups
    none of whose runs diverged, and the best by held-out compositional rate."""
    rng = np.random.default_rng(seed)
    groups, order, numeric = run_groups(runs, by)
    cell_of = cells(runs)
    indexed = runs.set_index("run_id")
    finished = indexed[indexed["state"] == "finished"]
    spikes = spikes_per_run(histories).reindex(indexed.index).fillna(0).astype(int)
    probe = final_values(histories, PROBE_METRICS).reindex(finished.index)
    loss_samples = group_samples(finished["loss"].astype(float), groups, cell_of)
    rows = []
    for label in order:
        members = groups.index[groups == label]
        done = finished.index.intersection(members)
        row = {
            "group": label,
            "gamma": numeric.get(label),
            "runs": len(members),
            "finished": len(done),
            "diverged": int((indexed.loc[members, "state"] == "diverged").sum()),
            "spiky_runs": int((spikes.loc[members] > 0).sum()),
            "spikes": float(spikes.loc[members].mean()),
            "loss": float(finished.loc[done, "loss"].mean()) if len(done) else math.nan,
        }
        for metric in PROBE_METRICS:
            row[metric] = float(probe.loc[done, metric].mean()) if len(done) else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    notes = []
    stable = [r["group"] for r in rows if r["diverged"] == 0]
    unstable = [r["group"] for r in rows if r["diverged"] > 0]
    if unstable:
        notes.append(f"left out of the best-loss choice for diverged runs: {', '.join(unstable)}")
    best_loss = best_group("loss", loss_samples, stable, numeric, True, n_boot, rng, level)
    best_probe = None
    learned = [r["group"] for r in rows if r["probe/seen_accuracy"] >= LEARNED_SEEN_ACCURACY]
    if probe["probe/heldout_compositional"].notna().any():
        if learned:
            probe_samples = group_samples(probe["probe/heldout_compositional"], groups, cell_of)
            best_probe = best_group(
                "probe/heldout_compositional", probe_samples, learned, numeric, False, n_boot, rng, level
            )
        else:
            notes.append(
                f"no best γ by reasoning: no group learned the probe's trained pairs (mean accuracy at most "
                f"{table['probe/seen_accuracy'].max():.1%}, the bar is {LEARNED_SEEN_ACCURACY:.0%}), so their "
                "held-out rates are noise"
            )
    if best_loss is None:
        notes.append("no best γ by loss: fewer than two stable groups share an (N, D) cell")
    return CriticalGamma(table, best_loss, best_probe, tuple(notes), probe_learned=bool(learned))
