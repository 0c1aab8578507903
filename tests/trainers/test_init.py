"""The init schemes draw every matrix with the std they promise, from an explicit seeded generator."""

import json

import pytest
import torch

from tests.conftest import run_cli
from trainers.init import InitConfig, gamma_std, init_table, init_weights, plan_init
from trainers.model import Architecture, Transformer


def make_model(d_model=128, d_ff=256, vocab_size=512, n_layers=2, attn_gate="off", tie=False):
    arch = Architecture(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=4,
        d_ff=d_ff,
        vocab_size=vocab_size,
        seq_len=16,
        norm_eps=1e-12,
        attn_gate=attn_gate,
        tie_embeddings=tie,
        rope_theta=10000.0,
    )
    return Transformer(arch)


def initialized(config, seed=0, **shape):
    model = make_model(**shape)
    plans = init_weights(model, config, torch.Generator().manual_seed(seed))
    return model, init_table(model, plans)


def relative_tolerance(numel: int) -> float:
    # The sample std of n normal draws has relative standard error ≈ 1/√(2n); allow 5 of them.
    return 5 / (2 * numel) ** 0.5


def test_gamma_rule_is_fan_in_to_the_minus_gamma():
    assert gamma_std(256, 0.5) == pytest.approx(1 / 16)
    assert gamma_std(256, 1.0) == pytest.approx(1 / 256)
    assert gamma_std(64, 1.5) == pytest.approx(64**-1.5)


