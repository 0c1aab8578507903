"""How the cost of gammaray's commands grows with the grid: 100, 1,000 and 10,000 points.

Each size is a grid of tiny runs: 5 widths × 10 token counts × 2 settings (γ, λ) × seeds. Every
command runs as a user runs it, in a fresh process, timed whole with its peak RSS:

  dry-run  ``gammaray submit GRID --dry-run``: validation, expansion and the run table, at
           every size;
  status   ``gammaray status NAME``, ``fit`` (``gammaray fit --grid NAME``) and ``report``
           (``gammaray report --grid NAME``), on a store holding the grid's runs, all finished,
           for the sizes in ``--store-sizes``.

The store is filled with what a tiny run logs: one run is trained for real first, and every
point of the grid gets a copy of its history (about 1,100 points: ten evals with their ``diag/``
metrics, the train records), its eval losses rescaled to a known L(N, D) per setting so that
the fits have something to find. Runs, params, tags, states and each metric's latest point go
through the driver's own ``orchestrator.tracking.store.Store``; the rest of each history is
inserted as rows in bulk (the driver's batched writes, at about 35 µs a point, would take half
a minute for 1,000 runs; ``bench_store_writes.py`` times them). The driver's own replay of finished runs into a fresh store is timed at the
smallest store size (``replay``: ``gammaray submit`` on a grid whose runs are all done).

The reference, in the same run: the same commands on a 1-point grid, the fixed cost of a
command (Python's and the libraries' imports, opening the store). Each row gives the time whole
and above that floor, and the growth exponent of the part above the floor between consecutive
sizes (d log t / d log n: 1 is linear).

    python benchmarks/bench_scale.py [--sizes 100,1000,10000] [--store-sizes 100,1000]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import yaml

WIDTHS = [(16, 32), (24, 48), (32, 64), (48, 96), (64, 128)]  # (d_model, d_ff)
TOKENS = [int(t) for t in np.geomspace(50_000, 500_000, 10).round(-3)]
SETTINGS = [(0.5, 0.1), (1.0, 1.0)]  # (γ, λ)
POINTS_PER_SEED = len(WIDTHS) * len(TOKENS) * len(SETTINGS)
# The known law the eval losses are rescaled to, per γ: L = E + A/N^α + B/D^β.
LAWS = {0.5: (1.8, 400.0, 0.50, 400.0, 0.45), 1.0: (1.8, 400.0, 0.55, 400.0, 0.45)}
# The headline figures (their targets are in targets.py): a command's seconds at a grid size.
HEADLINE = {"dry-run": 10_000, "status": 1_000, "report": 1_000}


def write_grid(folder: Path, points: int) -> Path:
    """A grid of ``points`` tiny runs (a multiple of 100), or the 1-point reference grid."""
    seeds = max(1, points // POINTS_PER_SEED)
    base = {
        "model.preset": "tiny",
        "init.scheme": "gamma",
        "train.batch_size": 8,
        "train.seq_len": 32,
        "train.tokens": TOKENS[0],
        "model.d_model": WIDTHS[0][0],
        "model.d_ff": WIDTHS[0][1],
    }
    grid: dict = {"name": f"scale-{points}", "base": base}
    if points > 1:
        if points % POINTS_PER_SEED:
            raise SystemExit(f"--sizes: multiples of {POINTS_PER_SEED}, or 1")
        grid["axes"] = {"train.tokens": TOKENS, "seed": list(range(seeds))}
        grid["zip"] = [
            {"model.d_model": [w for w, _ in WIDTHS], "model.d_ff": [f for _, f in WIDTHS]},
            {"init.gamma": [g for g, _ in SETTINGS], "optim.weight_decay": [wd for _, wd in SETTINGS]},
        ]
    grid["resources"] = {"cpus": 1}
    path = folder / f"scale-{points}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


# Runs the CLI and, at exit, writes its peak RSS (kB) to the file named by the first argument.
# VmHWM, not getrusage: a forked child's ru_maxrss keeps the parent's peak across exec.
_PEAK_RSS = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmHWM"))
    with open(out, "w") as handle:
        handle.write(kb)
atexit.register(peak)
sys.argv[0] = "gammaray"
runpy.run_module("orchestrator.cli", run_name="__main__")
"""


