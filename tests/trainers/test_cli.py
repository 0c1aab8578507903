"""``gammaray train`` and ``gammaray inspect`` as a user runs them."""

import json

from tests.conftest import run_cli

REQUIRED = {
    "status",
    "n_params",
    "n_params_non_embedding",
    "tokens",
    "train_flops",
    "initial_eval_loss",
    "final_eval_loss",
    "tokens_per_s",
    "wall_s",
}
TINY = [
    "--set",
    "model.preset=tiny",
    "--set",
    "train.tokens=20000",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.seq_len=32",
    "--set",
    "train.threads=1",
]


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_json_and_idempotent_rerun(tmp_path):
    out = tmp_path / "run"
    first = run_cli("train", *TINY, "--set", "optim.lr=1e-2", "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr
    result = last_json(first.stdout)
    assert set(result) >= REQUIRED
    assert result["status"] == "finished"
    assert result["final_eval_loss"] < result["initial_eval_loss"]
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints"} <= {p.name for p in out.iterdir()}
    assert "eval loss" in first.stderr  # progress goes to stderr, stdout stays clean for --json

    again = run_cli("train", *TINY, "--set", "optim.lr=1e-2", "--out", str(out), "--json")
    assert again.returncode == 0
    assert "already finished" in again.stderr
    assert last_json(again.stdout)["final_eval_loss"] == result["final_eval_loss"]


def test_train_default_folder_is_in_the_workspace_under_the_run_id(tmp_path):
    done = run_cli("train", *TINY, "--json", env={"GAMMARAY_HOME": str(tmp_path / "ws")})
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)
    assert result["out_dir"] == str(tmp_path / "ws" / "train" / result["run_id"])


def test_train_reads_a_run_file(tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        "model:\n  preset: tiny\ntrain:\n  tokens: 5000\n  batch_size: 4\n  seq_len: 16\n  threads: 1\n"
    )
    done = run_cli("train", str(run_file), "--out", str(tmp_path / "run"), "--json")
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["tokens"] == (5000 // 64) * 64


def test_inspect_human_table():
    done = run_cli("inspect", "--set", "model.preset=100k", "--set", "init.gamma=0.5")
    assert done.returncode == 0, done.stderr
    assert "blocks.1.mlp.down_proj.weight" in done.stdout
    assert "non-embedding" in done.stdout