@pytest.mark.parametrize("gamma", [0.3, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("attn_gate", ["off", "head", "element"])
def test_every_matrix_has_std_fan_in_to_the_minus_gamma(gamma, attn_gate):
    model, rows = initialized(InitConfig(scheme="gamma", gamma=gamma), attn_gate=attn_gate)
    matrices = [r for r in rows if len(r["shape"]) == 2]
    # embedding, head, and per layer q, k, v, o, the gate if any, and the three MLP matrices
    assert len(matrices) == 2 + 2 * (7 + (attn_gate != "off"))
    for row in matrices:
        fan_in = row["shape"][1]  # Linear (out, in); the embedding (V, C) uses d_model by default
        assert row["fan_in"] == fan_in
        expected = fan_in**-gamma
        assert row["target_std"] == pytest.approx(expected)
        numel = row["shape"][0] * row["shape"][1]
        assert row["measured_std"] == pytest.approx(expected, rel=relative_tolerance(numel)), row["name"]


def test_norm_gains_are_one():
    model, rows = initialized(InitConfig(gamma=1.0))
    gains = [r for r in rows if len(r["shape"]) == 1]
    assert len(gains) == 2 * 2 + 1
    for name, param in model.named_parameters():
        if param.ndim == 1:
            assert torch.all(param == 1.0), name


@pytest.mark.parametrize("rule, fan_in", [("d_model", 128), ("vocab_size", 512), ("one", 1)])
def test_embedding_fan_in_is_configurable(rule, fan_in):
    _, rows = initialized(InitConfig(gamma=0.5, embedding_fan_in=rule))
    embed = next(r for r in rows if r["name"] == "embed.weight")
    head = next(r for r in rows if r["name"] == "lm_head.weight")
    assert embed["fan_in"] == fan_in and embed["target_std"] == pytest.approx(fan_in**-0.5)
    assert embed["measured_std"] == pytest.approx(fan_in**-0.5, rel=relative_tolerance(512 * 128))
    assert head["fan_in"] == 128  # the LM head is a matmul over d_model whatever the rule


def test_sigma_scheme_uses_one_std_for_every_width():
    _, rows = initialized(InitConfig(scheme="sigma", sigma=0.02))
    for row in rows:
        if len(row["shape"]) == 2:
            numel = row["shape"][0] * row["shape"][1]
            assert row["measured_std"] == pytest.approx(0.02, rel=relative_tolerance(numel)), row["name"]


def test_default_scheme_is_pytorchs():
    _, rows = initialized(InitConfig(scheme="default"))
    by_name = {r["name"]: r for r in rows}
    assert by_name["embed.weight"]["measured_std"] == pytest.approx(1.0, rel=0.02)  # nn.Embedding: N(0, 1)
    down = by_name["blocks.0.mlp.down_proj.weight"]  # nn.Linear: U(±1/√fan_in)
    assert down["measured_std"] == pytest.approx((3 * 256) ** -0.5, rel=0.03)


def test_same_seed_same_weights_other_seed_other_weights():
    a, _ = initialized(InitConfig(), seed=7)
    b, _ = initialized(InitConfig(), seed=7)
    c, _ = initialized(InitConfig(), seed=8)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if pa.ndim == 2:
            assert not torch.equal(pa, pc), name


def test_tied_head_is_one_tensor_initialized_as_the_embedding():
    model, rows = initialized(InitConfig(gamma=1.0), tie=True)
    assert model.lm_head.weight is model.embed.weight
    assert "lm_head.weight" not in {r["name"] for r in rows}


def test_init_uses_no_global_rng():
    model = make_model()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    init_weights(model, InitConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)


def test_plan_lists_every_parameter_once():
    model = make_model(attn_gate="element")
    plans = plan_init(model, InitConfig())
    assert [p.name for p in plans] == [n for n, _ in model.named_parameters()]


def test_inspect_json_shows_tiny_matrices_within_3_percent_of_fan_in_to_the_minus_1():
    done = run_cli("inspect", "--set", "model.preset=tiny", "--set", "init.gamma=1.0", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    matrices = [r for r in report["init"] if len(r["shape"]) == 2]
    assert len(matrices) == 16
    for row in matrices:
        assert row["target_std"] == pytest.approx(row["fan_in"] ** -1.0)
        assert abs(row["measured_std"] / row["target_std"] - 1) < 0.03, row
    assert report["n_params_non_embedding"] < report["n_params"]


# ---- conventions: the fan-in rule, residual scaling and per-component rates ----------------------

COMPONENT_KEYS = {
    "qk": "init.gamma_qk",
    "vo": "init.gamma_vo",
    "mlp": "init.gamma_mlp",
    "embedding": "init.gamma_embedding",
    "head": "init.gamma_head",
}


def expected_std(name, shape, arch, settings):
    """The std a matrix should get, written out from the convention table in docs/init.md."""
    if name == "embed.weight":
        component = "embedding"
    elif name == "lm_head.weight":
        component = "head"
    elif ".q_proj." in name or ".k_proj." in name:
        component = "qk"
    elif ".attn." in name:
        component = "vo"
    else:
        component = "mlp"
    xu = settings.get("init.convention") == "xu"
    gamma = settings.get(COMPONENT_KEYS[component], settings.get("init.gamma", 1.0))
    if component == "head" and xu and "init.gamma_head" not in settings:
        gamma = settings.get("init.gamma_embedding", settings.get("init.gamma", 1.0))
    d_model_rule = xu or settings.get("init.fan_in_rule") == "d_model"
    fan_in = arch["d_model"] if d_model_rule or name == "embed.weight" else shape[1]
    std = fan_in**-gamma
    if (xu or settings.get("init.residual_scale") == "depth") and name.endswith(
        ("o_proj.weight", "down_proj.weight")
    ):
        std /= (2 * arch["n_layers"]) ** 0.5
    return std


SETTINGS = [
    {"init.fan_in_rule": "d_model"},
    {"init.residual_scale": "depth"},
    {"init.gamma": 0.5, "init.gamma_qk": 1.5, "init.gamma_mlp": 0.3},
    {"init.gamma_vo": 0.7, "init.gamma_embedding": 0.4, "init.gamma_head": 1.2},
    {"init.convention": "xu", "init.gamma_embedding": 0.7},
    {"init.convention": "xu", "init.gamma": 0.5, "model.tie_embeddings": True},
    {
        "init.fan_in_rule": "d_model",
        "init.residual_scale": "depth",
        "init.gamma_mlp": 0.5,
        "model.attn_gate": "head",
    },
]


@pytest.mark.parametrize("preset", ["tiny", "1m"])
@pytest.mark.parametrize(
    "settings", SETTINGS, ids=lambda s: ",".join(f"{k.split('.')[-1]}={v}" for k, v in s.items())
)
def test_every_matrix_gets_its_conventions_std_within_3_percent(preset, settings):
    from trainers.inspect import inspect_run

    report = inspect_run(None, [f"model.preset={preset}", *(f"{k}={v}" for k, v in settings.items())])
    matrices = [r for r in report["init"] if len(r["shape"]) == 2]
    arch = {
        "d_model": next(r for r in matrices if r["name"] == "embed.weight")["shape"][1],
        "n_layers": len({r["name"].split(".")[1] for r in matrices if r["name"].startswith("blocks.")}),
    }
    assert any(r["name"] == "lm_head.weight" for r in matrices) == (
        settings.get("model.tie_embeddings") is not True
    )
    for row in matrices:
        target = expected_std(row["name"], row["shape"], arch, settings)
        assert row["target_std"] == pytest.approx(target), row
        # 3%, or five standard errors for matrices too small to measure to 3% (a head gate: 2×32)
        tolerance = max(0.03, relative_tolerance(row["shape"][0] * row["shape"][1]))
        assert abs(row["measured_std"] / target - 1) < tolerance, row


def test_inspect_json_shows_the_rule_rate_and_residual_factor_of_every_tensor():
    done = run_cli(
        "inspect",
        "--set",
        "model.preset=tiny",
        "--set",
        "init.fan_in_rule=d_model",
        "--set",
        "init.residual_scale=depth",
        "--set",
        "init.gamma_mlp=0.5",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout.strip().splitlines()[-1])["init"]}
    down, query = rows["blocks.0.mlp.down_proj.weight"], rows["blocks.0.attn.q_proj.weight"]
    d_model, n_layers = 32, 2  # the tiny preset
    assert (down["fan_in"], down["fan_in_rule"], down["gamma"], down["component"]) == (
        d_model,
        "d_model",
        0.5,
        "mlp",
    )
    assert down["residual_factor"] == pytest.approx((2 * n_layers) ** -0.5)
    assert down["target_std"] == pytest.approx(d_model**-0.5 / (2 * n_layers) ** 0.5)
    assert (query["gamma"], query["residual_factor"], query["component"]) == (1.0, 1.0, "qk")
    assert query["target_std"] == pytest.approx(d_model**-1.0)


def test_a_convention_and_its_spelled_out_keys_share_a_run_id():
    from trainers.config import load_run_config, resolve

    def run_id(*overrides):
        return resolve(load_run_config(None, ["model.preset=tiny", *overrides])).run_id

    assert run_id("init.convention=xu", "init.gamma_embedding=0.7") == run_id(
        "init.fan_in_rule=d_model",
        "init.residual_scale=depth",
        "init.gamma_embedding=0.7",
        "init.gamma_head=0.7",
    )
    assert (
        run_id("init.convention=gammaray", "init.gamma_mlp=1.0") != run_id()
    )  # an explicit rate is a new key
    assert (
        run_id("init.convention=gammaray")
        == run_id()
        == run_id("init.fan_in_rule=fan_in", "init.residual_scale=none")
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["init.gamma_qk=0"], "init.gamma_qk: must be > 0"),
        (
            ["init.scheme=sigma", "init.gamma_mlp=0.5"],
            "init.gamma_mlp: per-component rates need scheme 'gamma'",
        ),
        (
            ["init.scheme=sigma", "init.fan_in_rule=d_model"],
            "init.fan_in_rule: applies to scheme 'gamma' only",
        ),
        (["init.scheme=default", "init.residual_scale=depth"], "init.residual_scale: PyTorch's default init"),
        (["init.convention=xu", "init.residual_scale=depth"], "init.residual_scale: set by convention 'xu'"),
        (
            ["init.fan_in_rule=d_model", "init.embedding_fan_in=one"],
            "init.embedding_fan_in: the d_model rule",
        ),
        (["init.convention=mine"], "init.convention: must be one of 'gammaray', 'xu'"),
    ],
)
def test_bad_convention_keys_are_refused_naming_the_key(overrides, message):
    from trainers.config import load_run_config
    from trainers.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_run_config(None, overrides)
