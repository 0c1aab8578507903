"""The loop: loss falls on every data source, resume equals an uninterrupted run, NaN ends a run."""

import json

import numpy as np
import pytest

from trainers.callbacks import Callback, JsonlLogger, read_jsonl
from trainers.checkpoint import latest_checkpoint
from trainers.config import load_run_config
from trainers.data import write_memmap
from trainers.loop import read_summary, train

FAST = ["model.preset=tiny", "train.batch_size=8", "train.seq_len=32", "train.threads=1"]


def config(*overrides):
    return load_run_config(None, [*FAST, *overrides])


class SimulatedCrash(Exception):
    pass


class Crash(Callback):
    """Stands in for a killed process: raises once the run has passed ``step``."""

    def __init__(self, step):
        self.step = step

    def on_step(self, step, metrics):
        if step >= self.step:
            raise SimulatedCrash(f"crash after step {step}")


def losses(path):
    records = read_jsonl(path)
    return [
        (r["kind"], r["step"], r.get("train/loss", r.get("eval/loss")))
        for r in records
        if r["kind"] in ("train", "eval")
    ]


@pytest.mark.parametrize("source", ["synthetic", "composite", "text", "memmap"])
def test_loss_falls_on_every_source(tmp_path, source):
    overrides = [f"data.source={source}", "train.tokens=40000", "optim.lr=1e-2"]
    if source == "text":
        text = tmp_path / "corpus.txt"
        text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
        overrides.append(f"data.path={text}")
    if source == "memmap":
        tokens = np.tile(np.arange(200, dtype=np.uint16), 200)  # a counting sequence: learnable
        path = tmp_path / "tokens.bin"
        write_memmap(path, tokens, vocab_size=200)
        overrides.append(f"data.path={path}")
    result = train(config(*overrides), tmp_path / "run")
    assert result.status == "finished"
    assert result.final_eval_loss < 0.8 * result.initial_eval_loss, result


def test_resume_gives_the_same_trajectory_as_an_uninterrupted_run(tmp_path):
    run = config(
        "train.tokens=30000", "train.checkpoint_every=20", "train.log_every=5", "train.eval_every=10"
    )
    straight = train(run, tmp_path / "straight", [JsonlLogger(tmp_path / "straight" / "metrics.jsonl")])

    interrupted = tmp_path / "interrupted"
    with pytest.raises(SimulatedCrash):
        train(run, interrupted, [JsonlLogger(interrupted / "metrics.jsonl"), Crash(step=65)])
    assert latest_checkpoint(interrupted).name == "step-00000060"
    assert read_summary(interrupted) is None
    resumed = train(run, interrupted, [JsonlLogger(interrupted / "metrics.jsonl")])

    assert resumed.final_eval_loss == straight.final_eval_loss  # exactly, on a CPU
    assert resumed.initial_eval_loss == straight.initial_eval_loss
    assert losses(interrupted / "metrics.jsonl") == losses(tmp_path / "straight" / "metrics.jsonl")


def test_checkpoints_are_pruned_and_complete_and_the_last_step_is_kept(tmp_path):
    result = train(
        config("train.tokens=20000", "train.checkpoint_every=10", "train.keep_checkpoints=2"), tmp_path
    )
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert result.steps == 78 and folders == ["step-00000070", "step-00000078"]
    for name in folders:
        assert (tmp_path / "checkpoints" / name / "meta.json").is_file()


def test_a_nan_loss_ends_the_run_as_diverged_at_its_step(tmp_path):
    result = train(
        config("train.tokens=20000", "optim.lr=1e30", "optim.grad_clip=0", "optim.warmup_fraction=0"),
        tmp_path,
    )
    assert result.status == "diverged"
    assert result.diverged_step is not None and 1 <= result.diverged_step <= 10
    assert result.steps == result.diverged_step
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_step"] == result.diverged_step


def test_result_counts(tmp_path):
    run = config("train.tokens=10000")
    result = train(run, tmp_path)
    assert result.steps == 10000 // (8 * 32)
    assert result.tokens == result.steps * 8 * 32
    assert result.train_flops == result.tokens * 6 * result.n_params_non_embedding
    assert result.tokens_per_s > 0 and result.wall_s > 0


