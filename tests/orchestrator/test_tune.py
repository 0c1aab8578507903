"""``gammaray tune``: real Optuna studies whose trials train tiny models on a real Ray cluster.

One two-CPU cluster serves the module; this process is its driver (the command reuses the
connection, as it would an existing cluster). The search is the tiny preset's learning rate on
the test config (``TINY``: 78 steps, a second or two per run on one core).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from analysis.tune_rule import TunedGroup, fit_size_rules, power_law_fit
from orchestrator.cli.main import main
from orchestrator.errors import GridError
from orchestrator.grids.parse import load_grid
from orchestrator.tuning.driver import objective
from orchestrator.tuning.plan import make_plan
from orchestrator.tuning.studies import PRUNE_WARMUP
from orchestrator.worker import read_attempts, train_point
from tests.orchestrator.conftest import connected, start_cluster, write_grid
from trainers.run_folder import workspace_dir

# Starts Ray clusters: one xdist worker runs every such module, one after another (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ray")

REPO = Path(__file__).resolve().parents[2]
LR_RANGE = "log:1e-4:3e-2"
LOSS_MARGIN = 0.03  # ten trials must land within 3 % of a dense scan's best loss


@pytest.fixture(scope="module")
def cluster():
    ray_cluster = start_cluster(num_cpus=2)
    try:
        with connected(ray_cluster.address):
            yield ray_cluster
    finally:
        ray_cluster.stop()


def tune(*args: str) -> dict:
    """``gammaray tune ARGS --json`` in this process; the JSON document of a successful call."""
    result = CliRunner().invoke(main, ["tune", *args, "--json"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def lr_grid(folder: Path, name: str, **top: object) -> Path:
    return write_grid(folder, name, tune={"params": {"optim.lr": LR_RANGE}}, resources={"cpus": 1}, **top)


def study(workspace: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{workspace / 'optuna.db'}")


def workspace() -> Path:

    return workspace_dir()


# ---- the search finds what a dense scan finds ----------------------------------------------


def test_a_handful_of_trials_lands_near_the_best_of_a_dense_scan(cluster, tmp_path):
    import ray

    # One trial at a time, so that the sampler sees the same history on every run of this test.
    path = lr_grid(tmp_path, "lr-search", max_parallel=1)
    plan = make_plan(path)
    # The dense scan: the same runs through the same worker function, in folders of its own,
    # training on the cluster's other CPU while the study runs.
    rates = [1e-4 * 300 ** (i / 11) for i in range(12)]  # 1e-4 … 3e-2, log-spaced
    task = ray.remote(train_point).options(num_cpus=1, max_retries=0)
    specs = [
        replace(plan.trial_spec(plan.groups[0], {"optim.lr": lr}), out_dir=str(tmp_path / "scan" / f"{i}"))
        for i, lr in enumerate(rates)
    ]
    scan_refs = [task.remote(spec, "scan:1") for spec in specs]

    document = tune(str(path), "--trials", "10")
    best = document["best"]["all"]
    assert document["new_trials"] == document["total_trials"] == 10
    scan = [result["final_eval_loss"] for result in ray.get(scan_refs)]
    assert min(scan) < scan[0] - 0.5  # the range matters: the worst rate is far behind
    assert best["value"] <= min(scan) * (1 + LOSS_MARGIN), (best, dict(zip(rates, scan)))
    assert 1e-4 <= best["params"]["optim.lr"] <= 3e-2
    # The best trial is a normal run: its folder under the workspace, named by its run id.
    run = workspace() / "tune" / "lr-search" / best["run_id"]
    assert json.loads((run / "summary.json").read_text())["final_eval_loss"] == pytest.approx(best["value"])


# ---- resuming: only the missing trials, nothing trained twice ------------------------------


def test_a_larger_trials_count_runs_only_the_new_trials_and_reruns_nothing(cluster, tmp_path):
    path = lr_grid(tmp_path, "resume", max_parallel=2)
    first = tune(str(path), "--trials", "3")
    assert (first["new_trials"], first["total_trials"]) == (3, 3)
    second = tune(str(path), "--trials", "5")
    assert (second["new_trials"], second["total_trials"]) == (2, 5)
    third = tune(str(path), "--trials", "5")
    assert (third["new_trials"], third["total_trials"], third["trained"]) == (0, 5, 0)

    trials = study(workspace(), "resume/all").get_trials()
    assert [t.state.name in ("COMPLETE", "PRUNED") for t in trials] == [True] * 5
    folders = [path for path in (workspace() / "tune" / "resume").iterdir() if path.is_dir()]
    assert {t.user_attrs["run_id"] for t in trials} == {folder.name for folder in folders}
    for folder in folders:  # every run started once: no folder was trained twice
        assert len(read_attempts(folder)) == 1, folder
    assert first["trained"] + second["trained"] == sum((f / "summary.json").is_file() for f in folders)

    # The --json contract, and the outputs it points at.
    assert set(second) >= {"best", "total_trials", "new_trials", "rule", "report", "studies"}
    assert second["studies"][0]["name"] == "resume/all" and second["rule"] == []
    best = yaml.safe_load(Path(second["best_file"]).read_text())
    assert best["zip"] == [{"optim.lr": [float(f"{second['best']['all']['params']['optim.lr']:.4g}")]}]
    pasted = load_grid(
        write_grid(tmp_path / "pasted", "pasted", zip=best["zip"])
    )  # a grid snippet, ready to use
    assert [dict(p.values) for p in pasted.points()] == [{"optim.lr": best["zip"][0]["optim.lr"][0]}]
    html = Path(second["report"]).read_text()
    assert second["report"] == str(workspace() / "reports" / "resume-tune.html")
    for figure in ("history", "slice", "intermediate"):
        assert f'id="study-0-{figure}"' in html
    assert "Parameter importances: skipped, one parameter searched." in html
    assert "<script src=" not in html and "<link " not in html  # plotly.js is inline: opens offline


# ---- pruning --------------------------------------------------------------------------------


def test_a_trial_behind_the_median_is_pruned_and_its_task_stopped(cluster, tmp_path):
    import optuna

    # Longer runs than elsewhere, so that the slow one is still training when it is judged.
    path = lr_grid(tmp_path, "prune", base={"train.tokens": 60000}, max_parallel=1)
    # Three good rates first, then one far too small: the pruner stops it after its warm-up.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (workspace()).mkdir(parents=True, exist_ok=True)
    created = optuna.create_study(
        study_name="prune/all", storage=f"sqlite:///{workspace() / 'optuna.db'}", direction="minimize"
    )
    for lr in (1e-2, 1.5e-2, 7e-3, 1e-4):
        created.enqueue_trial({"optim.lr": lr})
    document = tune(str(path), "--trials", "4")
    assert document["total_trials"] == 4
    *good, slow = study(workspace(), "prune/all").get_trials()
    assert [t.state.name for t in good] == ["COMPLETE"] * 3 and slow.state.name == "PRUNED"
    steps = make_plan(path).groups[0].spec.steps
    pruned_at = max(slow.intermediate_values)
    assert math.ceil(PRUNE_WARMUP * steps) <= pruned_at < steps
    assert slow.value == slow.intermediate_values[pruned_at]  # told PRUNED with its last report
    folder = workspace() / "tune" / "prune" / slow.user_attrs["run_id"]
    assert not (folder / "summary.json").exists()
    written = (folder / "metrics.jsonl").stat().st_size
    time.sleep(2)
    assert (folder / "metrics.jsonl").stat().st_size == written  # its task was stopped, not left training
    assert document["best"]["all"]["trial"] in [t.number for t in good]


def test_trials_with_identical_values_share_one_run(cluster, tmp_path):
    path = write_grid(tmp_path, "choices", resources={"cpus": 1}, max_parallel=2)
    document = tune(str(path), "--param", "optim.lr=choice:0.003,0.01", "--trials", "4")
    assert document["new_trials"] == 4 and document["trained"] <= 2
    folders = [f for f in (workspace() / "tune" / "choices").iterdir() if f.is_dir()]
    assert len(folders) <= 2
    for folder in folders:
        assert len(read_attempts(folder)) == 1  # a run per value, trained once


def test_a_trial_left_running_by_a_dead_driver_is_asked_again(cluster, tmp_path):
    import optuna

    path = lr_grid(tmp_path, "orphan")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workspace().mkdir(parents=True, exist_ok=True)
    created = optuna.create_study(
        study_name="orphan/all", storage=f"sqlite:///{workspace() / 'optuna.db'}", direction="minimize"
    )
    created.enqueue_trial({"optim.lr": 0.01})
    orphan = created.ask(make_plan(path).distributions())  # asked, never told: its driver died
    document = tune(str(path), "--trials", "1")
    trials = study(workspace(), "orphan/all").get_trials()
    assert trials[orphan.number].state.name == "FAIL"
    resumed = [t for t in trials if t.user_attrs.get("resumes_trial") == orphan.number]
    assert (
        len(resumed) == 1 and resumed[0].params == {"optim.lr": 0.01} and resumed[0].state.name == "COMPLETE"
    )
    assert document["new_trials"] == 1
    assert (document["studies"][0]["stopped"], document["studies"][0]["failed"]) == (1, 0)


# ---- bad input: one line naming the field, exit 2, no study --------------------------------


@pytest.fixture
def ladder(tmp_path) -> Path:
    return write_grid(tmp_path, "ladder", axes={"model.preset": ["tiny", "100k"], "init.gamma": [0.5, 1.0]})


BAD = [
    (["--param", "optim.lr=log:1e-4"], "--param optim.lr: log expects log:LOW:HIGH"),
    (
        ["--param", "optim.lrr=log:1e-4:1e-2"],
        "--param optim.lrr: unknown config key (did you mean optim.lr?)",
    ),
    (["--param", "optim.lr=log:0:1e-2"], "--param optim.lr: a log scale needs LOW > 0"),
    (["--param", "optim.lr=exp:1:2"], "--param optim.lr: unknown kind 'exp'"),
    (["--param", "train.batch_size=float:8:64"], "--param train.batch_size: float needs a float key"),
    (["--param", "model.attn_gate=choice:off"], "--param model.attn_gate: choice needs at least two values"),
    (["--param", "train.threads=int:1:2"], "--param train.threads: does not change a run's result"),
    (["--param", "optim.beta1=float:0.5:1.5"], "--param optim.beta1: 1.5 is not a valid value in study"),
    (["--param", "init.gamma=float:0.5:1"], "--param init.gamma: is swept by axes.init.gamma"),
    (
        ["--param", "optim.lr=log:1e-4:1e-2", "--per", "model.preset"],
        "axes.init.gamma: init.gamma varies within one study",
    ),
    (
        ["--param", "optim.lr=log:1e-4:1e-2", "--per", "model.presett"],
        "--per: model.presett: unknown config key",
    ),
    (["--per", "model.preset,init.gamma"], "nothing to tune: give --param"),
    (
        ["--param", "optim.lr=log:1e-4:1e-2", "--storage", "optuna.db"],
        "--storage 'optuna.db': expected a database URL",
    ),
]


@pytest.mark.parametrize("args, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_exits_2_naming_the_field_and_creates_no_study(ladder, args, message):
    result = CliRunner().invoke(main, ["tune", str(ladder), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gammaray: error: ") and message in lines[0], result.stderr
    assert not (workspace() / "optuna.db").exists() and not (workspace() / "tune").exists()


def test_a_mixed_group_error_suggests_the_per_keys(ladder):
    with pytest.raises(GridError, match=r"tune each value separately with --per model.preset,init.gamma$"):
        make_plan(ladder, params=["optim.lr=log:1e-4:1e-2"], per="model.preset")


def test_the_tune_section_is_part_of_the_grid_and_flags_override_it(tmp_path):
    path = write_grid(
        tmp_path,
        "section",
        axes={"model.preset": ["tiny", "100k"]},
        tune={"params": {"optim.lr": LR_RANGE}, "per": ["model.preset"], "trials": 5, "metric": "eval/loss"},
    )
    grid = load_grid(path)
    assert grid.tune is not None and grid.tune.trials == 5 and grid.tune.per == ("model.preset",)
    assert [p.spec() for p in grid.tune.params] == ["log:0.0001:0.03"]
    plan = make_plan(path)
    assert (plan.trials, [g.key for g in plan.groups]) == (5, ["model.preset=tiny", "model.preset=100k"])
    assert plan.study_name(plan.groups[0]) == "section/model.preset=tiny"
    assert plan.storage == f"sqlite:///{workspace() / 'optuna.db'}"
    flagged = make_plan(
        path, params=["optim.weight_decay=float:0:1"], trials=2, storage="sqlite:////tmp/x.db"
    )
    assert [p.key for p in flagged.params] == ["optim.weight_decay"] and flagged.trials == 2
    # A trial of no searched value is the grid point itself: the same run id as `submit` gives it.
    assert plan.trial_spec(plan.groups[1], {}).run_id == plan.groups[1].spec.run_id
    assert plan.trial_spec(plan.groups[1], {"optim.lr": 0.01}).out_dir.startswith(
        str(workspace() / "tune" / "section")
    )


@pytest.mark.parametrize(
    "section, message",
    [
        ({"params": {"optim.lr": "log:1:0.1"}}, "tune.params.optim.lr: LOW must be below HIGH"),
        ({"params": {"optim.lrr": LR_RANGE}}, "tune.params.optim.lrr: unknown config key"),
        ({"params": []}, "tune.params: must be a mapping"),
        ({"trials": 0}, "tune.trials: must be an integer >= 1"),
        ({"per": "model.presett"}, "tune.per: model.presett: unknown config key"),
        ({"metric": "train/loss"}, "tune.metric: must name a metric of the eval records"),
        ({"trails": 3}, "tune.trails: unknown key (did you mean trials?)"),
        ("lr", "tune: must be a mapping"),
    ],
)
def test_a_malformed_tune_section_is_refused_when_the_grid_loads(tmp_path, section, message):
    path = write_grid(tmp_path, "bad", tune=section)
    with pytest.raises(GridError, match=None) as error:
        load_grid(path)
    assert message in str(error.value) and str(error.value).startswith(str(path))


def test_the_shipped_tuning_grids_plan_and_submit_ignores_their_tune_section():
    from orchestrator.submit import plan as submit_plan

    smoke = make_plan(REPO / "grids" / "tune-smoke.yaml")
    assert len(smoke.groups) == 1 and smoke.trials == 6 and [p.key for p in smoke.params] == ["optim.lr"]
    ladder = make_plan(REPO / "grids" / "tune-ladder.yaml")
    sizes = [g.n_params_non_embedding for g in ladder.groups]
    assert len(sizes) == 3 and sizes == sorted(sizes) and ladder.per == ("model.preset",)
    assert len(submit_plan(REPO / "grids" / "tune-ladder.yaml", check_machine=False).specs) == 3


# ---- the size rule (no training) -----------------------------------------------------------


def test_the_size_rule_recovers_a_known_exponent_from_noisy_best_values():
    import numpy as np

    rng = np.random.default_rng(0)
    sizes = [2e4, 1e5, 4e5, 1.6e6, 6.4e6]
    groups = [
        TunedGroup(
            {"model.preset": f"p{i}", "init.gamma": gamma},
            n,
            {"optim.lr": 0.5 * n**k * math.exp(rng.normal(0, 0.03)), "model.attn_gate": "off"},
        )
        for gamma, k in ((0.5, -0.35), (1.0, -0.5))
        for i, n in enumerate(sizes)
    ]
    rules = fit_size_rules(groups, ["optim.lr", "model.attn_gate"], slice_keys=["init.gamma"])
    assert [(r.param, r.where) for r in rules] == [
        ("optim.lr", {"init.gamma": 0.5}),
        ("optim.lr", {"init.gamma": 1.0}),
    ]
    for rule, k in zip(rules, (-0.35, -0.5)):
        assert rule.k == pytest.approx(k, abs=0.03) and abs(rule.k - k) < 3 * rule.k_stderr
        assert rule.coefficient == pytest.approx(0.5, rel=0.4)
        assert rule.predict(1e5) == pytest.approx(0.5 * 1e5**k, rel=0.05)
        assert rule.to_dict()["n_groups"] == 5 and "N^" in rule.formula()


def test_two_sizes_give_an_exact_rule_and_one_size_none():
    a, k, stderr, residuals = power_law_fit([1e4, 1e6], [1e-2, 1e-3])
    assert k == pytest.approx(-0.5) and math.exp(a) == pytest.approx(1.0) and stderr is None
    assert max(abs(residuals)) < 1e-12
    one = [TunedGroup({"model.preset": "tiny"}, 2e4, {"optim.lr": 0.01})]
    assert fit_size_rules(one, ["optim.lr"], slice_keys=[]) == []


# ---- the objective and the report (no training) --------------------------------------------


def test_a_diverged_run_is_told_the_untrained_models_loss():
    records = [{"kind": "eval", "step": 0, "eval/loss": 6.2}, {"kind": "eval", "step": 10, "eval/loss": 5.0}]
    finished = {"status": "finished", "final_eval_loss": 4.8, "initial_eval_loss": 6.2}
    diverged = {"status": "diverged", "final_eval_loss": float("nan"), "initial_eval_loss": 6.2}
    assert objective(finished, records, "eval/loss") == (4.8, "finished")
    assert objective(diverged, records, "eval/loss") == (6.2, "diverged")
    assert objective(finished, records, "probe/accuracy") == (
        None,
        "diverged",
    )  # not recorded: the trial fails


def test_the_report_holds_every_figure_of_a_two_parameter_study(tmp_path):
    import optuna

    from analysis.report.tune import StudyPanel, write_tune_report
    from analysis.tune_rule import SizeRule

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    synthetic = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = synthetic.ask()
        lr, wd = (
            trial.suggest_float("optim.lr", 1e-4, 3e-2, log=True),
            trial.suggest_float("optim.weight_decay", 0, 1),
        )
        for step in (0, 10, 20):
            trial.report(5 + (math.log10(lr) + 2) ** 2 + 0.1 * wd - 0.01 * step, step)
        trial.set_user_attr("run_id", "abc")
        synthetic.tell(trial, 5 + (math.log10(lr) + 2) ** 2 + 0.1 * wd)
    rule = SizeRule(
        "optim.lr",
        {},
        a=math.log(0.5),
        k=-0.4,
        k_stderr=0.02,
        n_params=(2e4, 1e5, 4e5),
        best=(0.01, 0.005, 0.003),
    )
    path = write_tune_report(
        tmp_path / "r.html",
        grid="g",
        metric="eval/loss",
        storage="sqlite:///x",
        studies=[StudyPanel("g/all", "all", 20640, synthetic)],
        rules=[rule],
        space={"optim.lr": LR_RANGE, "optim.weight_decay": "float:0:1"},
    )
    html = path.read_text()
    for figure in (
        "fig-rule",
        "study-0-history",
        "study-0-slice",
        "study-0-importances",
        "study-0-intermediate",
    ):
        assert f'id="{figure}"' in html, figure
    assert "optim.lr ≈ 0.5 · N^-0.400" in html
    assert "<script src=" not in html and "<link " not in html  # plotly.js is inline: opens offline
