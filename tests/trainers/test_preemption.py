"""SIGTERM and SIGINT stop a run at its next step with a checkpoint of it, and the same command
resumes to the loss an uninterrupted run reaches. Real processes, real signals."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli
from trainers.checkpoint import latest_checkpoint
from trainers.config import load_run_config
from trainers.loop import read_summary, train

RUN = [
    "model.preset=tiny",
    "train.batch_size=8",
    "train.seq_len=32",
    "train.tokens=128000",  # 500 steps
    "train.log_every=5",
    "train.eval_every=250",
    "train.checkpoint_every=100000",  # none on its own: the only checkpoint is the stop's
    "train.threads=1",
]


def train_steps(folder):
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"kind": "train"' in line]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return train(load_run_config(None, RUN), tmp_path_factory.mktemp("straight"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_at_a_checkpoint_and_the_same_command_resumes_it(tmp_path, signum, straight):
    out = tmp_path / "run"
    command = ["train", *[a for o in RUN for a in ("--set", o)], "--out", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *command], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not any(step >= 100 for step in train_steps(out)):
        assert process.poll() is None and time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signum)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 128 + signum, stderr
    assert time.monotonic() - sent < 30  # within the default grace
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and read_summary(out) is None
    stopped_at = int(checkpoint.name.removeprefix("step-"))
    assert 100 <= stopped_at < 500 and stopped_at == train_steps(out)[-1]
    assert f"stopped by {signal.Signals(signum).name} at step {stopped_at} with a checkpoint" in stderr

    resumed = run_cli(*command, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[-1])["final_eval_loss"] == straight.final_eval_loss
