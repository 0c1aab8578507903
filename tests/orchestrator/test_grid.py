"""Grid files: expansion, run ids, the dry run, and every way a grid file can be wrong.

No Ray and no MLflow here: a bad grid must be refused before either is touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.errors import GridError
from orchestrator.grids.expand import expand
from orchestrator.grids.parse import load_grid
from trainers.config import config_from_mapping, resolve, run_id

REPO = Path(__file__).resolve().parents[2]

BASE = "base: {model.preset: tiny, train.batch_size: 8, train.seq_len: 32, train.tokens: 20000}\n"
GOOD = "name: g\n" + BASE + "axes: {init.gamma: [0.5, 1.0]}\n"
WSD = "name: w\n" + BASE.replace("}", ", optim.schedule: wsd, optim.warmup_tokens: 1024}")


def write(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


# ---- what a good grid expands to -------------------------------------------------------------


def test_axes_cross_and_zip_groups_move_together(tmp_path):
    grid = load_grid(
        write(
            tmp_path,
            "name: g\n" + BASE + "axes: {model.preset: [tiny, 100k], train.tokens: [20000, 40000]}\n"
            "zip:\n  - {init.gamma: [0.5, 1.0], optim.weight_decay: [0.1, 1.0]}\n",
        )
    )
    specs = expand(grid, tmp_path / "ws")
    assert len(specs) == 2 * 2 * 2
    pairs = {(s.config.init.gamma, s.config.optim.weight_decay) for s in specs}
    assert pairs == {(0.5, 0.1), (1.0, 1.0)}  # zipped, never crossed
    assert {(s.config.model.preset, s.config.train.tokens) for s in specs} == {
        (p, t) for p in ("tiny", "100k") for t in (20000, 40000)
    }
    assert len({s.run_id for s in specs}) == 8
    for spec in specs:
        assert spec.out_dir == str((tmp_path / "ws" / "grids" / "g" / spec.run_id).resolve())
        assert spec.task_name == f"g/{spec.run_id}"


def test_run_id_is_the_hash_of_the_resolved_config(tmp_path):
    spec = expand(load_grid(write(tmp_path, GOOD)), tmp_path)[0]
    nested = {
        "model": {"preset": "tiny"},
        "train": {"batch_size": 8, "seq_len": 32, "tokens": 20000},
        "init": {"gamma": 0.5},
    }
    assert spec.run_id == resolve(config_from_mapping(nested)).run_id == run_id(spec.config)


def test_threads_follow_the_cpu_allotment_and_do_not_change_the_run_id(tmp_path):
    one = expand(load_grid(write(tmp_path, GOOD + "resources: {cpus: 1}\n")), tmp_path)
    two = expand(load_grid(write(tmp_path, GOOD + "resources: {cpus: 2}\n")), tmp_path)
    assert [s.config.train.threads for s in one] == [1, 1]
    assert [s.config.train.threads for s in two] == [2, 2]
    assert [s.run_id for s in one] == [s.run_id for s in two]


def test_tokens_per_param_axis_replaces_the_base_tokens(tmp_path):
    grid = load_grid(write(tmp_path, "name: g\n" + BASE + "axes: {train.tokens_per_param: [1, 2]}\n"))
    specs = expand(grid, tmp_path)
    n = specs[0].n_params_non_embedding
    assert [s.config.train.tokens for s in specs] == [n, 2 * n]
    assert all(s.config.train.tokens_per_param is None for s in specs)


def test_set_overrides_base_and_grid_keys(tmp_path):
    grid = load_grid(
        write(tmp_path, GOOD),
        ["optim.lr=0.01", "name=other", "max_parallel=3", "resources.cpus=2", "retries=0"],
    )
    assert (grid.name, grid.max_parallel, grid.retries, grid.resources.cpus) == ("other", 3, 0, 2)
    assert all(s.config.optim.lr == 0.01 for s in expand(grid, tmp_path))


def test_nested_and_dotted_keys_are_the_same_grid(tmp_path):
    nested = (
        "name: g\nbase: {model: {preset: tiny}, train: {batch_size: 8, seq_len: 32, tokens: 20000}}\n"
        "axes: {init: {gamma: [0.5, 1.0]}}\n"
    )
    a = expand(load_grid(write(tmp_path, nested, "a.yaml")), tmp_path)
    b = expand(load_grid(write(tmp_path, GOOD, "b.yaml")), tmp_path)
    assert [s.run_id for s in a] == [s.run_id for s in b]


def test_every_shipped_grid_is_valid():
    grids = sorted((REPO / "grids").glob("*.yaml"))
    assert grids
    for path in grids:
        specs = expand(load_grid(path), Path("/tmp/unused"))
        assert specs, path


def test_smoke_grid_sweeps_size_tokens_and_two_gammas():
    specs = expand(load_grid(REPO / "grids" / "smoke.yaml"), Path("/tmp/unused"))
    assert len(specs) >= 8
    assert {s.config.init.gamma for s in specs} == {0.5, 1.0}
    assert all(s.config.init.scheme == "gamma" for s in specs)
    assert len({s.n_params for s in specs}) >= 2 and len({s.tokens for s in specs}) >= 2
    assert all(s.resources.gpus == 0 for s in specs)


def test_demo_grid_trains_about_23_tokens_per_parameter_and_records_its_entropy_rate():
    specs = expand(load_grid(REPO / "grids" / "demo.yaml"), Path("/tmp/unused"))
    assert len(specs) == 10 and {s.config.init.gamma for s in specs} == {0.5, 1.0}
    assert all(22 < s.tokens / s.n_params < 24 for s in specs)
    # The facts corpus knows its entropy rate; every run logs it, for `report --e known`.
    rates = {s.params()["entropy_per_token"] for s in specs}
    assert len(rates) == 1 and 1.7 < float(rates.pop()) < 1.9


def test_a_file_source_records_no_entropy_rate(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    grid = write(
        tmp_path,
        f"name: g\nbase: {{model.preset: tiny, train.batch_size: 8, train.seq_len: 32, train.tokens: 20000, "
        f"data.source: text, data.path: {corpus}}}\naxes: {{init.gamma: [0.5, 1.0]}}\n",
    )
    specs = expand(load_grid(grid), tmp_path)
    assert all("entropy_per_token" not in s.params() for s in specs)


def test_dry_run_prints_the_table_and_totals_and_writes_nothing(tmp_path):
    workspace = Path(os.environ["GAMMARAY_HOME"])
    result = invoke("submit", str(write(tmp_path, GOOD)), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:8] == ["run", "id", "preset", "N", "D", "γ", "λ", "FLOPs"]
    document = json.loads(lines[-1])
    assert document["runs"] == 2 and document["trained"] == 0 and document["dry_run"] is True
    assert {row["gamma"] for row in document["plan"]} == {0.5, 1.0}
    assert document["totals"]["train_flops"] == sum(row["FLOPs"] for row in document["plan"]) > 0
    assert document["totals"]["cpu_hours"] > 0 and document["totals"]["gpu_hours"] == 0
    assert "CPU-hours" in lines[-2]
    assert not workspace.exists()


def test_a_branching_grid_plans_trunks_and_branches_and_counts_the_tokens_saved(tmp_path):
    text = WSD.replace("wsd,", "wsd, optim.decay_fraction: 0.1,") + (
        "axes: {init.gamma: [0.5, 1.0], train.tokens: [10240, 20480, 40960, 81920]}\n"
        "branch: {over: train.tokens}\n"
    )
    specs = expand(load_grid(write(tmp_path, text)), tmp_path)
    for gamma in (0.5, 1.0):
        family = sorted((s for s in specs if s.config.init.gamma == gamma), key=lambda s: s.steps)
        *branches, trunk = family
        assert trunk.branch is None and trunk.checkpoint_at == (36, 72, 144)  # 90% of 40, 80, 160 steps
        assert [(b.branch.trunk_run_id, b.branch.step) for b in branches] == [
            (trunk.run_id, 36),
            (trunk.run_id, 72),
            (trunk.run_id, 144),
        ]
        assert all(b.checkpoint_at == () for b in branches)
    # Branching changes no run id: each point is the run it would be alone.
    plain = expand(
        load_grid(write(tmp_path, text.replace("branch: {over: train.tokens}\n", ""), "p.yaml")), tmp_path
    )
    assert [s.run_id for s in specs] == [s.run_id for s in plain]

    result = invoke("submit", str(write(tmp_path, text)), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout.strip().splitlines()[-1])["totals"]
    assert totals["tokens_without_branching"] == 2 * (10240 + 20480 + 40960 + 81920)
    assert totals["tokens_to_train"] == 2 * (81920 + 1024 + 2048 + 4096)  # the trunk, then each decay
    assert totals["tokens_to_train"] / totals["tokens_without_branching"] <= 0.6
    assert "branching over train.tokens: 178,176 tokens to train instead of 307,200 (0.58×)" in result.stdout


def test_the_eta_of_a_running_branch_counts_only_its_decay(tmp_path):
    from orchestrator.grids.estimate import estimate_seconds
    from orchestrator.progress import snapshot
    from orchestrator.tracking.recorder import Live

    text = WSD + "axes: {train.tokens: [10240, 40960]}\nbranch: {over: train.tokens}\n"
    branch, trunk = sorted(expand(load_grid(write(tmp_path, text)), tmp_path), key=lambda s: s.steps)
    start_tokens = branch.branch.step * 8 * 32
    specs = {s.run_id: s for s in (branch, trunk)}
    states = {branch.run_id: "running", trunk.run_id: "finished"}
    at_start = snapshot(states, specs, {branch.run_id: Live(tokens=start_tokens, tokens_per_s=0.0)}, 1)
    assert at_start.eta_s == pytest.approx(estimate_seconds(branch))  # all of its decay is left
    halfway = (start_tokens + branch.tokens) // 2
    midway = snapshot(states, specs, {branch.run_id: Live(tokens=halfway, tokens_per_s=0.0)}, 1)
    assert midway.eta_s == pytest.approx(estimate_seconds(branch) / 2, rel=0.02)


def test_dry_run_of_a_gpu_grid_on_a_cpu_machine_notes_it_but_plans(tmp_path):
    result = invoke("submit", str(write(tmp_path, GOOD + "resources: {gpus: 1}\n")), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "note: not runnable here" in result.stderr
    assert "GPU-hours" in result.stdout


# ---- malformed grids: one line naming the file, the key and the index; exit 2; nothing written ---

MALFORMED = [
    # (grid file text, extra CLI args, expected fragment of the one-line error)
    ("name: [unclosed\n", (), "not valid YAML"),
    ("- a\n- b\n", (), "must hold a mapping"),
    ("nmae: g\n" + BASE, (), "nmae: unknown key (did you mean name?)"),
    (BASE, (), "name: required"),
    ("name: 'a b'\n" + BASE, (), "name: must be 1-64 letters"),
    ("name: 12\n" + BASE, (), "name: must be 1-64 letters"),
    ("name: g\nbase: [1, 2]\n", (), "base: must be a mapping"),
    (
        "name: g\nbase: {model.presett: tiny}\n",
        (),
        "base.model.presett: unknown config key (did you mean model.preset?)",
    ),
    ("name: g\nbase: {model: tiny}\n", (), "base.model: is a config section"),
    ("name: g\nbase: {init.gamma: [0.5]}\n", (), "base.init.gamma: must be a single value"),
    ("name: g\nbase: {init.gamma: -1}\n", (), "base.init.gamma: must be > 0, got -1"),
    ("name: g\nbase: {train.batch_size: many}\n", (), "base.train.batch_size: must be"),
    ("name: g\nbase: {model: {preset: tiny}, model.preset: 100k}\n", (), "base.model.preset: given twice"),
    ("name: g\n" + BASE + "axes: {}\n", (), "axes: is empty"),
    ("name: g\n" + BASE + "axes: {init.gamma: []}\n", (), "axes.init.gamma: empty list"),
    ("name: g\n" + BASE + "axes: {init.gamma: 0.5}\n", (), "axes.init.gamma: must be a list of values"),
    (
        "name: g\n" + BASE + "axes: {init.gama: [1]}\n",
        (),
        "axes.init.gama: unknown config key (did you mean init.gamma?)",
    ),
    (
        "name: g\n" + BASE + "axes: {init.gamma: [0.5, 1.0, -1]}\n",
        (),
        "axes.init.gamma[2]: must be > 0, got -1",
    ),
    (
        "name: g\n" + BASE + "axes: {init.gamma: [0.5, 1.0, 0.5]}\n",
        (),
        "axes.init.gamma[2]: 0.5 repeats axes.init.gamma[0]",
    ),
    ("name: g\n" + BASE + "axes: {train.batch_size: [8, x]}\n", (), "axes.train.batch_size[1]: must be"),
    ("name: g\n" + BASE + "axes: {init.gamma: [[0.5]]}\n", (), "axes.init.gamma[0]: must be a single value"),
    (
        "name: g\n" + BASE + "axes: {train.backend: [torch, jax]}\n",
        (),
        "axes.train.backend[1]: must be one of",
    ),
    ("name: g\n" + BASE + "axes: {model.preset: [tiny, huge]}\n", (), "axes.model.preset[1]: unknown preset"),
    (
        "name: g\n" + BASE + "axes: {model.n_heads: [2, 3]}\n",
        (),
        "axes.model.n_heads[1]: must divide d_model=32",
    ),
    ("name: g\n" + BASE + "zip: {a: 1}\n", (), "zip: must be a non-empty list"),
    (
        "name: g\n" + BASE + "zip: [{init.gamma: [0.5, 1.0], optim.weight_decay: [0.1]}]\n",
        (),
        "zip[0].optim.weight_decay: has 1 values but zip[0].init.gamma has 2",
    ),
    (
        "name: g\n"
        + BASE
        + "axes: {init.gamma: [1.0]}\nzip: [{init.gamma: [0.5, 1.0], optim.weight_decay: [0.1, 1.0]}]\n",
        (),
        "zip[0].init.gamma: init.gamma is already swept by axes.init.gamma",
    ),
    (
        "name: g\n" + BASE + "zip: [{init.gamma: [0.5, 0], optim.weight_decay: [0.1, 1.0]}]\n",
        (),
        "zip[0].init.gamma[1]: must be > 0",
    ),
    (
        "name: g\n" + BASE + "zip: [{train.tokens: [20640, null], train.tokens_per_param: [null, 1.0]}]\n",
        (),
        "are the same run",
    ),
    (
        "name: g\n" + BASE + "zip: [{init.gamma: [0.5, 0.5], optim.weight_decay: [0.1, 0.1]}]\n",
        (),
        "zip[0]: values [1] repeat values [0] of every key",
    ),
    ("name: g\n" + BASE + "resources: {cpu: 1}\n", (), "resources.cpu: unknown key (did you mean cpus?)"),
    (
        "name: g\n" + BASE + "resources: {cpus: two}\n",
        (),
        "resources.cpus: must be an integer >= 1, got 'two'",
    ),
    ("name: g\n" + BASE + "resources: {cpus: 0}\n", (), "resources.cpus: must be an integer >= 1, got 0"),
    (
        "name: g\n" + BASE + "resources: {cpus: 4096}\n",
        (),
        "resources.cpus: 4096 per process, but the largest node of this machine has",
    ),
    (
        "name: g\n" + BASE + "resources: {gpus: 1}\n",
        (),
        "resources.gpus: 1 per process, but the largest node of this machine has 0 GPUs",
    ),
    (
        "name: g\nbase: {model.preset: tiny, train.device: cpu}\nresources: {gpus: 1}\n",
        (),
        "resources.gpus: 1 GPU(s) per process requested, but train.device is cpu",
    ),
    (
        "name: g\nbase: {model.preset: tiny, train.device: cuda}\n",
        (),
        "base.train.device: cuda needs resources.gpus >= 1",
    ),
    (
        "name: g\n" + BASE + "resources: {processes: 2}\n",
        (),
        "resources.processes: 2 processes need train.backend: deepspeed",
    ),
    (
        "name: g\nbase: {train.backend: deepspeed, train.processes: 1}\nresources: {processes: 2}\n",
        (),
        "resources.processes: 2, but",
    ),
    (
        "name: g\nbase: {train.backend: deepspeed, train.batch_size: 7}\nresources: {processes: 2}\n",
        (),
        "base.train.batch_size: must be divisible by processes=2, got 7",
    ),
    ("name: g\n" + BASE + "max_parallel: 0\n", (), "max_parallel: must be an integer >= 1, got 0"),
    ("name: g\n" + BASE + "retries: -1\n", (), "retries: must be an integer >= 0, got -1"),
    ("name: g\n" + BASE + "retries: yes\n", (), "retries: must be an integer >= 0, got True"),
    (
        "name: g\nbase: {data.source: text, data.path: /nonexistent/corpus.txt}\n",
        (),
        "base.data.path: no such file",
    ),
    (GOOD, ("--set", "init.gamma=2"), "--set init.gamma: is swept by axes.init.gamma"),
    (GOOD, ("--set", "optim.lr=-1"), "--set optim.lr: must be > 0"),
    (GOOD, ("--set", "optim.lrr=1"), "--set optim.lrr: unknown config key (did you mean optim.lr?)"),
    (GOOD, ("--set", "resources.disk=1"), "--set resources.disk: unknown resource"),
    (
        WSD + "axes: {train.tokens: [10240, 20480]}\nbranch: {over: init.gamma}\n",
        (),
        "branch.over: must be a spelling of D",
    ),
    (
        WSD + "axes: {init.gamma: [0.5, 1]}\nbranch: {over: train.tokens}\n",
        (),
        "branch.over: train.tokens is not swept",
    ),
    (
        WSD + "zip: [{train.tokens: [10240, 20480], seed: [1, 2]}]\nbranch: {over: train.tokens}\n",
        (),
        "branching needs it on its own in axes",
    ),
    (
        WSD + "axes: {train.tokens: [10240, 20480]}\nbranch: {over: train.tokens, at: 1}\n",
        (),
        "branch.at: unknown key",
    ),
    (
        "name: w\n"
        + BASE.replace("}", ", optim.schedule: wsd}")
        + "axes: {train.tokens: [10240, 20480]}\nbranch: {over: train.tokens}\n",
        (),
        "branch: needs optim.warmup_tokens",
    ),
    (
        WSD.replace("wsd", "cosine") + "axes: {train.tokens: [10240, 20480]}\nbranch: {over: train.tokens}\n",
        (),
        "branch: needs optim.schedule: wsd",
    ),
    (
        WSD + "axes: {train.tokens: [10240]}\nbranch: {over: train.tokens}\n",
        (),
        "a family of one point has nothing to branch from",
    ),
]


@pytest.mark.parametrize("text, args, expected", MALFORMED, ids=[m[2][:40] for m in MALFORMED])
def test_malformed_grid_exits_2_with_one_line_and_writes_nothing(tmp_path, text, args, expected):
    workspace = Path(os.environ["GAMMARAY_HOME"])
    path = write(tmp_path, text, "bad.yaml")
    # Not a dry run: a bad grid must fail before Ray or MLflow are started.
    result = invoke("submit", str(path), *args, "--json")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gammaray: error: ")
    assert expected in lines[0], lines[0]
    if not args:  # errors from the file name the file
        assert str(path) in lines[0]
    assert result.stdout == ""
    assert not workspace.exists()  # no MLflow store, no run folder


def test_malformed_grid_count():
    assert len(MALFORMED) >= 25


def test_missing_grid_file_is_one_line(tmp_path):
    result = invoke("submit", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "nope.yaml: cannot read" in result.stderr


def test_grid_error_is_a_config_error():
    from trainers.errors import ConfigError

    assert issubclass(GridError, ConfigError)


def test_grid_file_round_trips_through_yaml(tmp_path):
    # A grid written by a script (yaml.safe_dump) loads back the same.
    document = {
        "name": "g",
        "base": {"model.preset": "tiny"},
        "axes": {"init.gamma": [0.5, 1.0]},
        "resources": {"cpus": 1},
    }
    grid = load_grid(write(tmp_path, yaml.safe_dump(document)))
    assert [a.values for a in grid.axes] == [(0.5, 1.0)]
