"""Degenerate inputs give a clear message and a partial result where possible, never a traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.analyze import analyze
from analysis.errors import AnalysisError
from analysis.fitting.bootstrap import bootstrap_fit
from analysis.fitting.fit import fit_power_law
from analysis.fitting.isoflop import fit_isoflop
from analysis.load import runs_from_records


def test_too_few_points_for_joint_is_not_ok():
    result = fit_power_law([1e6, 1e7, 1e8, 1e6], [1e9, 1e10, 1e11, 1e10], [3.0, 2.5, 2.4, 2.8], "joint")
    assert not result.ok
    assert any("4 points for 5 parameters" in m for m in result.messages)


def test_joint_with_two_values_of_an_axis_is_not_identifiable():
    result = fit_power_law(
        [1e6, 1e7, 1e8] * 2, [1e9] * 3 + [1e10] * 3, [3.0, 2.5, 2.4, 2.8, 2.3, 2.2], "joint"
    )
    assert not result.ok
    assert any("only 2 distinct D" in m for m in result.messages)


def test_one_n_only_cannot_fit_l_of_n():
    result = fit_power_law([1e7] * 4, [1e9, 2e9, 4e9, 8e9], [3.0, 2.8, 2.6, 2.5], "n")
    assert not result.ok
    assert any("one N only" in m for m in result.messages)
    assert np.isnan(result.params["alpha"])


def test_joint_with_one_n_falls_back_to_l_of_d_as_a_partial_result():
    tokens = np.logspace(9, 11, 6)
    loss = 2.0 + 400.0 * tokens**-0.3
    result = fit_power_law([1e8] * 6, tokens, loss, "joint")
    assert not result.ok
    assert result.params["beta"] == pytest.approx(0.3, abs=0.02)
    assert np.isnan(result.params["alpha"])
    assert any("one N only" in m and "L(D)" in m for m in result.messages)


def test_two_distinct_n_give_a_pure_power_law_with_e_fixed():
    result = fit_power_law([1e7, 1e7, 1e8, 1e8], [1e9] * 4, [3.0, 3.02, 2.5, 2.48], "n")
    assert result.ok and result.fixed == ("E",)
    assert result.params["E"] == 0.0 and result.params["alpha"] > 0
    assert any("E fixed at 0" in m for m in result.messages)
    # Two distinct sizes for two parameters: resampling cannot measure uncertainty, so no CI.
    booted = bootstrap_fit(result, 20)
    assert booted.ci == {} and booted.n_bootstrap == 0
    assert any("no residual degrees of freedom" in m for m in booted.messages)


def test_nan_and_non_positive_losses_are_dropped_with_their_run_ids():
    n = np.logspace(6, 9, 8)
    loss = 2.0 + 100.0 * n**-0.3
    loss[2], loss[5] = np.nan, -1.0
    result = fit_power_law(n, None, loss, "n", run_ids=[f"r{i}" for i in range(8)])
    assert result.ok and result.n_points == 6
    message = next(m for m in result.messages if "dropped" in m)
    assert "2 point(s)" in message and "r2" in message and "r5" in message


def test_all_equal_losses_report_e_and_no_exponent():
    result = fit_power_law(np.logspace(6, 9, 5), None, [3.0] * 5, "n")
    assert not result.ok
    assert result.params["E"] == 3.0 and np.isnan(result.params["alpha"])
    assert any("equal" in m for m in result.messages)


def test_empty_and_all_nan_inputs_do_not_raise():
    assert not fit_power_law([], [], [], "joint").ok
    assert not fit_power_law([1e6, 1e7], [1e9, 1e9], [np.nan, np.nan], "n").ok
    assert not fit_isoflop([1e6, 1e7], [1e9, 1e8], [6e15, 6e15], [3.0, 2.9]).ok


def _table(rows: list[dict]):
    return runs_from_records(rows, name="t", source="test")


def test_analysis_without_finished_runs_is_an_error_naming_the_grid():
    rows = [{"run_id": "a", "state": "failed", "N": 1e6, "D": 1e9, "loss": np.nan}]
    with pytest.raises(AnalysisError, match="t: no finished runs"):
        analyze(_table(rows), n_bootstrap=0)


def test_single_scale_grid_fits_nothing_but_explains_why():
    rows = [
        {"run_id": f"r{i}", "state": "finished", "N": 1e6, "D": 1e9, "loss": 3.0 + 0.01 * i} for i in range(3)
    ]
    result = analyze(_table(rows), n_bootstrap=0)
    assert not result.any_ok
    assert any("same N and the same D" in m for m in result.messages)


def test_a_degenerate_group_does_not_stop_the_others():
    rows = []
    for i, n in enumerate(np.logspace(6, 9, 6)):
        rows.append(
            {
                "run_id": f"a{i}",
                "state": "finished",
                "gamma": 1.0,
                "N": n,
                "D": 1e9,
                "loss": 2.0 + 100 * n**-0.3,
            }
        )
    rows.append({"run_id": "b0", "state": "finished", "gamma": 0.5, "N": 1e6, "D": 1e9, "loss": 3.1})
    result = analyze(_table(rows), by=["gamma"], forms=["n"], n_bootstrap=0)
    by_group = {f.group["gamma"]: f for f in result.fits}
    assert by_group[1.0].ok and not by_group[0.5].ok
    assert result.any_ok


def test_unknown_grouping_column_names_the_column():
    rows = [{"run_id": "a", "state": "finished", "N": 1e6, "D": 1e9, "loss": 3.0}]
    with pytest.raises(AnalysisError, match="'lr'"):
        analyze(_table(rows), by=["lr"], n_bootstrap=0)


def test_unknown_form_is_an_error():
    rows = [{"run_id": "a", "state": "finished", "N": 1e6, "D": 1e9, "loss": 3.0}]
    with pytest.raises(AnalysisError, match="--form"):
        analyze(_table(rows), forms=["cubic"], n_bootstrap=0)


def test_non_numeric_values_in_a_csv_become_dropped_points(tmp_path):
    from analysis.load import load_csv

    frame = pd.DataFrame(
        {"N": [1e6, 1e7, 1e8, 1e9, "oops"], "D": [1e9] * 5, "loss": [3.0, 2.6, 2.4, 2.3, 2.2]}
    )
    path = tmp_path / "x.csv"
    frame.to_csv(path, index=False)
    result = analyze(load_csv(path), forms=["n"], n_bootstrap=0)
    assert result.fits[0].ok and result.fits[0].n_points == 4
    assert any("non-positive N" in m for m in result.fits[0].messages)
