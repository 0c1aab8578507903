"""`gammaray eval`: lm-evaluation-harness scores a grid's runs on the shipped offline tasks, in Ray
tasks, into MLflow and the run folders; the report shows them; a broken run spoils nothing."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.orchestrator.conftest import connected, fresh_store, start_cluster, submit, workspace, write_grid
from trainers.callbacks import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

TASKS = ("gammaray_composite_seen", "gammaray_composite_heldout", "gammaray_facts")
LIMIT = 40


@pytest.fixture(scope="module")
def scored(tmp_path_factory, mlflow_template):
    """A two-run grid, trained and scored on the shipped tasks once, on one Ray cluster for the
    module (the scoring tasks run on it as they would on any cluster)."""
    from orchestrator.evaluate import evaluate_grid

    home = tmp_path_factory.mktemp("home")
    fresh_store(mlflow_template, home / "mlflow.db")
    grid = write_grid(
        home,
        "downstream",
        base={"data.composite_fraction": 0.05, "train.seq_len": 64, "train.tokens": 10240},
        axes={"init.gamma": [0.5, 1.0]},
        resources={"cpus": 1},
    )
    ray_cluster = start_cluster(num_cpus=2)
    try:
        with connected(ray_cluster.address):
            trained = submit(grid, home, address=ray_cluster.address)
            assert set(trained.states.values()) == {"finished"}
            lines: list[str] = []
            with workspace(home):
                outcome = evaluate_grid(
                    "downstream", TASKS, trained.tracking_uri, limit=LIMIT, say=lines.append
                )
                yield home, trained.tracking_uri, outcome, lines
    finally:
        ray_cluster.stop()


def test_every_run_is_scored_into_mlflow_and_its_folder(scored):
    from mlflow.tracking import MlflowClient

    home, uri, outcome, lines = scored
    assert len(outcome.scored) == 2 and not outcome.failed and not outcome.not_applicable
    assert lines[0] == "grid downstream: 2 finished runs, 0 already scored, scoring 2 on " + ", ".join(TASKS)
    assert all(f"{TASKS[0]} acc " in line and "(chance 0.1)" in line for line in lines[1:])
    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "downstream"]
    for run in client.search_runs([experiment.experiment_id]):
        run_id = run.data.tags["gammaray.run_id"]
        records = read_jsonl(home / "grids" / "downstream" / run_id / "downstream.jsonl")
        assert records == outcome.scored[run_id]
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
    home, uri, _, _ = scored
    files = sorted((home / "grids" / "downstream").glob("*/downstream.jsonl"))
    before = [f.read_text() for f in files]
    again = run_cli(
        "eval", "--grid", "downstream", "--tasks", TASKS[2], "--limit", str(LIMIT), "--tracking-uri", uri, "--json",
        env={"GAMMARAY_HOME": str(home)},
    )  # fmt: skip
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
    home = scored[0]
    done = run_cli(
        "export",
        "--grid",
        "downstream",
        "--out",
        str(tmp_path / "hf"),
        "--json",
        env={"GAMMARAY_HOME": str(home)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exported = json.loads(done.stdout.strip().splitlines()[-1])["exported"]
    assert len(exported) == 2
    for folder in exported:
        assert {"config.json", "model.safetensors", "tokenizer.json", "gammaray.json"} <= {
            p.name for p in Path(folder).iterdir()
        }


def test_a_run_that_cannot_be_scored_is_named_and_the_others_are_scored(scored, tmp_path):
    from orchestrator.evaluate import evaluate_grid

    home, uri, _, _ = scored
    folders = sorted(p.parent for p in (home / "grids" / "downstream").glob("*/summary.json"))
    broken, whole = folders
    saved = tmp_path / "checkpoints"
    shutil.move(broken / "checkpoints", saved)
    try:
        with workspace(home):  # a new --limit: both runs are due
            outcome = evaluate_grid("downstream", TASKS[:1], uri, limit=10)
    finally:
        shutil.move(saved, broken / "checkpoints")
    assert list(outcome.failed) == [broken.name]
    assert (
        outcome.failed[broken.name].startswith("ExportError: ")
        and "no intact checkpoint" in outcome.failed[broken.name]
    )
    assert list(outcome.scored) == [whole.name]


def test_eval_lists_its_tasks_and_refuses_unknown_ones(tmp_path):
    listed = run_cli("eval", "--list-tasks")
    assert listed.returncode == 0 and listed.stdout.split() == list(TASKS)
    wrong = run_cli("eval", "--grid", "any", "--tasks", "gammaray_fact")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        "gammaray: error: --tasks: unknown task 'gammaray_fact' (the shipped tasks are "
        "gammaray_composite_seen, gammaray_composite_heldout, gammaray_facts)"
    ]
