"""Orchestration overhead: a grid of 16 tiny runs through Ray against the ideal makespan.

In one process, for each repeat:
  alone  every run of the grid trained one at a time here, through the worker's own entry point
         (``orchestrator.worker.train_point``: the spec's config and threads, metrics JSONL,
         evals and checkpoints), each timed start to end, before Ray starts;
  grid   the same runs submitted with ``orchestrator.submit.run`` into a fresh workspace: Ray
         tasks, worker imports (started when the cluster starts, so they overlap the creation
         of the tracking store, as in a real submission), scheduling, the driver replaying
         every metric into MLflow, the final flush. Its makespan is ``run()``'s wall time.
The ideal makespan is sum(alone) / slots, slots being the runs the grid runs at once here (two
one-CPU runs on two cores). Ratio = makespan / ideal; the target is ≤ 1.15. The runs differ
only in γ and seed, so they cost the same: ``--alone-sample K`` times K of them alone (spread
over the grid) and takes their mean for every run, to save time in the quick suite.

Two one-time costs are measured and reported but not counted, because a session pays them once,
not per grid: starting the local Ray cluster, and creating the workspace's MLflow database.

    python benchmarks/bench_orchestration.py [--runs 16] [--tokens 300000] [--repeats 1]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from orchestrator.cluster import connect, disconnect  # noqa: E402
from orchestrator.plan import Capacity, concurrent_runs  # noqa: E402
from orchestrator.spec import expand  # noqa: E402
from orchestrator.submit import plan, run  # noqa: E402
from orchestrator.worker import train_point  # noqa: E402


def write_grid(folder: Path, runs: int, tokens: int) -> Path:
    """``runs`` tiny runs (γ × seed), one CPU each, two at a time."""
    gammas = [0.5, 0.75, 1.0, 1.25]
    if runs % len(gammas):
        raise SystemExit(f"--runs: a multiple of {len(gammas)} (γ × seed)")
    seeds = list(range(runs // len(gammas)))
    grid = {
        "name": "bench-orchestration",
        "base": {
            "model.preset": "tiny",
            "train.batch_size": 32,
            "train.seq_len": 128,
            "train.tokens": tokens,
            "train.log_every": 10,
        },
        "axes": {"init.gamma": gammas, "seed": seeds},
        "resources": {"cpus": 1},
        "max_parallel": 2,
    }
    path = folder / "bench-orchestration.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


class workspace:
    """GAMMARAY_HOME pointed at a folder for the duration."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self) -> Path:
        self.saved = os.environ.get("GAMMARAY_HOME")
        os.environ["GAMMARAY_HOME"] = str(self.folder)
        return self.folder

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop("GAMMARAY_HOME", None)
        else:
            os.environ["GAMMARAY_HOME"] = self.saved


