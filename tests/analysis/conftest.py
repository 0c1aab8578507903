"""Shared fixtures for the analysis tests: synthetic CSVs and a small MLflow grid store."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # lets the suite run from a checkout without an install
    sys.path.insert(0, str(ROOT))

from analysis.fitting.fit import loss_nd  # noqa: E402
from analysis.synthetic import synthetic_runs  # noqa: E402

TRUTH_FAST = {"E": 1.69, "A": 406.4, "alpha": 0.36, "B": 410.7, "beta": 0.28}
TRUTH_SLOW = {"E": 1.69, "A": 406.4, "alpha": 0.26, "B": 410.7, "beta": 0.28}


@pytest.fixture
def two_gamma_csv(tmp_path: Path) -> Path:
    """Two γ groups, γ=1.0 with the larger α; a 5×4 N×D grid each."""
    frame = synthetic_runs(
        {1.0: TRUTH_FAST, 0.5: TRUTH_SLOW},
        n_params=np.logspace(7, 10, 5),
        tokens=np.logspace(9, 12, 4),
        noise=0.005,
        seed=7,
    )
    path = tmp_path / "two_gamma.csv"
    frame.to_csv(path, index=False)
    return path


def write_grid(uri: str, name: str, runs: list[dict]) -> None:
    """Log ``runs`` the way the orchestrator does: one MLflow run per grid point.

    Each run dict has ``run_id``, ``state``, optional ``reason``, ``params`` (flattened config
    plus N, N_non_embedding, D, FLOPs) and ``history`` (list of (step, train_loss, eval_loss, tokens)).
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(name)
    now = int(time.time() * 1000)
    for run in runs:
        tags = {"gammaray.grid": name, "gammaray.run_id": run["run_id"], "gammaray.state": run["state"]}
        if run.get("reason"):
            tags["gammaray.reason"] = run["reason"]
        created = client.create_run(exp_id, tags=tags)
        metrics = []
        for step, train_loss, eval_loss, tokens in run.get("history", []):
            metrics += [
                Metric("train/loss", train_loss, now, step),
                Metric("tokens", tokens, now, step),
                Metric("tokens_per_s", 1000.0, now, step),
                Metric("diag/cosine_mean", 0.1, now, step),
            ]
            if eval_loss is not None:
                metrics.append(Metric("eval/loss", eval_loss, now, step))
        params = [Param(k, str(v)) for k, v in run["params"].items()]
        client.log_batch(
            created.info.run_id, metrics=metrics, params=params, tags=[RunTag("mlflow.note.content", "test")]
        )
        client.set_terminated(created.info.run_id, "FINISHED" if run["state"] == "finished" else "FAILED")


def smoke_runs(seed: int = 0) -> list[dict]:
    """A 2 γ × 5 N × 3 D grid with histories, plus one failed and one diverged run."""
    rng = np.random.default_rng(seed)
    runs = []
    for gamma, truth in ((1.0, TRUTH_FAST), (0.5, TRUTH_SLOW)):
        for n in (2e7, 6e7, 1.8e8, 5.4e8, 1.6e9):
            for d in (5e9, 1.5e10, 4.5e10):
                final = float(loss_nd(n, d, **truth) * np.exp(rng.normal(0, 0.004)))
                steps = [100, 200, 400, 800]
                history = [
                    (s, final * (1 + 2.0 / s**0.5) * 1.01, final * (1 + 2.0 / s**0.5), d * s / 800)
                    for s in steps
                ]
                history[-1] = (800, final * 1.01, final, d)
                runs.append(
                    {
                        "run_id": f"g{gamma}-n{n:.0e}-d{d:.0e}",
                        "state": "finished",
                        "params": {
                            "model.preset": f"p{int(n)}",
                            "init.gamma": gamma,
                            "init.scheme": "gamma",
                            "optim.weight_decay": 0.1,
                            "train.tokens": int(d),
                            "seed": 0,
                            "N": int(n),
                            "N_non_embedding": int(n * 0.9),
                            "D": int(d),
                            "FLOPs": 6 * n * d,
                        },
                        "history": history,
                    }
                )
    runs.append(
        {
            "run_id": "g1.0-failed",
            "state": "failed",
            "reason": "CUDA out of memory",
            "params": {
                "model.preset": "big",
                "init.gamma": 1.0,
                "init.scheme": "gamma",
                "optim.weight_decay": 0.1,
                "train.tokens": int(1e10),
                "seed": 0,
                "N": int(5e9),
                "N_non_embedding": int(4.5e9),
                "D": int(1e10),
                "FLOPs": 3e20,
            },
            "history": [(100, 9.0, None, 1e8)],
        }
    )
    runs.append(
        {
            "run_id": "g0.5-diverged",
            "state": "diverged",
            "reason": "loss is NaN at step 120",
            "params": {
                "model.preset": "big",
                "init.gamma": 0.5,
                "init.scheme": "gamma",
                "optim.weight_decay": 0.1,
                "train.tokens": int(1e10),
                "seed": 0,
                "N": int(5e9),
                "N_non_embedding": int(4.5e9),
                "D": int(1e10),
                "FLOPs": 3e20,
            },
            "history": [(100, 12.0, 11.0, 1e8)],
        }
    )
    return runs


@pytest.fixture(scope="session")
def grid_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite MLflow store holding the grid ``smoke`` (see :func:`smoke_runs`)."""
    pytest.importorskip("mlflow")
    directory = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    write_grid(uri, "smoke", smoke_runs())
    return uri
