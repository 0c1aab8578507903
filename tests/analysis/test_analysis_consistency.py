"""Runs that do not descend with scale are flagged before a law is trusted through them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from analysis.analyze import analyze
from analysis.cli import fit_command
from analysis.consistency import scale_inversions
from analysis.errors import is_warning
from analysis.load import load_csv
from analysis.summary import summary_lines
from analysis.synthetic import synthetic_runs

TRUTH = {"E": 1.8, "A": 350.0, "alpha": 0.33, "B": 600.0, "beta": 0.29}


def ladder(noise: float = 0.0) -> pd.DataFrame:
    return synthetic_runs(
        {0.5: TRUTH, 1.0: TRUTH},
        n_params=np.logspace(5, 7, 3),
        tokens=np.logspace(7, 9, 3),
        noise=noise,
        seed=3,
    )


def test_a_clean_ladder_has_no_inversion_and_no_caution(tmp_path):
    path = tmp_path / "runs.csv"
    ladder(noise=0.002).to_csv(path, index=False)
    result = analyze(load_csv(path), forms=["n"], n_bootstrap=0)  # one cheap form: the check comes first
    assert result.inversions == ()
    assert not any("ends higher" in m for m in result.messages)
    assert not any(line.startswith("Caution") for line in summary_lines(result))


def test_a_larger_cell_that_ends_higher_is_named_in_a_warning_the_summary_and_fit_json(tmp_path):
    frame = ladder()
    # The largest model at the largest budget of γ = 1 ends 5% above its smaller neighbours.
    worst = frame[(frame["gamma"] == 1.0)].sort_values(["N", "D"]).index[-1]
    frame.loc[worst, "loss"] = frame.loc[frame["gamma"] == 1.0, "loss"].max() * 1.05
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    result = analyze(load_csv(path), forms=["n"], n_bootstrap=0)
    assert {i.group["gamma"] for i in result.inversions} == {1.0}
    assert all(i.larger[:2] == (1e7, 1e9) for i in result.inversions)
    assert len(result.inversions) == 8  # every other cell of γ = 1 is smaller in N and D
    (note,) = [m for m in result.messages if "ends higher" in m]
    assert is_warning(note) and note.startswith("warning: γ=1.0: in 8 of 27 pairs of cells")
    assert "N=10M, D=1B" in note
    assert any(line.startswith("Caution: in 8 pair(s)") for line in summary_lines(result))

    document = CliRunner().invoke(
        fit_command, ["--csv", str(path), "--form", "n", "--bootstrap", "0", "--json"]
    )
    assert document.exit_code == 0, document.output
    inversions = json.loads(document.output.strip().splitlines()[-1])["inversions"]
    assert len(inversions) == 8 and inversions[0]["group"] == "γ=1.0" and inversions[0]["rise"] > 0.01


def test_a_rise_within_the_tolerance_is_seed_noise_not_an_inversion():
    runs = pd.DataFrame({"N": [1e5, 1e6], "D": [1e7, 1e7], "loss": [3.0, 3.02]})
    assert scale_inversions(runs, [])[0] == []
    assert len(scale_inversions(runs, [], tolerance=0.005)[0]) == 1
