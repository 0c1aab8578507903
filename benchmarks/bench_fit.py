"""Bootstrap speed of the joint fit L(N, D) = E + A·N^-α + B·D^-β on 250 runs.

Measures, side by side:

- ``fit_s``: one full-data fit (grid of starts scored in one pass, L-BFGS-B from the best
  starts, Gauss–Newton polish);
- ``bootstrap_1000_s``: 1000 resamples the way the tool runs them (warm start from the
  full-data fit, all resamples as one vectorized batch, per-resample fallback when needed);
- ``lbfgsb_warm_1000_s``: one warm-started L-BFGS-B call per resample, timed on a subset and
  extrapolated to 1000;
- ``naive_1000_s``: a multi-start fit per resample without warm start (the reference),
  timed on a few resamples and extrapolated to 1000.

The last line of output is one JSON document. Run: ``python benchmarks/bench_fit.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.fitting.bootstrap import bootstrap_fit, resample_weights
from analysis.fitting.fit import design, fit_power_law
from analysis.fitting.objective import Layout, minimize_from, params_to_theta, single_threaded_blas
from analysis.synthetic import CHINCHILLA, synthetic_runs


def measure(
    resamples: int = 1000, naive_resamples: int = 5, lbfgsb_resamples: int = 100, seed: int = 0
) -> dict:
    args = argparse.Namespace(
        resamples=resamples, naive_resamples=naive_resamples, lbfgsb_resamples=lbfgsb_resamples, seed=seed
    )
    frame = synthetic_runs(
        n_params=np.logspace(7, 10, 10), tokens=np.logspace(9, 12, 25), noise=0.01, seed=args.seed
    )
    assert len(frame) == 250

    start = time.perf_counter()
    fit = fit_power_law(frame["N"], frame["D"], frame["loss"], "joint")
    fit_s = time.perf_counter() - start

    start = time.perf_counter()
    boot = bootstrap_fit(fit, args.resamples, seed=args.seed)
    boot_s = time.perf_counter() - start

    log_x, log_loss = design("joint", fit.n_params, fit.tokens), np.log(fit.loss)
    layout = Layout.single(fit.n_points)
    theta0 = params_to_theta([fit.params], "joint", layout)
    weights = resample_weights(fit.n_points, args.lbfgsb_resamples, np.random.default_rng(args.seed))
    start = time.perf_counter()
    with single_threaded_blas():
        for w in weights:
            minimize_from(theta0, log_x, log_loss, w, layout)
    lbfgsb_s = (time.perf_counter() - start) * args.resamples / args.lbfgsb_resamples

    start = time.perf_counter()
    bootstrap_fit(fit, args.naive_resamples, seed=args.seed, warm_start=False)
    naive_s = (time.perf_counter() - start) * args.resamples / args.naive_resamples

    result = {
        "n_points": fit.n_points,
        "resamples": args.resamples,
        "fit_s": round(fit_s, 3),
        "bootstrap_1000_s": round(boot_s * 1000 / args.resamples, 2),
        "lbfgsb_warm_1000_s": round(lbfgsb_s * 1000 / args.resamples, 2),
        "naive_1000_s": round(naive_s * 1000 / args.resamples, 1),
        "speedup_vs_naive": round(naive_s / boot_s, 1),
        "speedup_vs_lbfgsb_warm": round(lbfgsb_s / boot_s, 2),
        "alpha": round(fit.params["alpha"], 4),
        "alpha_ci": [round(v, 4) for v in boot.ci["alpha"]],
        "beta": round(fit.params["beta"], 4),
        "beta_ci": [round(v, 4) for v in boot.ci["beta"]],
        "truth": {"alpha": CHINCHILLA["alpha"], "beta": CHINCHILLA["beta"]},
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(
        f"full fit {fit_s:.2f} s; {args.resamples} resamples {boot_s:.2f} s "
        f"(warm L-BFGS-B ≈ {lbfgsb_s:.1f} s, naive multi-start ≈ {naive_s:.0f} s)",
        file=sys.stderr,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--naive-resamples", type=int, default=5, help="resamples timed for the naive reference"
    )
    parser.add_argument("--lbfgsb-resamples", type=int, default=100, help="resamples timed for warm L-BFGS-B")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(measure(args.resamples, args.naive_resamples, args.lbfgsb_resamples, args.seed)))


if __name__ == "__main__":
    main()
