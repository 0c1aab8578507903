"""Configs are checked once, at the edge: one line naming the key, exit 2, nothing run."""

import pytest

from tests.conftest import run_cli
from trainers.config import load_run_config, parse_override, resolve, run_id
from trainers.errors import ConfigError


@pytest.mark.parametrize(
    "override, message",
    [
        ("init.gamma=0", "init.gamma: must be > 0"),
        ("init.gamma=-1", "init.gamma: must be > 0"),
        ("init.gamma=abc", "init.gamma: must be a number"),
        ("init.scheme=xavier", "init.scheme: must be one of"),
        ("model.preset=huge", "model.preset: unknown preset 'huge'"),
        ("model.foo=1", "model.foo: unknown key"),
        ("modle.preset=tiny", "modle: unknown key"),
        ("model.norm_eps=0", "model.norm_eps: must be in (0, 1)"),
        ("model.attn_gate=sometimes", "model.attn_gate: must be one of"),
        ("model.n_heads=3", "model.n_heads: must divide d_model=32"),
        ("train.tokens=0", "train.tokens: must be a positive integer"),
        ("train.tokens=1.5", "train.tokens: must be an integer"),
        ("train.tokens=many", "train.tokens: must be a number"),
        ("train.backend=jax", "train.backend: must be one of"),
        ("train.processes=2", "train.processes: the torch backend runs one process"),
        ("train.zero_stage=4", "train.zero_stage: must be 0, 1, 2 or 3"),
        ("optim.lr=-0.1", "optim.lr: must be > 0"),
        ("optim.weight_decay=-1", "optim.weight_decay: must be >= 0"),
        ("optim.schedule=linear", "optim.schedule: must be one of"),
        ("data.source=web", "data.source: must be one of"),
        ("seed=1.5", "seed: must be an integer"),
        ("init=3", "init: must be a section"),
    ],
)
def test_bad_values_name_their_key(override, message):
    with pytest.raises(ConfigError) as caught:
        resolve(load_run_config(None, [override]))
    assert str(caught.value).startswith(message), str(caught.value)


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: 100k\ninit:\n  gamma: 0.5\ntrain:\n  tokens: 3e5\n")
    config = load_run_config(path, ["init.gamma=0.75", "optim.weight_decay=1e-5"])
    assert config.model.preset == "100k"
    assert config.init.gamma == 0.75
    assert config.optim.weight_decay == 1e-5  # "1e-5" is a string to YAML 1.1; the field says float
    assert config.train.tokens == 300000


@pytest.mark.parametrize(
    "content, message",
    [
        ("model: [1, 2", "not valid YAML"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("model:\n  presett: tiny\n", "model.presett: unknown key"),
    ],
)
def test_bad_files_are_refused(tmp_path, content, message):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_run_config(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_run_config(tmp_path / "absent.yaml")


def test_override_syntax():
    assert parse_override("a.b=1e-3") == ("a.b", "1e-3")  # left to the field's type to read
    assert parse_override("a=true") == ("a", True)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("init.gamma")


def test_run_id_follows_result_changing_fields_only():
    base = resolve(load_run_config(None, ["model.preset=tiny"])).run_id
    assert resolve(load_run_config(None, ["model.preset=tiny", "train.log_every=3"])).run_id == base
    assert resolve(load_run_config(None, ["model.preset=tiny", "train.threads=1"])).run_id == base
    assert resolve(load_run_config(None, ["model.preset=tiny", "init.gamma=0.5"])).run_id != base
    assert resolve(load_run_config(None, ["model.preset=tiny", "seed=1"])).run_id != base
    assert run_id(resolve(load_run_config(None, ["model.preset=tiny"])).config) == base


def test_keys_added_later_leave_ids_alone_at_their_default():
    # Ids issued before train.loss_on existed: a config that never sets it keeps its id, and
    # setting it to its default changes nothing either.
    assert resolve(load_run_config(None, ["model.preset=tiny"])).run_id == "ed7cfebad4ed"
    composite = [
        "model.preset=tiny",
        "data.source=composite",
        "init.scheme=gamma",
        "init.gamma=0.5",
        "train.seq_len=64",
    ]
    assert resolve(load_run_config(None, composite)).run_id == "8ea6fb3ad90f"
    assert resolve(load_run_config(None, [*composite, "train.loss_on=all"])).run_id == "8ea6fb3ad90f"
    assert resolve(load_run_config(None, [*composite, "train.loss_on=answers"])).run_id != "8ea6fb3ad90f"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.loss_on=answers"], "train.loss_on: 'answers' needs data.source 'composite'"),
        (
            ["train.loss_on=answers", "data.source=composite", "train.seq_len=6"],
            r"train.seq_len: must be >= 7",
        ),
        (["train.loss_on=some"], "train.loss_on: must be one of 'all', 'answers'"),
    ],
)
def test_answers_only_loss_needs_the_composite_task(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(None, overrides)


def test_answers_only_loss_has_a_zero_entropy_floor():
    composite = ["model.preset=tiny", "data.source=composite", "train.seq_len=64"]
    assert resolve(load_run_config(None, composite)).entropy_per_token > 1
    assert resolve(load_run_config(None, [*composite, "train.loss_on=answers"])).entropy_per_token == 0.0


def test_tokens_per_param_resolves_to_tokens_with_the_same_id():
    by_ratio = resolve(load_run_config(None, ["model.preset=tiny", "train.tokens_per_param=20"]))
    assert by_ratio.config.train.tokens == 20 * by_ratio.n_params_non_embedding
    by_tokens = resolve(
        load_run_config(None, ["model.preset=tiny", f"train.tokens={by_ratio.config.train.tokens}"])
    )
    assert by_tokens.run_id == by_ratio.run_id


def test_tokens_round_down_to_whole_steps():
    run = resolve(
        load_run_config(
            None, ["model.preset=tiny", "train.tokens=10000", "train.batch_size=8", "train.seq_len=32"]
        )
    )
    assert run.steps == 10000 // 256 and run.tokens == run.steps * 256


def test_cli_refuses_a_bad_config_in_one_line_with_exit_2(tmp_path):
    done = run_cli("train", "--set", "init.gamma=-1", "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.strip() == "gammaray: error: init.gamma: must be > 0, got -1.0"
    assert not (tmp_path / "run").exists()


def test_a_warmup_that_runs_into_the_decay_is_refused_naming_the_key():
    base = [
        "model.preset=tiny",
        "optim.schedule=wsd",
        "train.batch_size=8",
        "train.seq_len=32",
        "train.tokens=25600",
    ]
    resolve(load_run_config(None, [*base, "optim.warmup_tokens=2560"]))  # 10 of 100 steps: fine
    with pytest.raises(
        ConfigError,
        match=r"optim.warmup_tokens: 25,000 tokens \(98 steps\) run past the start of the decay at step 80",
    ):
        resolve(load_run_config(None, [*base, "optim.warmup_tokens=25000"]))
