"""The synthetic corpus has scaling structure: eval loss keeps improving with N and with D.

A small ladder on the real model and loop. The full picture (1.5+ decades of each) is in
docs/data.md; here each rung must beat the previous one by a clear margin.
"""

import pytest

from trainers.config import load_run_config
from trainers.loop import train

pytestmark = pytest.mark.slow

COMMON = ["train.batch_size=16", "train.seq_len=64", "train.threads=1", "optim.lr=3e-3", "seed=0"]
MARGIN_NATS = 0.02


def final_loss(tmp_path, preset, tokens):
    config = load_run_config(None, [*COMMON, f"model.preset={preset}", f"train.tokens={tokens}"])
    result = train(config, tmp_path / f"{preset}-{tokens}")
    assert result.status == "finished"
    return result.final_eval_loss


def test_loss_improves_with_model_size_at_fixed_tokens(tmp_path):
    losses = [final_loss(tmp_path, preset, 120_000) for preset in ("tiny", "100k", "400k")]
    assert all(a - b > MARGIN_NATS for a, b in zip(losses, losses[1:])), losses


def test_loss_improves_with_tokens_at_fixed_size(tmp_path):
    losses = [final_loss(tmp_path, "tiny", tokens) for tokens in (25_000, 100_000, 400_000)]
    assert all(a - b > MARGIN_NATS for a, b in zip(losses, losses[1:])), losses
