"""Pinned run ids and a pinned CPU loss: a refactor that changes what a config trains, or which
id its results are stored under, fails here. Only a deliberate ``CONFIG_VERSION`` bump (and new
pins beside it) may change them."""

import pytest

from trainers.config import CONFIG_VERSION, load_run_config, resolve
from trainers.loop import train

PINNED_IDS = {
    ("model.preset=tiny",): "ed7cfebad4ed",
    ("model.preset=1m", "init.gamma=0.5", "optim.weight_decay=0.1"): "336bf4440916",
    ("model.preset=tiny", "init.scheme=sigma", "train.backend=deepspeed"): "7e20266af828",
    (
        "model.preset=tiny",
        "data.source=composite",
        "train.loss_on=answers",
        "train.seq_len=64",
    ): "1342f6847048",
}


def test_config_version_is_the_one_the_pins_were_made_with():
    assert CONFIG_VERSION == 1


@pytest.mark.parametrize(
    "overrides, expected", PINNED_IDS.items(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else v
)
def test_run_ids_are_pinned(overrides, expected):
    assert resolve(load_run_config(None, list(overrides))).run_id == expected


def test_a_short_cpu_run_reaches_its_pinned_losses(tmp_path):
    run = load_run_config(
        None,
        [
            "model.preset=tiny",
            "train.tokens=20480",
            "train.batch_size=8",
            "train.seq_len=32",
            "train.threads=1",
        ],
    )
    result = train(run, tmp_path / "run")
    assert result.steps == 80
    # fp32 on a CPU; the tolerance allows for other CPUs' kernels, not for a changed model.
    assert result.initial_eval_loss == pytest.approx(6.251738905906677, rel=1e-5)
    assert result.final_eval_loss == pytest.approx(5.54260715842247, rel=1e-4)
