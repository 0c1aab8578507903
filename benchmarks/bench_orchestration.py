"""Orchestration overhead: a grid of 16 tiny runs through Ray against the ideal makespan.

In one process:
  alone  runs of the grid trained one at a time here, through the worker's own entry point
         (``orchestrator.worker.train_point``: the spec's config and threads, metrics JSONL,
         evals and checkpoints), each timed start to end: half of them before Ray starts, the
         other half after it has stopped, so that the reference brackets the grid in time and
         a machine that speeds up or slows down moves both alike;
  grid   the same runs submitted with ``orchestrator.submit.run`` into a fresh workspace: Ray
         tasks, scheduling, the driver replaying every metric into MLflow, the final flush. Its
         makespan is ``run()``'s wall time.
  together  runs trained ``slots`` at a time without Ray, one per process (each warmed up
         first, all started at once), once before the grid and once after it: what the
         machine itself charges for running that many at once (shared caches, memory
         bandwidth, a host's hyperthreads), which no orchestrator can remove.
The ideal makespan is mean(alone) × runs / slots, slots being the runs the grid runs at once
here (two one-CPU runs on two cores). Ratio = makespan / ideal; the target is ≤ 1.05, the
median over ``--repeats`` grids. ``contention`` = mean(together) / mean(alone), and
``ratio_vs_together`` the makespan against mean(together) × runs / slots: the part of the
ratio that is Ray's and the driver's. The runs differ only in γ and seed, so they cost the
same: ``--alone-sample K`` times K of them alone (spread over the grid) rather than all, to
save time in the quick suite.

Three one-time costs are measured and reported but not counted, because a session pays them once,
not per grid, and the reference runs in a warm process too: starting the local Ray cluster, its
workers' imports (``orchestrator.worker.warm_up_workers``, which in a real submission overlap
the creation of the tracking store), and creating the workspace's MLflow database.

    python benchmarks/bench_orchestration.py [--runs 16] [--tokens 250000] [--repeats 1] [--alone-sample K]

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

import yaml

from orchestrator.cluster import connect, disconnect
from orchestrator.grids.estimate import Capacity, concurrent_runs
from orchestrator.grids.expand import expand
from orchestrator.submit import plan, run
from orchestrator.worker import train_point


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


def alone_specs(grid_file: Path, folder: Path, sample: int | None) -> list:
    """The grid's runs to time alone (all, or ``sample`` of them spread over the grid), their run
    folders in the workspace ``folder``."""
    from orchestrator.grids.parse import load_grid

    with workspace(folder):
        specs = expand(load_grid(grid_file), folder)
    return specs[:: max(1, len(specs) // sample)][:sample] if sample else specs


def warm_up(grid_file: Path, folder: Path) -> None:
    """One untimed short run: a process's first run pays one-time costs (imports such as the
    torch._dynamo that the first optimizer pulls in, data tables) that the grid's workers pay
    once each; the reference is what a run costs in a warm process. A tenth of the tokens pays
    them all."""
    from orchestrator.grids.parse import load_grid

    folder.mkdir(parents=True)
    grid = yaml.safe_load(grid_file.read_text())
    short = write_grid(folder, len(grid["axes"]["init.gamma"]), grid["base"]["train.tokens"] // 10)
    with workspace(folder):
        train_point(expand(load_grid(short), folder)[0], attempt="warm-up:1")


def alone_seconds(specs: list) -> list[float]:
    """Each run trained by itself in this process, timed from the worker's entry to its result."""
    seconds = []
    for spec in specs:
        start = time.perf_counter()
        train_point(spec, attempt="alone:1")
        seconds.append(time.perf_counter() - start)
    return seconds