def alone_seconds(grid_file: Path, folder: Path, sample: int | None) -> list[float]:
    """Runs trained by themselves in this process (all, or ``sample`` of them spread over the
    grid), timed from the worker's entry to its result, after an untimed short run."""
    from orchestrator.grid import load_grid

    with workspace(folder):
        specs = expand(load_grid(grid_file), folder)
    if sample:
        specs = specs[:: max(1, len(specs) // sample)][:sample]
    # One untimed run first: a process's first run pays one-time costs (imports such as the
    # torch._dynamo that the first optimizer pulls in, data tables) that the grid's workers pay
    # once each; the reference is what a run costs in a warm process. A tenth of the tokens
    # pays them all.
    warm_up = folder / "warm-up"
    warm_up.mkdir(parents=True)
    grid = yaml.safe_load(grid_file.read_text())
    warm_up_grid = write_grid(warm_up, len(grid["axes"]["init.gamma"]), grid["base"]["train.tokens"] // 10)
    with workspace(warm_up):
        train_point(expand(load_grid(warm_up_grid), warm_up)[0], attempt="warm-up:1")
    seconds = []
    for spec in specs:
        start = time.perf_counter()
        train_point(spec, attempt="alone:1")
        seconds.append(time.perf_counter() - start)
    return seconds


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process (the driver), Ray's workers and Ray's own
    processes (GCS, raylet, dashboard and its agents, log monitor), all of them children of a
    driver that started the local cluster."""
    import psutil

    used = {"driver": sum(psutil.Process().cpu_times()[:2]), "ray_workers": 0.0, "ray_system": 0.0}
    for child in psutil.Process().children(recursive=True):
        try:
            # A worker renames itself "ray::IDLE", "ray::<task name>", ...
            kind = "ray_workers" if " ".join(child.cmdline()).startswith("ray::") else "ray_system"
            used[kind] += sum(child.cpu_times()[:2])
        except psutil.Error:  # a process that ended meanwhile
            pass
    return used


def grid_makespan(grid_file: Path, folder: Path) -> dict:
    """One submission into a fresh workspace: its makespan, and CPU seconds by kind of process."""
    from orchestrator.tracking import Store

    with workspace(folder):
        planned = plan(grid_file)
        start = time.perf_counter()
        Store(planned.tracking_uri)  # the workspace's database, created once per workspace
        store_s = time.perf_counter() - start
        before = cpu_seconds()
        start = time.perf_counter()
        with open(os.devnull, "w") as quiet:
            outcome = run(planned, show_progress=False, stream=quiet)
        makespan = time.perf_counter() - start
        after = cpu_seconds()
    if outcome.counts["finished"] != len(planned.specs):
        raise RuntimeError(f"the benchmark grid did not finish: {outcome.counts}")
    cpu = {f"cpu_s_{kind}": after[kind] - before[kind] for kind in after}
    return {"makespan_s": makespan, "store_create_s": store_s, "trained": outcome.trained, **cpu}


def measure(runs: int = 16, tokens: int = 300_000, repeats: int = 1, alone_sample: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gammaray-bench-") as root:
        root_path = Path(root)
        grid_file = write_grid(root_path, runs, tokens)
        # The reference first, before Ray starts: the local cluster begins by warming its workers
        # up (``orchestrator.worker.warm_up_workers``), and that must overlap only what it
        # overlaps in a real submission (creating the tracking store, planning), not these runs.
        alone_runs = [alone_seconds(grid_file, root_path / f"alone-{repeat}", alone_sample) for repeat in range(repeats)]
        capacity = Capacity.this_machine()
        with workspace(root_path / "probe"):
            specs = plan(grid_file).specs
        slots = concurrent_runs(specs, capacity, 2)
        start = time.perf_counter()
        cluster = connect(None, capacity, warm_workers=slots)  # as run() would; run() reuses this connection
        ray_start_s = time.perf_counter() - start
        try:
            rows = []
            for repeat, alone in enumerate(alone_runs):
                submitted = grid_makespan(grid_file, root_path / f"grid-{repeat}")
                ideal = statistics.mean(alone) * runs / slots
                makespan = submitted["makespan_s"]
                # CPU the workers spent beyond the runs' own (imports, warm-up, two runs sharing caches).
                extra = submitted["cpu_s_ray_workers"] - statistics.mean(alone) * runs
                rows.append({"alone_s": alone, "ideal_s": ideal, "ratio": makespan / ideal, **submitted,
                             "workers_extra_cpu_s": extra})  # fmt: skip
                print(f"repeat {repeat + 1}: makespan {makespan:.1f} s vs ideal {ideal:.1f} s "
                      f"({runs} runs × {statistics.mean(alone):.2f} s alone / {slots}) = {makespan / ideal:.3f}; CPU s: "
                      + ", ".join(f"{k[6:]} {v:.1f}" for k, v in submitted.items() if k.startswith("cpu_s_")),
                      file=sys.stderr)  # fmt: skip
        finally:
            disconnect(cluster)
    return {
        "orchestration_makespan_ratio": statistics.median(r["ratio"] for r in rows),
        "runs": runs,
        "tokens_per_run": tokens,
        "slots": slots,
        "median_run_alone_s": statistics.median(s for r in rows for s in r["alone_s"]),
        "ray_start_s": ray_start_s,
        "repeats": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=300_000, help="training tokens per run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--alone-sample", type=int, help="time only this many runs alone (they cost the same)")
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.tokens, args.repeats, args.alone_sample)))


if __name__ == "__main__":
    main()
