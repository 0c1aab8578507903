"""The DeepSpeed backend really runs on this CPU (gloo), and agrees with the torch backend."""

import pytest

from trainers.callbacks import JsonlLogger, read_jsonl
from trainers.checkpoint import latest_checkpoint
from trainers.config import load_run_config
from trainers.errors import TrainingError
from trainers.launch import run_local
from trainers.loop import read_summary

pytestmark = pytest.mark.slow

RUN = [
    "model.preset=tiny",
    "train.batch_size=8",
    "train.seq_len=32",
    "train.tokens=12800",
    "train.log_every=1",
    "train.eval_every=25",
    "train.checkpoint_every=25",
    "train.threads=1",
    "optim.lr=1e-2",
]


def train_losses(folder):
    return [r["train/loss"] for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "train"]


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch")
    result = run_local(load_run_config(None, RUN), folder, [JsonlLogger(folder / "metrics.jsonl")])
    return folder, result


@pytest.mark.parametrize(
    ("stage", "compile"), [(2, False), (3, False), (2, True)], ids=["zero2-cli", "zero3", "zero2-compiled"]
)
def test_zero_with_two_processes_trains_and_matches_torch(tmp_path, torch_run, stage, compile):
    torch_folder, torch_result = torch_run
    overrides = [
        *RUN,
        "train.backend=deepspeed",
        "train.processes=2",
        f"train.zero_stage={stage}",
        f"train.compile={compile}",
    ]
    if stage == 2 and not compile:  # as a user runs it: `gammaray train`, two processes started for it
        from tests.conftest import run_cli

        done = run_cli(
            "train", *[a for o in overrides for a in ("--set", o)], "--out", str(tmp_path), "--json"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "eval loss" in done.stderr  # rank 0's progress reached the console
        assert '"status": "finished"' in done.stdout.strip().splitlines()[-1]
        result = read_summary(tmp_path)
    else:
        result = run_local(
            load_run_config(None, overrides), tmp_path, [JsonlLogger(tmp_path / "metrics.jsonl")]
        )

    assert result.status == "finished"
    assert result.final_eval_loss < 0.9 * result.initial_eval_loss
    assert result.initial_eval_loss == pytest.approx(torch_result.initial_eval_loss, rel=1e-5)
    # Two processes each take half the batch; the averaged gradient is the full batch's, so the
    # first steps agree with one process up to float summation order.
    ds, plain = train_losses(tmp_path), train_losses(torch_folder)
    assert len(ds) == len(plain) == 50
    assert ds[:10] == pytest.approx(plain[:10], rel=1e-3)
    assert result.final_eval_loss == pytest.approx(torch_result.final_eval_loss, rel=2e-2)
    assert latest_checkpoint(tmp_path) is not None


ONE_PROCESS = [*RUN, "train.backend=deepspeed", "train.processes=1", "train.log_every=5"]


@pytest.fixture(scope="module")
def deepspeed_straight(tmp_path_factory):
    """A one-process DeepSpeed run trained without interruption: what every resume must match."""
    folder = tmp_path_factory.mktemp("deepspeed-straight")
    result = run_local(load_run_config(None, ONE_PROCESS), folder, [JsonlLogger(folder / "metrics.jsonl")])
    return folder, result


def test_deepspeed_resume_gives_the_same_trajectory(tmp_path, deepspeed_straight):
    from tests.trainers.test_loop import Crash, losses

    straight_folder, straight = deepspeed_straight
    config = load_run_config(None, ONE_PROCESS)
    folder = tmp_path / "interrupted"
    with pytest.raises(TrainingError, match="a training process failed"):
        run_local(config, folder, [JsonlLogger(folder / "metrics.jsonl"), Crash(step=30)])
    assert latest_checkpoint(folder).name == "step-00000025"
    resumed = run_local(config, folder, [JsonlLogger(folder / "metrics.jsonl")])
    assert resumed.final_eval_loss == straight.final_eval_loss
    assert losses(folder / "metrics.jsonl") == losses(straight_folder / "metrics.jsonl")


def test_a_damaged_deepspeed_checkpoint_is_passed_over(tmp_path, capfd, deepspeed_straight):
    from tests.trainers.test_loop import Crash

    _, straight = deepspeed_straight
    config = load_run_config(None, [*ONE_PROCESS, "train.checkpoint_every=10"])  # not part of the result
    folder = tmp_path / "interrupted"
    with pytest.raises(TrainingError, match="a training process failed"):
        run_local(config, folder, [Crash(step=35)])
    newest = latest_checkpoint(folder)
    assert newest.name == "step-00000030"
    biggest = max(
        (p for p in newest.rglob("*") if p.is_file() and p.name != "meta.json"),
        key=lambda p: p.stat().st_size,
    )
    biggest.write_bytes(biggest.read_bytes()[:100])  # a DeepSpeed shard cut short
    capfd.readouterr()
    resumed = run_local(config, folder, [])
    warning = capfd.readouterr().err
    assert f"checkpoint step-00000030 is damaged ({biggest.relative_to(newest)}: 100 bytes" in warning
    assert "resuming from step-00000020" in warning
    assert resumed.final_eval_loss == straight.final_eval_loss


def test_a_deepspeed_run_exports_its_final_weights(tmp_path, deepspeed_straight):
    import torch
    from transformers import LlamaForCausalLM

    from trainers.data import build_source
    from trainers.export import export_run, load_trained

    folder, straight = deepspeed_straight
    out = export_run(folder, tmp_path / "hf")  # gathered from the ZeRO checkpoint of the last step
    run, model, step = load_trained(folder)
    assert step == straight.steps
    source = build_source(run.config.data, seq_len=run.config.train.seq_len, seed=run.config.seed)
    batch = torch.from_numpy(source.eval_batch())
    hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert model.loss(batch).item() == pytest.approx(straight.final_eval_loss, rel=1e-5)
        assert (model(batch[:4, :-1]) - hf(batch[:4, :-1]).logits).abs().max().item() < 1e-4
