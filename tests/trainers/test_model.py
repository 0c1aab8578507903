"""The model: exact parameter counts, the size ladder, FLOPs per token, causality, gating."""

import pytest
import torch

from trainers.model import Architecture, Transformer, count_params, flops_per_token
from trainers.presets import PRESETS, nominal_params


def arch(preset="tiny", vocab_size=512, seq_len=64, attn_gate="off", tie=False):
    p = PRESETS[preset]
    return Architecture(
        n_layers=p.n_layers,
        d_model=p.d_model,
        n_heads=p.n_heads,
        d_ff=p.d_ff,
        vocab_size=vocab_size,
        seq_len=seq_len,
        norm_eps=1e-12,
        attn_gate=attn_gate,
        tie_embeddings=tie,
        rope_theta=10000.0,
    )


def independent_count(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-embedding) by walking the module's distinct tensors."""
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    embedding = {id(model.embed.weight), id(model.lm_head.weight)}
    non_embedding = sum(p.numel() for p in model.parameters() if id(p) not in embedding)
    return total, non_embedding


@pytest.mark.parametrize("preset", ["tiny", "100k", "400k", "1m"])
@pytest.mark.parametrize("attn_gate", ["off", "head", "element"])
@pytest.mark.parametrize("tie", [False, True])
def test_param_counts_match_the_module(preset, attn_gate, tie):
    a = arch(preset, attn_gate=attn_gate, tie=tie)
    counts = count_params(a)
    total, non_embedding = independent_count(Transformer(a))
    assert counts["n_params"] == total
    assert counts["n_params_non_embedding"] == non_embedding


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_has_about_the_size_its_name_says(name):
    counts = count_params(arch(name, vocab_size=32000))
    assert counts["n_params_non_embedding"] == pytest.approx(nominal_params(name), rel=0.25)
    a = arch(name)
    assert a.d_model % a.n_heads == 0 and (a.d_model // a.n_heads) % 2 == 0


def test_tiny_is_a_test_sized_model():
    assert 10_000 <= count_params(arch("tiny"))["n_params_non_embedding"] <= 30_000


def test_flops_per_token():
    a = arch("1m", vocab_size=512, seq_len=128)
    counts = count_params(a)
    flops = flops_per_token(a)
    assert flops["flops_per_token_6n"] == 6 * counts["n_params_non_embedding"]
    head = a.d_model * a.vocab_size
    attention = 12 * a.n_layers * a.seq_len * a.d_model
    assert flops["flops_per_token"] == 6 * (counts["n_params_non_embedding"] + head) + attention


def test_logits_shape_and_loss():
    model = Transformer(arch())
    tokens = torch.randint(0, 512, (3, 65))
    assert model(tokens[:, :-1]).shape == (3, 64, 512)
    loss = model.loss(tokens)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("attn_gate", ["off", "head", "element"])
def test_attention_is_causal(attn_gate):
    torch.manual_seed(0)
    model = Transformer(arch(attn_gate=attn_gate)).eval()
    tokens = torch.randint(0, 512, (1, 32))
    changed = tokens.clone()
    changed[0, 20:] = (changed[0, 20:] + 1) % 512
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[0, :20], b[0, :20], atol=1e-6)
    assert not torch.allclose(a[0, 20:], b[0, 20:], atol=1e-6)


def test_gate_changes_the_output_and_gets_gradients():
    torch.manual_seed(0)
    model = Transformer(arch(attn_gate="head"))
    tokens = torch.randint(0, 512, (2, 17))
    model.loss(tokens).backward()
    gate = model.blocks[0].attn.gate_proj
    assert gate.weight.shape == (2, 32)  # one gate per head
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0


def test_norm_eps_reaches_every_norm():
    model = Transformer(Architecture(**{**arch().__dict__, "norm_eps": 1e-5}))
    eps = {m.eps for m in model.modules() if hasattr(m, "eps")}
    assert eps == {1e-5}
