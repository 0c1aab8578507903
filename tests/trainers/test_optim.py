"""AdamW groups and learning-rate schedules."""

import pytest
import torch

from trainers.model import Architecture, Transformer
from trainers.optim import OptimConfig, build_optimizer, lr_at, param_groups


def model(tie=False):
    return Transformer(Architecture(2, 32, 2, 64, 100, 16, 1e-12, "head", tie, 10000.0))


def test_norm_gains_are_not_decayed_matrices_are():
    m = model()
    groups = param_groups(m, OptimConfig(weight_decay=0.5))
    assert groups[0]["weight_decay"] == 0.5 and groups[1]["weight_decay"] == 0.0
    decayed = {id(p) for p in groups[0]["params"]}
    for name, p in m.named_parameters():
        assert (id(p) in decayed) == (p.ndim == 2), name


@pytest.mark.parametrize("tie", [False, True])
def test_embeddings_can_be_left_undecayed(tie):
    m = model(tie)
    groups = param_groups(m, OptimConfig(decay_embeddings=False))
    undecayed = {id(p) for p in groups[1]["params"]}
    assert id(m.embed.weight) in undecayed and id(m.lm_head.weight) in undecayed
    assert id(m.blocks[0].attn.q_proj.weight) not in undecayed
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_decay_is_decoupled():
    """With zero gradients, AdamW shrinks a weight by exactly (1 - lr·λ) per step."""
    m = model()
    opt = build_optimizer(m, OptimConfig(lr=0.1, weight_decay=0.5))
    before = m.blocks[0].mlp.up_proj.weight.detach().clone()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(m.blocks[0].mlp.up_proj.weight, before * (1 - 0.1 * 0.5))


def test_optimizer_uses_the_foreach_kernel_on_a_cpu():
    """The fused one is for GPUs (tests/trainers/test_gpu.py)."""
    optimizer = build_optimizer(model(), OptimConfig())
    assert optimizer.defaults["foreach"] and not optimizer.defaults["fused"]


def test_cosine_schedule():
    config = OptimConfig(lr=1.0, schedule="cosine", warmup_fraction=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, config, tokens_per_step=256) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_wsd_schedule():
    config = OptimConfig(lr=1.0, schedule="wsd", warmup_fraction=0.1, decay_fraction=0.2, min_lr_ratio=0.0)
    lrs = [lr_at(s, 100, config, tokens_per_step=256) for s in range(100)]
    assert lrs[10:80] == [1.0] * 70  # stable
    assert lrs[99] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:]))


def test_constant_schedule_without_warmup():
    config = OptimConfig(lr=0.5, schedule="constant", warmup_fraction=0.0)
    assert {lr_at(s, 10, config, tokens_per_step=256) for s in range(10)} == {0.5}


def test_wsd_runs_with_warmup_tokens_share_warmup_and_stable_phase_whatever_their_length():
    config = OptimConfig(lr=1.0, schedule="wsd", warmup_tokens=2560, decay_fraction=0.2, min_lr_ratio=0.0)
    short = [lr_at(s, 100, config, tokens_per_step=256) for s in range(100)]
    long = [lr_at(s, 400, config, tokens_per_step=256) for s in range(400)]
    assert short[:10] == [pytest.approx((s + 1) / 10) for s in range(10)]  # 2,560 tokens = 10 steps
    assert short[:80] == long[:80]  # the short run's trunk: everything before its decay
    assert long[80:320] == [1.0] * 240 and short[80] < 1.0
    # A warmup share would differ: 5% of 100 steps against 5% of 400.
    by_share = OptimConfig(lr=1.0, schedule="wsd", warmup_fraction=0.05)
    assert lr_at(4, 100, by_share, 256) != lr_at(4, 400, by_share, 256)
