"""`gammaray eval`: lm-evaluation-harness scores a grid's runs on the shipped offline tasks, in Ray
tasks, into MLflow and the run folders; the report shows them; a broken run spoils nothing."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.orchestrator.conftest import workspace, write_grid
from trainers.callbacks import read_jsonl

pytestmark = pytest.mark.slow

TASKS = ("gammaray_composite_seen", "gammaray_composite_heldout", "gammaray_facts")
LIMIT = 40


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A two-run grid, trained and scored on the shipped tasks once."""
    home = tmp_path_factory.mktemp("home")
    grid = write_grid(
        home,
        "downstream",
        base={"data.composite_fraction": 0.05, "train.seq_len": 64, "train.tokens": 10240},
        axes={"init.gamma": [0.5, 1.0]},
        resources={"cpus": 1},
    )
    env = {"GAMMARAY_HOME": str(home)}
    trained = run_cli("submit", str(grid), env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    done = run_cli(
        "eval", "--grid", "downstream", "--tasks", ",".join(TASKS), "--limit", str(LIMIT), "--json", env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return home, env, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_every_run_is_scored_into_mlflow_and_its_folder(scored):
    from mlflow.tracking import MlflowClient

    home, _, document, stderr = scored
    assert len(document["scored"]) == 2 and not document["failed"]
    assert "Traceback" not in stderr
    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    [experiment] = [e for e in client.search_experiments() if e.name == "downstream"]
    for run in client.search_runs([experiment.experiment_id]):
        run_id = run.data.tags["gammaray.run_id"]
        records = read_jsonl(home / "grids" / "downstream" / run_id / "downstream.jsonl")
        assert {r["task"] for r in records} == set(TASKS)
        for r in records:
            assert r["limit"] == LIMIT and r["step"] == 20  # the final step of 20
            assert run.data.metrics[f"eval/{r['task']}/{r['metric']}"] == pytest.approx(r["value"])
        scores = {(r["task"], r["metric"]): r["value"] for r in records}
        assert scores[("gammaray_composite_seen", "chance")] == pytest.approx(0.1)
        assert scores[("gammaray_composite_heldout", "chance")] == pytest.approx(0.5)
        assert scores[("gammaray_facts", "chance")] == pytest.approx(0.25)
        for task in TASKS:  # an accuracy over LIMIT documents
            assert round(scores[(task, "acc")] * LIMIT, 6) == int(round(scores[(task, "acc")] * LIMIT))


def test_a_second_eval_scores_nothing_again(scored):
    home, env, _, _ = scored
    files = sorted((home / "grids" / "downstream").glob("*/downstream.jsonl"))
    before = [f.read_text() for f in files]
    again = run_cli(
        "eval", "--grid", "downstream", "--tasks", TASKS[2], "--limit", str(LIMIT), "--json", env=env
    )
    assert again.returncode == 0, again.stderr[-2000:]
    document = json.loads(again.stdout.strip().splitlines()[-1])
    assert document["scored"] == {} and len(document["skipped"]) == 2
    assert [f.read_text() for f in files] == before


def test_the_report_shows_the_downstream_section(scored):
    from analysis.analyze import analyze
    from analysis.load import load_grid_runs
    from analysis.report.scaling import render_report

    home, _, _, _ = scored
    with workspace(home):
        html = render_report(
            analyze(load_grid_runs("downstream", f"sqlite:///{home}/mlflow.db"), n_bootstrap=20)
        )
    assert 'id="downstream"' in html and "Downstream evaluation" in html
    for task in TASKS:
        assert html.count(f">{task}</td>") == 2  # one row per group


def test_export_writes_every_finished_run_of_a_grid(scored, tmp_path):
    _, env, _, _ = scored
    done = run_cli("export", "--grid", "downstream", "--out", str(tmp_path / "hf"), "--json", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    exported = json.loads(done.stdout.strip().splitlines()[-1])["exported"]
    assert len(exported) == 2
    for folder in exported:
        assert {"config.json", "model.safetensors", "tokenizer.json", "gammaray.json"} <= {
            p.name for p in Path(folder).iterdir()
        }


def test_a_run_that_cannot_be_scored_is_named_and_the_others_are_scored(scored, tmp_path):
    home, env, _, _ = scored
    folders = sorted((home / "grids" / "downstream").glob("*/summary.json"))
    broken = folders[0].parent
    saved = tmp_path / "checkpoints"
    shutil.copytree(broken / "checkpoints", saved)
    shutil.rmtree(broken / "checkpoints")
    try:
        done = run_cli(
            "eval", "--grid", "downstream", "--tasks", TASKS[0], "--limit", "10", "--json", env=env
        )
    finally:
        shutil.rmtree(broken / "checkpoints", ignore_errors=True)
        shutil.copytree(saved, broken / "checkpoints")
    assert done.returncode == 1
    document = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        list(document["failed"]) == [broken.name]
        and "no intact checkpoint" in document["failed"][broken.name]
    )
    assert list(document["scored"]) == [folders[1].parent.name]
    assert f"{broken.name}: not scored: ExportError" in done.stderr


def test_eval_lists_its_tasks_and_refuses_unknown_ones(tmp_path):
    listed = run_cli("eval", "--list-tasks")
    assert listed.returncode == 0 and listed.stdout.split() == list(TASKS)
    wrong = run_cli("eval", "--grid", "any", "--tasks", "gammaray_fact")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        "gammaray: error: --tasks: unknown task 'gammaray_fact' (the shipped tasks are "
        "gammaray_composite_seen, gammaray_composite_heldout, gammaray_facts)"
    ]
