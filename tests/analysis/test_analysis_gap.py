"""The model-free comparison (paired gaps and their trend), the verdict built on it, the hold-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.analyze import analyze
from analysis.fitting.gap import compare_gaps
from analysis.fitting.verdict import decide
from analysis.load import runs_from_records

SIZES = (1e4, 3e4, 1e5, 3e5, 1e6)


def _frame(
    gap_per_decade: float, offset: float = 0.1, seeds: int = 1, noise: float = 0.0, tokens=(1e8,)
) -> pd.DataFrame:
    """Group "a" is lower than "b" by ``offset + gap_per_decade·log10(N / 1e4)`` nats in every cell."""
    rng = np.random.default_rng(0)
    rows = []
    for n in SIZES:
        for d in tokens:
            for seed in range(seeds):
                base = 3.0 * (n / 1e4) ** -0.2 + 1.5
                gap = offset + gap_per_decade * np.log10(n / 1e4)
                for group, loss in (("a", base), ("b", base + gap)):
                    rows.append(
                        {
                            "g": group,
                            "N": n,
                            "D": d,
                            "FLOPs": 6 * n * d,
                            "seed": seed,
                            "loss": loss + rng.normal(0, noise),
                        }
                    )
    return pd.DataFrame(rows)


def test_gap_and_trend_are_recovered_exactly_without_noise():
    (gap,) = compare_gaps(_frame(0.05), ["g"])
    assert gap.first == {"g": "a"} and gap.first_lower == 5 and gap.second_lower == 0
    assert [c.gap for c in gap.cells] == pytest.approx([0.1 + 0.05 * np.log10(n / 1e4) for n in SIZES])
    trend = gap.headline_trend
    assert trend.axis == "N" and trend.slope == pytest.approx(0.05)
    assert gap.faster == {"g": "a"}


def test_seeds_give_each_cell_an_interval_and_the_trend_a_ci():
    (gap,) = compare_gaps(_frame(0.03, seeds=3, noise=0.005), ["g"], seed_column="seed")
    assert all(c.n_seeds == 3 and c.ci is not None and c.ci[0] < c.gap < c.ci[1] for c in gap.cells)
    lo, hi = gap.headline_trend.ci
    assert lo < 0.03 < hi and lo > 0


def test_a_flat_gap_is_better_not_faster():
    (gap,) = compare_gaps(_frame(0.0, noise=0.002), ["g"])
    assert gap.first_lower == 5 and gap.faster is None
    verdict = decide([{"g": "a"}, {"g": "b"}], [], [gap])
    assert verdict.faster is None and not verdict.significant
    assert "g=a is lower in every cell" in verdict.text and "better at these scales" in verdict.text


def test_the_gap_trend_decides_when_no_exponent_does():
    (gap,) = compare_gaps(_frame(0.04, noise=0.002), ["g"])
    verdict = decide([{"g": "a"}, {"g": "b"}], [], [gap])
    assert verdict.faster == "g=a" and verdict.basis == "gap_trend" and verdict.significant


def test_a_higher_curve_that_only_closes_in_gets_no_verdict():
    (gap,) = compare_gaps(_frame(-0.02, offset=0.2, noise=0.001), ["g"])
    assert gap.first == {"g": "a"} and gap.faster == {"g": "b"}  # b closes in: the trend favours it
    verdict = decide([{"g": "a"}, {"g": "b"}], [], [gap])
    assert verdict.faster is None and "closes in" in verdict.text


def test_n_and_d_slopes_are_separated_on_a_full_grid():
    frame = _frame(0.05, tokens=(1e7, 1e8, 1e9))
    (gap,) = compare_gaps(frame, ["g"])
    by_axis = {t.axis: t for t in gap.trends}
    assert by_axis["N"].controls == ("D",) and by_axis["N"].slope == pytest.approx(0.05)
    assert by_axis["D"].slope == pytest.approx(0.0, abs=1e-9)


def _two_laws(seed: int):
    truth = {"a": (60.0, 0.40), "b": (25.0, 0.30)}
    rng = np.random.default_rng(seed)
    records = []
    for group, (a, alpha) in truth.items():
        for i, n in enumerate(np.geomspace(2e4, 2e6, 6)):
            loss = (2.0 + a * n**-alpha) * np.exp(rng.normal(0, 0.003))
            records.append(
                {
                    "run_id": f"{group}{i}",
                    "state": "finished",
                    "g": group,
                    "N": n,
                    "D": 1e9,
                    "FLOPs": 6e9 * n,
                    "loss": loss,
                    "entropy_per_token": 2.0,
                }
            )
    return runs_from_records(records, name="t", source="test")


def test_analysis_holds_out_the_largest_n_and_predicts_it():
    result = analyze(_two_laws(4), by=["g"], forms=["n"], n_bootstrap=200, e_mode="known")
    assert result.holdout_mode == "largest-n" and result.e_known == 2.0
    assert len(result.holdout) == 2
    for p in result.holdout:
        assert p.n_fitted == 5 and p.n_params == pytest.approx(2e6)
        assert abs(p.relative_error) < 0.02
    assert result.verdict.faster == "g=a" and result.verdict.basis == "exponent"


def test_prediction_intervals_cover_the_held_out_runs_about_as_often_as_they_claim():
    inside = [
        p.inside
        for seed in range(10)
        for p in analyze(_two_laws(seed), by=["g"], forms=["n"], n_bootstrap=200, e_mode="known").holdout
    ]
    assert len(inside) == 20 and sum(inside) >= 16, f"95% intervals held {sum(inside)} of 20 held-out runs"
