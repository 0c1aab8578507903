"""The init schemes draw every matrix with the std they promise, from an explicit seeded generator."""

import json

import pytest
import torch

from tests.conftest import run_cli
from trainers.init import InitConfig, gamma_std, init_table, init_weights, plan_init
from trainers.model import Architecture, Transformer


def make_model(d_model=128, d_ff=256, vocab_size=512, n_layers=2, attn_gate="off", tie=False):
    arch = Architecture(
        n_layers=n_layers, d_model=d_model, n_heads=4, d_ff=d_ff, vocab_size=vocab_size, seq_len=16,
        norm_eps=1e-12, attn_gate=attn_gate, tie_embeddings=tie, rope_theta=10000.0,
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
    assert gamma_std(64, 1.5) == pytest.approx(64 ** -1.5)


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
        expected = fan_in ** -gamma
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
    assert embed["fan_in"] == fan_in and embed["target_std"] == pytest.approx(fan_in ** -0.5)
    assert embed["measured_std"] == pytest.approx(fan_in ** -0.5, rel=relative_tolerance(512 * 128))
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
