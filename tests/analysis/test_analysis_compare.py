"""Comparisons: the right verdict, no verdict within noise, multipliers and crossovers by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.analyze import analyze
from analysis.fitting.compare import compare_pair
from analysis.fitting.fit import FitResult
from analysis.load import load_csv
from analysis.synthetic import synthetic_runs


def _fit(
    group: dict, params: dict, n_max: float = 1e9, form: str = "n", samples: dict | None = None
) -> FitResult:
    n = np.geomspace(1e7, n_max, 5)
    full = {"E": np.nan, "A": np.nan, "alpha": np.nan, "B": np.nan, "beta": np.nan, **params}
    return FitResult(
        form=form,
        group=group,
        slice={},
        params=full,
        ok=True,
        messages=(),
        n_points=5,
        n_params=n,
        tokens=np.full(5, 1e10),
        train_flops=6 * n * 1e10,
        loss=np.ones(5),
        samples=samples or {},
    )


def test_two_groups_with_different_exponents_get_the_right_verdict(two_gamma_csv):
    result = analyze(load_csv(two_gamma_csv), forms=["joint"], n_bootstrap=200)
    alpha = next(c for c in result.comparisons if c.exponent == "alpha")
    assert alpha.faster == {"gamma": 1.0}
    assert alpha.excludes_zero and alpha.difference_ci[0] > 0
    assert alpha.difference == pytest.approx(0.10, abs=0.04)
    assert alpha.verdict.startswith("γ=1.0 descends faster in N")
    beta = next(c for c in result.comparisons if c.exponent == "beta")  # same true β in both groups
    assert beta.faster is None and not beta.excludes_zero
    assert beta.verdict.startswith("No significant difference in β")


def test_equal_exponents_within_noise_give_no_verdict(tmp_path):
    truth = {"E": 1.8, "A": 400.0, "alpha": 0.3, "B": 400.0, "beta": 0.3}
    frame = synthetic_runs(
        {1.0: truth, 0.5: truth},
        n_params=np.logspace(7, 10, 5),
        tokens=np.logspace(9, 12, 4),
        noise=0.01,
        seed=21,
    )
    path = tmp_path / "same.csv"
    frame.to_csv(path, index=False)
    result = analyze(load_csv(path), forms=["joint"], n_bootstrap=200)
    assert result.comparisons and all(c.faster is None for c in result.comparisons)
    assert all("No significant difference" in c.verdict for c in result.comparisons)


def test_no_bootstrap_means_no_verdict():
    fast, slow = (
        _fit({"g": 1}, {"E": 2.0, "A": 400.0, "alpha": 0.4}),
        _fit({"g": 0}, {"E": 2.0, "A": 400.0, "alpha": 0.3}),
    )
    comparison = compare_pair(fast, slow, "alpha")
    assert comparison.faster is None and comparison.difference_ci is None
    assert "no verdict" in comparison.verdict


def test_multiplier_solves_the_slower_curve_by_hand():
    # Same E and A; the faster curve at N = 1e9 has loss 2 + 400·1e9^-0.4. The slower one
    # reaches it where 400·N^-0.3 = 400·1e9^-0.4, i.e. N = 1e9^(4/3): 1e12 = 1000× more.
    draws = {"E": np.full(50, 2.0), "A": np.full(50, 400.0)}
    rng = np.random.default_rng(0)
    fast = _fit(
        {"g": 1},
        {"E": 2.0, "A": 400.0, "alpha": 0.4},
        samples={**draws, "alpha": 0.4 + rng.normal(0, 0.005, 50)},
    )
    slow = _fit(
        {"g": 0},
        {"E": 2.0, "A": 400.0, "alpha": 0.3},
        samples={**draws, "alpha": 0.3 + rng.normal(0, 0.005, 50)},
    )
    comparison = compare_pair(slow, fast, "alpha")
    assert comparison.faster == {"g": 1}
    (multiplier,) = comparison.multipliers
    assert multiplier.at == pytest.approx(1e9)
    assert multiplier.value == pytest.approx(1000.0, rel=1e-6)
    assert multiplier.ci[0] < 1000.0 < multiplier.ci[1]
    assert "needs 1e+03× more parameters" in comparison.verdict


def test_multiplier_is_infinite_when_the_slower_setting_plateaus_higher():
    draws = np.full(20, 1.0)
    fast = _fit(
        {"g": 1},
        {"E": 2.0, "A": 400.0, "alpha": 0.4},
        samples={"E": 2.0 * draws, "A": 400 * draws, "alpha": np.linspace(0.39, 0.41, 20)},
    )
    slow = _fit(
        {"g": 0},
        {"E": 2.5, "A": 400.0, "alpha": 0.3},
        samples={"E": 2.5 * draws, "A": 400 * draws, "alpha": np.linspace(0.29, 0.31, 20)},
    )
    (multiplier,) = compare_pair(fast, slow, "alpha").multipliers
    assert multiplier.value == math.inf
    assert "never reaches" in multiplier.message


def test_crossover_is_found_where_the_curves_meet():
    # Choose the slower curve's A so that 2.2 + 1000·N^-0.4 = 2 + A·N^-0.2 at N = 1e8 (inside the data).
    n0 = 1e8
    a_slow = (0.2 + 1000.0 * n0**-0.4) * n0**0.2
    one = _fit({"g": 1}, {"E": 2.2, "A": 1000.0, "alpha": 0.4}, n_max=1e10)
    two = _fit({"g": 0}, {"E": 2.0, "A": a_slow, "alpha": 0.2}, n_max=1e10)
    crossings = compare_pair(one, two, "alpha").crossovers
    hit = [c for c in crossings if c.at == pytest.approx(n0, rel=1e-6)]
    assert len(hit) == 1 and hit[0].within_range
    assert hit[0].loss == pytest.approx(2.2 + 1000.0 * n0**-0.4)
    assert all(not c.within_range for c in crossings if c not in hit)


def test_grouping_by_any_column(tmp_path):
    frame = synthetic_runs(
        {"a": {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 400.0, "beta": 0.28}},
        n_params=np.logspace(7, 10, 4),
        tokens=np.logspace(9, 12, 4),
        seed=2,
        group_column="wd",
    )
    path = tmp_path / "wd.csv"
    frame.to_csv(path, index=False)
    table = load_csv(path)
    assert table.default_by == ()  # no gamma column: no grouping by default
    result = analyze(table, by=["wd"], forms=["joint"], n_bootstrap=0)
    assert [f.group for f in result.fits] == [{"wd": "a"}]


def test_many_groups_get_one_summary_line_for_their_gaps_not_one_per_pair(tmp_path):
    from analysis.summary import summary_lines

    truth = {"E": 1.8, "A": 350.0, "alpha": 0.33, "B": 600.0, "beta": 0.29}
    frame = synthetic_runs(
        {g: truth for g in (0.5, 0.7, 0.9, 1.1)}, n_params=np.logspace(6, 8, 3), tokens=[1e9], seed=1
    )
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    result = analyze(load_csv(path), n_bootstrap=0)
    assert len(result.gaps) == 6
    lines = summary_lines(result)
    assert (
        "6 pairs of groups compared cell by cell: the report's gap section and fit.json list them." in lines
    )
    assert not any("has the lower loss in" in line for line in lines)
