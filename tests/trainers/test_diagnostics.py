"""diag/ metrics against known answers: ranks, condensation, the embedding spectrum, the attention
sink, and how matrices are found, named and aggregated."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.config import load_run_config, resolve
from trainers.diagnostics import (
    DiagConfig,
    EvalSchedule,
    aggregate,
    cosine_metrics,
    per_matrix_metrics,
    sink_and_norm_saturation,
    spectral_metrics,
    variance_share,
    weight_matrices,
)
from trainers.errors import ConfigError
from trainers.init import init_weights
from trainers.model import Transformer, first_position_mass


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(*overrides: str) -> Transformer:
    run = resolve(load_run_config(None, ["model.preset=tiny", "train.seq_len=16", *overrides]))
    model = Transformer(run.arch)
    init_weights(model, run.config.init, gen())
    return model.eval()


def test_rank_one_matrix_has_effective_and_stable_rank_one():
    u, v = torch.randn(64, 1, generator=gen(1)), torch.randn(1, 48, generator=gen(2))
    metrics = spectral_metrics((u @ v)[None])
    assert metrics["effective_rank"].item() == pytest.approx(1.0, abs=1e-3)
    assert metrics["stable_rank"].item() == pytest.approx(1.0, abs=1e-5)
    assert metrics["effective_rank_frac"].item() == pytest.approx(1 / 48, abs=1e-4)


def test_identity_has_full_effective_and_stable_rank():
    metrics = spectral_metrics(torch.eye(32)[None])
    assert metrics["effective_rank"].item() == pytest.approx(32, rel=1e-5)
    assert metrics["stable_rank"].item() == pytest.approx(32, rel=1e-5)


def test_parallel_rows_are_fully_condensed_whatever_their_sign_and_length():
    direction = torch.randn(1, 40, generator=gen(3))
    scales = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.1]).unsqueeze(1)
    metrics = cosine_metrics((scales * direction)[None], threshold=0.7)
    assert metrics["condensation"].item() == pytest.approx(1.0)
    assert metrics["abs_cosine"].item() == pytest.approx(1.0, abs=1e-5)


def test_random_gaussian_matrix_is_near_full_rank_and_not_condensed():
    w = torch.randn(256, 256, generator=gen(4))
    spectral, cosines = spectral_metrics(w[None]), cosine_metrics(w[None], 0.7)
    # Marchenko–Pastur (square): effective rank ≈ 0.8 n; stable rank ≈ n / 4 (σ_max² ≈ 4n, ‖W‖_F² ≈ n²).
    assert spectral["effective_rank_frac"].item() > 0.75
    assert spectral["stable_rank"].item() == pytest.approx(64, rel=0.15)
    assert cosines["condensation"].item() == 0.0
    # |cos| of independent directions in d dims: mean ≈ sqrt(2 / (π d)).
    assert cosines["abs_cosine"].item() == pytest.approx(math.sqrt(2 / (math.pi * 256)), rel=0.05)


def test_orthogonal_rows_give_zero_condensation_and_zero_mean_cosine():
    metrics = cosine_metrics(torch.eye(8)[None], 0.7)
    assert metrics["condensation"].item() == 0.0 and metrics["abs_cosine"].item() == 0.0


def test_embedding_spectrum_on_a_constructed_covariance():
    # Covariance diag(9, 1, 1, 1): the top eigenvalue holds 9/12 of the variance.
    samples = torch.randn(40000, 4, generator=gen(5)) * torch.tensor([3.0, 1.0, 1.0, 1.0]) + 5.0
    shares = variance_share(samples, (1, 2, 5))
    assert shares[1] == pytest.approx(0.75, abs=0.01)
    assert shares[2] == pytest.approx(10 / 12, abs=0.01)
    assert shares[5] == pytest.approx(1.0)
    assert variance_share(torch.ones(10, 3), (1,)) == {1: 0.0}


def test_first_position_mass_matches_explicit_causal_softmax():
    q, k = torch.randn(2, 3, 9, 8, generator=gen(6)), torch.randn(2, 3, 9, 8, generator=gen(7))
    mass = first_position_mass(q, k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    expected = scores.softmax(-1)[..., 0]
    torch.testing.assert_close(mass, expected)
    assert torch.all((mass >= 0) & (mass <= 1))
    torch.testing.assert_close(mass[..., 0], torch.ones(2, 3))


def test_first_position_mass_is_one_when_the_first_key_dominates():
    q = torch.ones(1, 1, 6, 4)
    k = torch.zeros(1, 1, 6, 4)
    k[..., 0, :] = 50.0  # every query's score on key 0 is 100, on the others 0
    assert torch.all(first_position_mass(q, k) > 0.999)


def test_attention_sink_with_uniform_attention_is_the_mean_of_one_over_position():
    model = tiny_model()
    for block in model.blocks:
        torch.nn.init.zeros_(block.attn.k_proj.weight)  # equal scores: query t spreads 1/(t+1) over t+1 keys
    tokens = torch.randint(16, 200, (3, 16), generator=gen(8))
    sink, _ = sink_and_norm_saturation(model, tokens)
    expected = sum(1 / (t + 1) for t in range(1, 16)) / 15
    assert set(sink) == {"blocks.0.attn", "blocks.1.attn"}
    for value in sink.values():
        assert value == pytest.approx(expected, rel=1e-5)


def test_recording_the_sink_and_the_norms_changes_neither_the_output_nor_leaves_state_behind():
    model = tiny_model("model.attn_gate=head")
    tokens = torch.randint(16, 200, (2, 16), generator=gen(9))
    with torch.no_grad():
        before = model(tokens)
        sink, norms = sink_and_norm_saturation(model, tokens)
        after = model(tokens)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert all(0.0 <= v <= 1.0 for v in sink.values())
    assert all(not b.attn.record_first_position and b.attn.first_position_mass is None for b in model.blocks)
    assert len(norms) == 5 and not any(m._forward_pre_hooks for m in model.modules())  # 2 blocks × 2 + final


def test_norm_saturation_is_the_share_of_the_normalizer_that_eps_takes():
    """Small init (γ = 1) at width 32 puts mean(x²) of the first norm's input (the embedding) at
    about 1/32² ≈ 1e-3: ε = 1e-5 takes ~1% of the normalizer there, ε = 1e-12 nothing; a large ε
    swamps it."""
    tokens = torch.randint(16, 200, (4, 16), generator=gen(3))
    shares = {}
    for eps in (1e-12, 1e-5, 0.5):
        model = tiny_model("init.gamma=1.0", f"model.norm_eps={eps}")
        _, found = sink_and_norm_saturation(model, tokens)
        assert set(found) == {
            "blocks.0.attn_norm",
            "blocks.0.mlp_norm",
            "blocks.1.attn_norm",
            "blocks.1.mlp_norm",
            "final_norm",
        }
        ms, share = found["blocks.0.attn_norm"]
        embedded = model.embed(tokens).float().pow(2).mean(-1)
        assert ms == pytest.approx(float(embedded.mean()), rel=1e-5)
        assert share == pytest.approx(float((eps / (embedded + eps)).mean()), rel=1e-5)
        shares[eps] = share
        assert not any(m._forward_pre_hooks for m in model.modules())  # the hooks are gone
    assert shares[1e-12] < 1e-8 < 1e-3 < shares[1e-5] < 0.1 < 0.9 < shares[0.5]


def test_weight_matrices_are_named_by_module_and_a_tied_head_counted_once():
    names = [(m.name, m.kind, m.layer) for m in weight_matrices(tiny_model())]
    assert names[0] == ("embed", "embedding", "embed")
    assert ("blocks.1.attn.q_proj", "attention", "blocks.1.attn") in names
    assert ("blocks.0.mlp.down_proj", "mlp", "blocks.0.mlp") in names
    assert names[-1] == ("lm_head", "embedding", "lm_head")
    assert len(names) == 2 + 2 * (4 + 3)
    tied = [m.name for m in weight_matrices(tiny_model("model.tie_embeddings=true"))]
    assert tied.count("embed") == 1 and "lm_head" not in tied
    gated = [m.name for m in weight_matrices(tiny_model("model.attn_gate=element"), ["attention"])]
    assert gated[:5] == [f"blocks.0.attn.{p}_proj" for p in ("q", "k", "v", "o", "gate")]


def test_aggregate_scopes_follow_detail():
    matrices = weight_matrices(tiny_model())
    values = per_matrix_metrics(matrices, 0.7, 1024)
    kind = aggregate(matrices, values, "kind")
    assert set(kind) == {f"diag/{m}/{s}" for m in values for s in ("all", "attention", "mlp", "embedding")}
    layer = aggregate(matrices, values, "layer")
    assert "diag/stable_rank/blocks.1.mlp" in layer and "diag/stable_rank/blocks.1.mlp.up_proj" not in layer
    matrix = aggregate(matrices, values, "matrix")
    up = [m.name for m in matrices].index("blocks.1.mlp.up_proj")
    assert matrix["diag/stable_rank/blocks.1.mlp.up_proj"] == pytest.approx(values["stable_rank"][up])
    attention = [v for m, v in zip(matrices, values["condensation"]) if m.kind == "attention"]
    assert kind["diag/condensation/attention"] == pytest.approx(sum(attention) / len(attention))


def test_rows_beyond_max_rows_use_a_fixed_subset():
    matrices = weight_matrices(tiny_model(), ["embedding"])
    first = per_matrix_metrics(matrices, 0.7, max_rows=64)
    again = per_matrix_metrics(matrices, 0.7, max_rows=64)
    assert first == again  # the same rows at every eval
    assert first["abs_cosine"] != per_matrix_metrics(matrices, 0.7, max_rows=1024)["abs_cosine"]


def test_non_finite_matrices_are_skipped():
    model = tiny_model()
    with torch.no_grad():
        model.blocks[0].attn.q_proj.weight[0, 0] = float("nan")
    matrices = weight_matrices(model, ["attention"])
    values = per_matrix_metrics(matrices, 0.7, 1024)
    assert math.isnan(values["stable_rank"][0]) and all(math.isfinite(v) for v in values["stable_rank"][1:])
    assert all(math.isfinite(v) for v in aggregate(matrices, values, "matrix").values())


def test_eval_schedule_follows_the_step_not_a_call_count():
    schedule = EvalSchedule(eval_every=10, every_evals=3)
    assert [s for s in range(0, 100, 10) if schedule.due(s, final=False)] == [0, 30, 60, 90]
    assert schedule.due(95, final=True)


def test_diag_config_is_checked_and_left_out_of_run_ids():
    base = resolve(load_run_config(None, ["model.preset=tiny"])).run_id
    changed = load_run_config(
        None, ["model.preset=tiny", "diag.every_evals=4", "diag.matrices=attention,mlp", "diag.detail=matrix"]
    )
    assert resolve(changed).run_id == base
    assert changed.diag.kinds == ("attention", "mlp") and DiagConfig().kinds == (
        "attention",
        "mlp",
        "embedding",
    )
    assert DiagConfig(spectrum_top_k="5, 1,5").top_ks == (1, 5)
    for override, key in (
        ("diag.matrices=attn", "diag.matrices"),
        ("diag.every_evals=0", "diag.every_evals"),
        ("diag.spectrum_top_k=0", "diag.spectrum_top_k"),
        ("diag.detail=neuron", "diag.detail"),
        ("diag.cosine_threshold=1.5", "diag.cosine_threshold"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_run_config(None, [override])