def test_compiled_training_follows_the_eager_trajectory(tmp_path):
    """train.compile runs training forwards through torch.compile (one graph, no breaks) and
    leaves evals and the diagnostics' forwards eager: the run is the same experiment."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    run = ["train.tokens=8000", "train.log_every=5"]
    eager = train(config(*run), tmp_path / "eager", [JsonlLogger(tmp_path / "eager" / "metrics.jsonl")])
    torch._dynamo.reset()  # forget graphs an earlier test compiled, so that this run compiles its own
    counters.clear()
    compiled = train(
        config(*run, "train.compile=true"),
        tmp_path / "compiled",
        [JsonlLogger(tmp_path / "compiled" / "metrics.jsonl")],
    )

    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
    assert compiled.run_id == eager.run_id  # compiling changes the speed, not the run
    eager_losses, compiled_losses = (
        losses(tmp_path / "eager" / "metrics.jsonl"),
        losses(tmp_path / "compiled" / "metrics.jsonl"),
    )
    assert [r[:2] for r in compiled_losses] == [r[:2] for r in eager_losses]
    assert [r[2] for r in compiled_losses] == pytest.approx([r[2] for r in eager_losses], rel=1e-4)
    records = read_jsonl(tmp_path / "compiled" / "metrics.jsonl")
    assert any(key.startswith("diag/") for r in records for key in r)


def test_compile_without_a_cpp_compiler_is_a_clear_error(tmp_path, monkeypatch):
    from trainers.errors import ConfigError

    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ or clang++ to be found
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError, match="train.compile: .*C\\+\\+ compiler"):
        train(config("train.tokens=2000", "train.compile=true"), tmp_path / "run")


def test_answers_only_loss_scores_the_composite_answers_and_learns_them(tmp_path):
    from trainers.data import build_source
    from trainers.data.vocab import Role
    from trainers.loop import IGNORED_TARGET, inputs_and_targets

    source = build_source(config("data.source=composite").data, seq_len=32, seed=0)
    tokens, roles = source.train_batch_with_roles(0, 8)
    inputs, targets = inputs_and_targets(tokens, roles)
    scored = targets != IGNORED_TARGET
    assert (inputs.numpy() == tokens[:, :-1]).all()
    assert (scored.numpy() == (roles[:, 1:] == Role.COMP_ANSWER)).all() and scored.any(dim=1).all()
    assert (targets[scored].numpy() == tokens[:, 1:][scored.numpy()]).all()

    run = config(
        "data.source=composite",
        "train.loss_on=answers",
        "train.tokens=300000",
        "optim.lr=1e-2",
        "init.scheme=gamma",
        "init.gamma=0.9",
    )
    result = train(run, tmp_path / "run", [JsonlLogger(tmp_path / "run" / "metrics.jsonl")])
    # Untrained, an answer costs about ln(vocab); learned, it costs far less.
    assert result.initial_eval_loss > 5 and result.final_eval_loss < 0.5 * result.initial_eval_loss, result


def test_a_short_wsd_run_is_step_for_step_the_trunk_of_a_longer_one(tmp_path):
    # Same warmup in tokens, same data order: the 60-step run and the 150-step run take the
    # same steps at the same lr until the short run's decay starts (step 48), so their losses
    # agree exactly there; that is what lets one long run stand in for the trunk of short ones.
    wsd = ["optim.schedule=wsd", "optim.warmup_tokens=2560", "optim.decay_fraction=0.2", "train.log_every=1"]
    trajectories = {}
    for steps in (60, 150):
        out = tmp_path / f"run-{steps}"
        train(config(*wsd, f"train.tokens={steps * 256}"), out, [JsonlLogger(out / "metrics.jsonl")])
        trajectories[steps] = [
            r["train/loss"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"
        ]
    short, long = trajectories[60], trajectories[150]
    assert len(short) == 60 and len(long) == 150
    assert short[:48] == long[:48]
    assert short[50] != long[50]  # then the short run decays and the long one does not


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated state.pt": (lambda c: _truncate(c / "state.pt"), "state.pt: "),
    "bit-flipped state.pt": (lambda c: _flip_a_byte(c / "state.pt"), "state.pt: checksum mismatch"),
    "truncated meta.json": (lambda c: _truncate(c / "meta.json"), "meta.json: unreadable or not valid JSON"),
    "missing state.pt": (lambda c: (c / "state.pt").unlink(), "state.pt: missing"),
}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    run = config("train.tokens=30000", "train.checkpoint_every=20", "train.keep_checkpoints=3")
    return run, train(run, folder / "run")


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_newest_checkpoint_is_passed_over_for_the_one_before(kind, straight_run, tmp_path, capfd):
    run, straight = straight_run
    with pytest.raises(SimulatedCrash):
        train(run, tmp_path, [Crash(step=65)])
    damage_it, reason = DAMAGE[kind]
    damage_it(tmp_path / "checkpoints" / "step-00000060")
    capfd.readouterr()
    resumed = train(run, tmp_path)
    warning = capfd.readouterr().err
    assert f"checkpoint step-00000060 is damaged ({reason}" in warning
    assert "; resuming from step-00000040" in warning
    assert resumed.final_eval_loss == straight.final_eval_loss  # exactly, on a CPU


def test_with_every_checkpoint_damaged_the_run_starts_over_with_a_warning(straight_run, tmp_path, capfd):
    run, straight = straight_run
    with pytest.raises(SimulatedCrash):
        train(run, tmp_path, [Crash(step=65)])
    for checkpoint in (tmp_path / "checkpoints").iterdir():
        _flip_a_byte(checkpoint / "state.pt")
    capfd.readouterr()
    resumed = train(run, tmp_path)
    warning = capfd.readouterr().err
    assert warning.count("is damaged (state.pt: checksum mismatch)") == 3
    assert "no usable checkpoint left: starting from step 0" in warning
    assert resumed.final_eval_loss == straight.final_eval_loss
