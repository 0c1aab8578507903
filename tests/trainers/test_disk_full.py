"""A checkpoint write that fails for want of space ends the run with one line naming the folder
and the reason, removes the half-written folder, keeps the checkpoints before it, and the same
command resumes once there is room. A real file system that fills up: a small tmpfs."""

import subprocess

import pytest

from tests.conftest import run_cli
from trainers.config import load_run_config
from trainers.loop import train

RUN = [
    "model.preset=tiny",
    "train.tokens=60000",
    "train.batch_size=8",
    "train.seq_len=32",
    "train.checkpoint_every=50",  # a tiny checkpoint is ~0.5 MB: the second does not fit in 1.2 MB
    "train.threads=1",
]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_fails_the_run_in_one_line_and_the_run_resumes_after_space_is_freed(small_disk, tmp_path):
    out = small_disk / "run"
    command = ["train", *[a for o in RUN for a in ("--set", o)], "--out", str(out)]
    failed = run_cli(*command)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    (line,) = [line for line in failed.stderr.splitlines() if line.startswith("gammaray: error:")]
    assert f"cannot write checkpoint {out}/checkpoints/.staging-step-00000100" in line
    assert "bytes free there); the checkpoints before it are kept" in line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000050"]

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    resumed = run_cli(*command, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 50" in resumed.stderr and "is damaged" not in resumed.stderr
    straight = train(load_run_config(None, RUN), tmp_path / "straight")
    assert f'"final_eval_loss": {straight.final_eval_loss}' in resumed.stdout