def command(args: list[str], env: dict[str, str], codes: tuple[int, ...] = (0, 1)) -> dict:
    """``gammaray ARGS`` in a fresh process: its wall time and peak RSS (MiB). Exit codes other
    than ``codes`` (fit and report exit 1 for a grid without a verdict) stop the benchmark."""
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, rss.name, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seconds = time.perf_counter() - started
        peak_kb = float(Path(rss.name).read_text() or "nan")
    if done.returncode not in codes:
        raise SystemExit(
            f"gammaray {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return {"s": round(seconds, 2), "rss_mib": round(peak_kb / 1024, 1)}


def store_command(name: str, grid: str) -> list[str]:
    """``status GRID``, ``fit --grid GRID`` or ``report --grid GRID``."""
    return [name, grid] if name == "status" else [name, "--grid", grid]


def grid_specs(grid_file: Path, home: str) -> list:
    """The grid's points as the driver expands them, with their run folders under ``home``."""
    from orchestrator.submit import plan

    saved = os.environ.get("GAMMARAY_HOME")
    os.environ["GAMMARAY_HOME"] = home
    try:
        return plan(grid_file, check_machine=False).specs
    finally:
        if saved is None:
            os.environ.pop("GAMMARAY_HOME")
        else:
            os.environ["GAMMARAY_HOME"] = saved


def template_run(grid_file: Path, home: str) -> tuple[list[dict], dict]:
    """Train the 1-point grid for real; its JSONL records and summary are every point's template."""
    from orchestrator.worker import train_point

    [spec] = grid_specs(grid_file, home)
    train_point(spec, attempt="template:1")
    out = Path(spec.out_dir)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records, json.loads((out / "summary.json").read_text())


def synthetic_loss(spec, rng: np.random.Generator) -> float:
    e, a, alpha, b, beta = LAWS[spec.config.init.gamma]
    clean = e + a / spec.n_params**alpha + b / spec.tokens**beta
    return float(clean * math.exp(rng.normal(0.0, 0.01)))


def finished_folders(grid_file: Path, home: str, template: tuple[list[dict], dict]) -> list:
    """Every point of the grid as a finished run folder: the template's records, its run id
    and counts, and eval losses scaled so that the last one is the point's L(N, D)."""
    from trainers.config import dump_yaml

    records, summary = template
    final = summary["final_eval_loss"]
    rng = np.random.default_rng(0)
    specs = grid_specs(grid_file, home)
    for spec in specs:
        scale = synthetic_loss(spec, rng) / final
        counts = {"run_id": spec.run_id, "n_params": spec.n_params, "tokens": spec.tokens}
        lines = []
        for record in records:
            record = {**record, **{k: v for k, v in counts.items() if k in record}}
            for key in ("eval/loss", "final_eval_loss", "initial_eval_loss"):
                if key in record:
                    record[key] *= scale
            lines.append(json.dumps(record))
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        (out / "config.yaml").write_text(dump_yaml(spec.config))
        done = {**summary, **counts, "final_eval_loss": summary["final_eval_loss"] * scale}
        done["initial_eval_loss"] = summary["initial_eval_loss"] * scale
        (out / "summary.json").write_text(json.dumps(done))
    return specs


def fill_store(uri: str, grid: str, specs: list) -> float:
    """Every spec as a finished MLflow run with its folder's history; returns the seconds taken.

    The driver's Store creates the runs (params, tags) and logs each metric's last point (which
    MLflow keeps as the run's latest value); the earlier points are inserted as rows.
    """
    from orchestrator.tracking.replay import pending_batches, read_records
    from orchestrator.tracking.store import TAG_ARTIFACTS, TAG_CURSOR, Store
    from trainers import store_reader

    started = time.perf_counter()
    store = Store(uri)
    experiment_id = store.experiment_id(grid, create=True)
    rows = []
    for spec in specs:
        stored = store.create_run(experiment_id, grid, spec.run_id, spec.label, spec.params())
        last: dict[str, tuple[float, int]] = {}
        cursor = None
        now = int(time.time() * 1000)
        for metrics, batch_cursor in pending_batches(read_records(spec.out_dir), stored.cursor):
            cursor = batch_cursor
            for key, value, step in metrics:
                if key in last:
                    old_value, old_step = last[key]
                    rows.append(
                        {"run_uuid": stored.mlflow_id, "key": key, "value": old_value, "timestamp": now,
                         "step": old_step, "is_nan": False}
                    )  # fmt: skip
                last[key] = (value, step)
        tags = {TAG_CURSOR: cursor.to_tag(), TAG_ARTIFACTS: "1"} if cursor else {}
        store.log(stored.mlflow_id, [(k, v, s) for k, (v, s) in last.items()], tags=tags)
        store.set_state(stored, "finished", None)
    with store.reader.engine.begin() as connection:
        for start in range(0, len(rows), 50_000):
            connection.execute(store_reader.metrics.insert(), rows[start : start + 50_000])
    return time.perf_counter() - started


# A growth exponent needs a measurable time at the smaller size: below this, it is noise.
MIN_GROWTH_S = 0.3


def with_growth(rows: list[dict], floor: float) -> list[dict]:
    """Each row (one command at growing sizes) with its seconds above ``floor`` and the growth
    exponent of those seconds since the previous size (1: linear)."""
    out, previous = [], None
    for row in rows:
        row = {**row, "above_floor_s": round(max(row["s"] - floor, 0.01), 2)}
        if previous is not None and previous["above_floor_s"] >= MIN_GROWTH_S:
            ratio = row["above_floor_s"] / previous["above_floor_s"]
            row["growth_exponent"] = round(math.log(ratio) / math.log(row["points"] / previous["points"]), 2)
        out.append(row)
        previous = row
    return out


def main() -> None:
    from orchestrator.tracking.replay import record_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="grid sizes for the dry run")
    parser.add_argument("--store-sizes", default="100,1000", help="grid sizes for status, fit and report")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    store_sizes = [int(s) for s in args.store_sizes.split(",") if s]
    root = Path(tempfile.mkdtemp(prefix="gammaray-bench-scale-"))
    home = str(root / "home")
    env = {**os.environ, "GAMMARAY_HOME": home, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{root / 'home' / 'mlflow.db'}"
    try:
        print("training the template run", file=sys.stderr, flush=True)
        one_point = write_grid(root, 1)
        template = template_run(one_point, home)
        # The floors: a 1-point dry run, and each store command on a grid the store lacks
        # (its imports and opening the store, then exit 2).
        floors = {"dry-run": command(["submit", str(one_point), "--dry-run"], env)}
        fill_store(uri, "scale-1", grid_specs(one_point, home))
        for name in ("status", "fit", "report"):
            floors[name] = command(store_command(name, "absent"), env, codes=(2,))
        timed: dict[str, list[dict]] = {name: [] for name in floors}
        for points in sizes:
            print(f"dry run of {points} points", file=sys.stderr, flush=True)
            grid_file = write_grid(root, points)
            timed["dry-run"].append(
                {"points": points, **command(["submit", str(grid_file), "--dry-run"], env)}
            )
        fills = []
        for index, points in enumerate(store_sizes):
            grid_file = write_grid(root, points)
            print(f"filling a store with {points} finished runs", file=sys.stderr, flush=True)
            specs = finished_folders(grid_file, home, template)
            fill = {
                "points": points,
                "history_points_per_run": sum(len(record_metrics(r)) for r in template[0]),
            }
            if index == 0:  # the driver's own replay of finished runs, into a store of its own
                replay_uri = f"sqlite:///{root / 'replay' / 'mlflow.db'}"
                fill["driver_replay_s"] = command(
                    ["submit", str(grid_file), "--tracking-uri", replay_uri], env
                )["s"]
            fill["fill_s"] = round(fill_store(uri, f"scale-{points}", specs), 1)
            fills.append(fill)
            for name in ("status", "fit", "report"):
                print(f"{name} of {points} runs", file=sys.stderr, flush=True)
                timed[name].append({"points": points, **command(store_command(name, f"scale-{points}"), env)})
            shutil.rmtree(Path(home) / "grids" / f"scale-{points}", ignore_errors=True)
        rows = [
            {"command": name, **row}
            for name, series in timed.items()
            for row in [{"points": 1, **floors[name]}, *with_growth(series, floors[name]["s"])]
        ]
        headline = {
            f"scale_{name.replace('-', '_')}_{points}_s": row["s"]
            for name, points in HEADLINE.items()
            for row in timed[name]
            if row["points"] == points
        }
        print(json.dumps({**headline, "commands": rows, "store_fill": fills}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
