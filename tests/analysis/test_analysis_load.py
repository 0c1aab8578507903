"""Loading runs from CSV files and from the MLflow layout the orchestrator writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.load import load_csv, load_grid_runs, parse_param


def test_csv_missing_column_names_it(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": [1e6], "loss": [3.0]}).to_csv(path, index=False)
    with pytest.raises(AnalysisError, match=r"runs.csv: missing column 'D'"):
        load_csv(path)


def test_csv_unreadable_or_absent_names_the_file(tmp_path):
    with pytest.raises(AnalysisError, match="nope.csv: no such file"):
        load_csv(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(AnalysisError, match="empty.csv: cannot read CSV"):
        load_csv(empty)


def test_csv_defaults_and_optional_columns(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame(
        {
            "N": [1e6, 1e7],
            "D": [1e9, 1e9],
            "loss": [3.0, 2.5],
            "gamma": [0.5, 1.0],
            "state": ["finished", "Diverged"],
            "reason": ["", "NaN loss"],
        }
    ).to_csv(path, index=False)
    table = load_csv(path)
    assert table.default_by == ("gamma",)
    assert list(table.runs["run_id"]) == ["row2", "row3"]
    assert list(table.runs["state"]) == ["finished", "diverged"]
    assert table.runs["FLOPs"].tolist() == [6e15, 6e16]
    assert len(table.finished) == 1 and table.histories.empty


def test_csv_unknown_state_is_an_error(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": [1e6], "D": [1e9], "loss": [3.0], "state": ["exploded"]}).to_csv(path, index=False)
    with pytest.raises(AnalysisError, match="column 'state': unknown value 'exploded'"):
        load_csv(path)


@pytest.mark.parametrize(
    "text,value", [("0.5", 0.5), ("3", 3), ("1e9", 1e9), ("True", True), ("None", None), ("gamma", "gamma")]
)
def test_params_come_back_from_strings(text, value):
    assert parse_param(text) == value and type(parse_param(text)) is type(value)


def test_grid_loads_as_a_tidy_table(grid_store):
    table = load_grid_runs("smoke", grid_store)
    runs = table.runs
    assert len(runs) == 32 and len(table.finished) == 30
    assert list(runs.columns[:8]) == [
        "run_id",
        "state",
        "reason",
        "N",
        "N_non_embedding",
        "D",
        "FLOPs",
        "loss",
    ]
    assert runs["N"].dtype.kind in "if" and runs["init.gamma"].dtype.kind == "f"
    assert table.default_by == ("init.gamma",)
    assert {"init.gamma", "model.preset", "train.tokens"} <= set(table.axes)
    assert "optim.weight_decay" not in table.axes  # constant across the grid
    failed = runs.set_index("run_id").loc["g1.0-failed"]
    assert (
        failed["state"] == "failed" and failed["reason"] == "CUDA out of memory" and np.isnan(failed["loss"])
    )
    diverged = runs.set_index("run_id").loc["g0.5-diverged"]
    assert diverged["state"] == "diverged" and diverged["loss"] == 11.0


def test_grid_final_loss_is_the_last_eval_and_histories_are_kept(grid_store):
    table = load_grid_runs("smoke", grid_store)
    run_id = "g1.0-n2e+07-d5e+09"
    final = table.runs.set_index("run_id").loc[run_id, "loss"]
    evals = table.histories[
        (table.histories["run_id"] == run_id) & (table.histories["metric"] == "eval/loss")
    ]
    assert list(evals["step"]) == [100, 200, 400, 800]
    assert final == pytest.approx(evals["value"].iloc[-1])
    # Loss and token histories, and the diag/, tokens/, probe/ namespaces; not throughput.
    assert set(table.histories["metric"]) == {"train/loss", "eval/loss", "tokens", "diag/cosine_mean"}


def test_unknown_grid_and_missing_store_are_one_line_errors(grid_store, tmp_path):
    with pytest.raises(AnalysisError, match="unknown grid 'nope'.*smoke"):
        load_grid_runs("nope", grid_store)
    with pytest.raises(AnalysisError, match="no tracking store at"):
        load_grid_runs("smoke", f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()  # loading never creates a store