def together_seconds(grid_file: Path, folder: Path, slots: int) -> list[float]:
    """Seconds of each of ``slots`` runs trained at once, one per fresh process, each warmed up
    before a common start (no Ray)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=_train_one_when_told, args=(grid_file, folder / f"p{i}", i, start, results))
        for i in range(slots)
    ]
    for process in processes:
        process.start()
    ready = [results.get(timeout=300) for _ in processes]
    assert ready == ["ready"] * slots, ready
    start.set()
    seconds = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    return seconds


def _train_one_when_told(grid_file: Path, folder: Path, index: int, start, results) -> None:
    """A ``together_seconds`` process: warm up, say so, wait for the start, train run ``index``
    of the grid (in this process's own workspace) and report its seconds."""
    warm_up(grid_file, folder / "warm-up")
    spec = alone_specs(grid_file, folder, None)[index]
    results.put("ready")
    start.wait()
    began = time.perf_counter()
    train_point(spec, attempt="together:1")
    results.put(time.perf_counter() - began)


def wait_for_warm_workers(slots: int) -> None:
    """Until the cluster's ``slots`` workers have done their imports: one more import task per
    slot, each queued behind a warm-up task for its CPU, ends only once those have."""
    import ray

    from orchestrator.worker import import_training_modules

    check = ray.remote(num_cpus=1)(import_training_modules)
    ray.get([check.remote() for _ in range(slots)])


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


def create_store(grid_file: Path, folder: Path) -> float:
    """Seconds to create the workspace's tracking database (once per workspace)."""
    from mlflow.tracking import MlflowClient

    with workspace(folder):
        start = time.perf_counter()
        MlflowClient(tracking_uri=plan(grid_file).tracking_uri)  # creates the database
        return time.perf_counter() - start


def grid_makespan(grid_file: Path, folder: Path) -> dict:
    """One submission into a workspace: its makespan, and CPU seconds by kind of process."""
    with workspace(folder):
        planned = plan(grid_file)
        before = cpu_seconds()
        start = time.perf_counter()
        with open(os.devnull, "w") as quiet:
            outcome = run(planned, show_progress=False, stream=quiet)
        makespan = time.perf_counter() - start
        after = cpu_seconds()
    if outcome.counts["finished"] != len(planned.specs):
        raise RuntimeError(f"the benchmark grid did not finish: {outcome.counts}")
    cpu = {f"cpu_s_{kind}": after[kind] - before[kind] for kind in after}
    return {"makespan_s": makespan, "trained": outcome.trained, **cpu}


def measure(runs: int = 16, tokens: int = 250_000, repeats: int = 1, alone_sample: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gammaray-bench-") as root:
        root_path = Path(root)
        grid_file = write_grid(root_path, runs, tokens)
        specs = alone_specs(grid_file, root_path / "alone", alone_sample)
        before, after = specs[: (len(specs) + 1) // 2], specs[(len(specs) + 1) // 2 :]
        # Half of the reference before Ray starts and half after it stops: no Ray process takes
        # CPU from these runs, and the two halves bracket the grid in time.
        warm_up(grid_file, root_path / "warm-up")
        capacity = Capacity.this_machine()
        with workspace(root_path / "probe"):
            slots = concurrent_runs(plan(grid_file).specs, capacity, 2)
        alone = alone_seconds(before)
        together = together_seconds(grid_file, root_path / "together-before", slots)
        start = time.perf_counter()
        cluster = connect(None, capacity, warm_workers=slots)  # as run() would; run() reuses this connection
        ray_start_s = time.perf_counter() - start
        try:
            # As in a real submission, the workers import while the tracking store is created.
            workspaces = [root_path / f"grid-{repeat}" for repeat in range(repeats)]
            store_create_s = [create_store(grid_file, folder) for folder in workspaces]
            start = time.perf_counter()
            wait_for_warm_workers(slots)
            workers_warm_wait_s = time.perf_counter() - start
            submitted = [grid_makespan(grid_file, folder) for folder in workspaces]
        finally:
            disconnect(cluster)
        together += together_seconds(grid_file, root_path / "together-after", slots)
        alone += alone_seconds(after)
    mean_alone, mean_together = statistics.mean(alone), statistics.mean(together)
    ideal = mean_alone * runs / slots
    rows = []
    for repeat, grid in enumerate(submitted):
        makespan = grid["makespan_s"]
        # CPU the workers spent beyond the runs' own (task handling, two runs sharing caches).
        extra = grid["cpu_s_ray_workers"] - mean_alone * runs
        vs_together = makespan / (mean_together * runs / slots)
        rows.append(
            {
                "ratio": makespan / ideal,
                "ratio_vs_together": vs_together,
                **grid,
                "workers_extra_cpu_s": extra,
            }
        )
        print(f"repeat {repeat + 1}: makespan {makespan:.1f} s vs ideal {ideal:.1f} s "
              f"({runs} runs × {mean_alone:.2f} s alone / {slots}) = {makespan / ideal:.3f}; "
              f"{vs_together:.3f} against runs {slots} at a time without Ray; CPU s: "
              + ", ".join(f"{k[6:]} {v:.1f}" for k, v in grid.items() if k.startswith("cpu_s_")),
              file=sys.stderr)  # fmt: skip
    print(f"{slots} runs at once without Ray: {mean_together:.2f} s each, {mean_together / mean_alone:.3f}× "
          "a run alone", file=sys.stderr)  # fmt: skip
    return {
        "orchestration_makespan_ratio": statistics.median(r["ratio"] for r in rows),
        "ratio_vs_together": statistics.median(r["ratio_vs_together"] for r in rows),
        "contention": mean_together / mean_alone,
        "together_s": together,
        "runs": runs,
        "tokens_per_run": tokens,
        "slots": slots,
        "alone_s_before": alone[: len(before)],
        "alone_s_after": alone[len(before) :],
        "median_run_alone_s": statistics.median(alone),
        "ideal_s": ideal,
        "ray_start_s": ray_start_s,
        "store_create_s": store_create_s[0],
        "workers_warm_wait_s": workers_warm_wait_s,  # after creating the store
        "repeats": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=250_000, help="training tokens per run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--alone-sample", type=int, help="time only this many runs alone (they cost the same)"
    )
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.tokens, args.repeats, args.alone_sample)))


if __name__ == "__main__":
    main()
