"""On a CUDA GPU: both backends train in bf16 (NCCL for DeepSpeed) and agree with each other.

Skipped where no GPU is visible (``tests/conftest.py``); run them on a GPU machine with
``pytest -m gpu``.
"""

import pytest

from trainers.callbacks import JsonlLogger
from trainers.checkpoint import latest_checkpoint
from trainers.config import load_run_config
from trainers.launch import run_local
from trainers.model import Architecture, Transformer
from trainers.optim import OptimConfig, build_optimizer

pytestmark = pytest.mark.gpu

RUN = [
    "model.preset=tiny",
    "train.batch_size=8",
    "train.seq_len=32",
    "train.tokens=12800",
    "train.log_every=5",
    "train.eval_every=25",
    "train.checkpoint_every=25",
    "optim.lr=1e-2",
    "train.device=cuda",
    "train.precision=bf16",
]


def train(folder, overrides=()):
    config = load_run_config(None, [*RUN, *overrides])
    return run_local(config, folder, [JsonlLogger(folder / "metrics.jsonl")])


@pytest.fixture(scope="module")
def torch_gpu_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch-gpu")
    return folder, train(folder)


def test_torch_backend_trains_in_bf16_on_the_gpu(torch_gpu_run):
    folder, result = torch_gpu_run
    assert result.status == "finished"
    assert result.final_eval_loss < 0.9 * result.initial_eval_loss
    assert latest_checkpoint(folder) is not None


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_deepspeed_zero2_trains_on_the_gpu_and_matches_torch(tmp_path, torch_gpu_run, compile):
    _, torch_result = torch_gpu_run
    result = train(
        tmp_path,
        ["train.backend=deepspeed", "train.processes=1", "train.zero_stage=2", f"train.compile={compile}"],
    )
    assert result.status == "finished"
    assert latest_checkpoint(tmp_path) is not None
    # Same init and data; DeepSpeed keeps bf16 weights (fp32 master), torch fp32 weights under
    # autocast, so they agree to bf16's precision at the start and drift apart a little after.
    assert result.initial_eval_loss == pytest.approx(torch_result.initial_eval_loss, rel=2e-2)
    assert result.final_eval_loss < 0.9 * result.initial_eval_loss
    assert result.final_eval_loss == pytest.approx(torch_result.final_eval_loss, rel=1e-1)


def test_optimizer_uses_the_fused_kernel_on_the_gpu():
    model = Transformer(Architecture(2, 32, 2, 64, 100, 16, 1e-12, "off", False, 10000.0)).cuda()
    optimizer = build_optimizer(model, OptimConfig())
    assert optimizer.defaults["fused"] and not optimizer.defaults["foreach"]
