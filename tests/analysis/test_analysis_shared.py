"""Fits with one E for several groups: recovered truth, a narrower difference, paired resampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from analysis.fitting.bootstrap import bootstrap_fit, cell_ids, paired_weights, percentile_ci
from analysis.fitting.fit import fit_power_law, loss_n
from analysis.fitting.objective import Layout, huber_lse_objective
from analysis.fitting.shared import bootstrap_shared, fit_shared

SIZES = np.geomspace(2e4, 2e6, 7)
TRUTH = {"E": 2.0, "fast": (60.0, 0.40), "slow": (25.0, 0.30)}


def _groups(seed: int, noise: float = 0.004):
    """Two groups that share E = 2 and differ in α (0.40 against 0.30), one run per size."""
    rng = np.random.default_rng(seed)
    fits = []
    for name in ("fast", "slow"):
        a, alpha = TRUTH[name]
        loss = loss_n(SIZES, TRUTH["E"], a, alpha) * np.exp(rng.normal(0, noise, SIZES.size))
        fits.append(
            fit_power_law(
                SIZES,
                np.full(SIZES.size, 1e9),
                loss,
                "n",
                run_ids=[f"{name}{i}" for i in range(SIZES.size)],
                group={"setting": name},
            )
        )
    return fits


def test_gradient_of_a_two_group_layout_matches_finite_differences():
    rng = np.random.default_rng(3)
    log_x = rng.uniform(9, 15, size=(30, 2))
    log_loss = np.log(rng.uniform(2, 4, size=30))
    weights = rng.integers(0, 3, size=30).astype(float) + 0.5
    layout = Layout(np.repeat([0, 1, 2], 10), 3)
    theta = rng.normal(size=layout.size(2))
    theta[2::2] = rng.uniform(0.1, 0.6, 6)  # exponents
    theta[1::2] += 4.0
    f = lambda t: huber_lse_objective(t, log_x, log_loss, weights, layout)[0]  # noqa: E731
    np.testing.assert_allclose(
        huber_lse_objective(theta, log_x, log_loss, weights, layout)[1],
        approx_fprime(theta, f, 1e-7),
        rtol=1e-4,
        atol=1e-5,
    )


def test_shared_fit_recovers_each_exponent_and_one_e():
    fast, slow = fit_shared(_groups(seed=1))
    assert fast.e_mode == slow.e_mode == "shared"
    assert fast.params["E"] == slow.params["E"] == pytest.approx(TRUTH["E"], rel=0.05)
    assert fast.params["alpha"] == pytest.approx(0.40, abs=0.04)
    assert slow.params["alpha"] == pytest.approx(0.30, abs=0.04)
    assert fast.extra["shared_with"] == ["setting=slow"]


def test_shared_e_gives_a_narrower_interval_on_the_difference_than_per_group_fits():
    """The point of sharing E: the exponents stop trading off against two separate E's."""
    narrower = 0
    for seed in range(4):
        groups = _groups(seed)
        shared = bootstrap_shared(fit_shared(groups), 400, seed=seed)
        alone = [bootstrap_fit(g, 400, seed=seed + 10 * i) for i, g in enumerate(groups)]
        shared_ci = percentile_ci(shared[0].samples["alpha"] - shared[1].samples["alpha"])
        alone_ci = percentile_ci(alone[0].samples["alpha"] - alone[1].samples["alpha"])
        assert shared_ci[0] < 0.10 < shared_ci[1], (
            f"seed {seed}: the shared CI {shared_ci} misses the true difference"
        )
        narrower += (shared_ci[1] - shared_ci[0]) < (alone_ci[1] - alone_ci[0])
    assert narrower >= 3


def test_known_e_recovers_the_exponents_with_e_held():
    fast, slow = bootstrap_shared(fit_shared(_groups(seed=2), e_known=TRUTH["E"]), 300, seed=0)
    assert fast.e_mode == "known" and fast.fixed == ("E",) and fast.params["E"] == TRUTH["E"]
    assert "E" not in fast.ci
    for fit, alpha in ((fast, 0.40), (slow, 0.30)):
        lo, hi = fit.ci["alpha"]
        assert lo < alpha < hi and hi - lo < 0.1


def test_joint_draws_are_paired_across_groups():
    fast, slow = bootstrap_shared(fit_shared(_groups(seed=3)), 200, seed=0)
    np.testing.assert_array_equal(fast.samples["E"], slow.samples["E"])  # one E per resample
    assert fast.extra["resampled"] == "cells"


def test_paired_weights_resample_cells_or_seeds_within_cells():
    n = np.repeat([1e4, 1e5, 1e6], 4)  # 3 cells × (2 groups × 2 seeds)
    cells = cell_ids(n, np.full(n.size, 1e9))
    seeds = np.tile([0, 0, 1, 1], 3)
    weights, unit = paired_weights(cells, seeds, 50, np.random.default_rng(0))
    assert unit == "seeds within cells"
    for c in range(3):  # every cell keeps its two seed slots, and both groups' runs of a seed move together
        block = weights[:, cells == c]
        assert np.all(block.sum(axis=1) == 4)
        np.testing.assert_array_equal(block[:, 0], block[:, 1])
    weights, unit = paired_weights(cells, None, 50, np.random.default_rng(0))
    assert unit == "cells" and np.all(weights.sum(axis=1) == n.size)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 3])  # a cell is drawn whole
