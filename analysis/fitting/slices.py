"""Slices of a grid: runs that share (nearly) the same value of one axis.

Grids fix D, N or FLOPs per slice, but the logged values can differ by a few percent
(token counts rounded to whole batches, FLOPs that count attention), so values are grouped
by relative closeness rather than equality.
"""

from __future__ import annotations

import numpy as np

# Values within 5% of their neighbour share a slice: logged token counts differ from the grid's
# by whole batches, while grid axes step by factors of 1.5 or more.
SLICE_REL_TOL = 0.05
# FLOPs of one iso-FLOP budget spread more (rounded N and D; attention FLOPs grow with size).
FLOPS_REL_TOL = 0.10


def cluster_values(values: np.ndarray, rel_tol: float = SLICE_REL_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Cluster positive values on a log scale.

    Returns ``(labels, centers)``: ``labels[i]`` is the cluster of ``values[i]`` (−1 for a
    NaN or non-positive value) and ``centers[j]`` the geometric mean of cluster ``j``;
    clusters are numbered in increasing order of value. A new cluster starts wherever two
    consecutive sorted values differ by more than the factor ``1 + rel_tol``.
    """
    values = np.asarray(values, dtype=float)
    labels = np.full(values.shape, -1, dtype=int)
    good = np.flatnonzero(np.isfinite(values) & (values > 0))
    if good.size == 0:
        return labels, np.empty(0)
    logs = np.log(values[good])
    order = np.argsort(logs, kind="stable")
    breaks = np.diff(logs[order]) > np.log1p(rel_tol)
    sorted_labels = np.concatenate([[0], np.cumsum(breaks)])
    labels[good[order]] = sorted_labels
    centers = np.array([np.exp(logs[order][sorted_labels == j].mean()) for j in range(sorted_labels[-1] + 1)])
    return labels, centers


def locked_together(log_n: np.ndarray, log_d: np.ndarray) -> bool:
    """True when log D is a linear function of log N across the runs (a D ∝ N^k schedule, or
    one of them constant), up to the slice tolerance: rounding D to whole batches leaves a
    schedule a schedule. Then N and D effects cannot be separated."""
    log_n, log_d = np.asarray(log_n, float), np.asarray(log_d, float)
    if log_n.size < 2 or np.ptp(log_n) == 0 or np.ptp(log_d) == 0:
        return True
    slope, intercept = np.polyfit(log_n, log_d, 1)
    return bool(np.max(np.abs(log_d - (slope * log_n + intercept))) <= np.log1p(SLICE_REL_TOL))
