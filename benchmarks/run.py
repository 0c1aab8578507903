"""The benchmark suite: every benchmark of this folder, each in a fresh process, and a summary.

    python benchmarks/run.py --quick        # `make bench-quick`: about 3.5 minutes on 2 cores
    python benchmarks/run.py --write        # `make bench`: the CPU suite; rewrites BENCHMARKS.md
    python benchmarks/run.py --gpu --write  # `make bench-gpu`: on a machine with a CUDA GPU
    python benchmarks/run.py --scale --write  # `make bench-scale`: 100 to 10,000-point grids

Each benchmark runs in its own process (torch's thread count, Ray and the allocator are
process-wide state that one benchmark must not leave to the next) and prints its result as the
last line of stdout; its progress lines pass through on stderr. The results are saved under
``benchmarks/results/``; with ``--write`` the generated part of BENCHMARKS.md (between the
``<!-- generated:... -->`` markers) is rewritten from them. The last stdout line is one JSON
object: the headline figures, their targets, and whether each is met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from results_md import rewrite_generated
from targets import TARGETS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHMARKS_MD = HERE.parent / "BENCHMARKS.md"

# What each mode runs: benchmark script -> its arguments.
QUICK = {
    "trainer": ["--sizes", "tiny,1m", "--steps", "10", "--repeats", "3", "--compile", "1m"],
    "fit": ["--naive-resamples", "2", "--lbfgsb-resamples", "20"],
    "diagnostics": ["--sizes", "tiny", "--steps", "100", "--repeats", "1", "--on-only"],
    "orchestration": ["--runs", "16", "--tokens", "250000", "--alone-sample", "4", "--repeats", "3"],
}
FULL = {
    "trainer": ["--sizes", "tiny,1m,5m", "--steps", "30", "--repeats", "3", "--deepspeed", "--compile", "1m"],
    "orchestration": ["--runs", "16", "--tokens", "250000", "--alone-sample", "8", "--repeats", "3"],
    "store_writes": [],
    "fit": [],
    "diagnostics": ["--sizes", "tiny,100k", "--steps", "100", "--repeats", "1"],
    "data": [],
    "memory": [],
}
GPU = {"gpu": []}
SCALE = {"scale": []}


def run_benchmark(name: str, args: list[str]) -> dict:
    """``python benchmarks/bench_<name>.py ARGS`` in a fresh process; its last stdout line."""
    command = [sys.executable, str(HERE / f"bench_{name}.py"), *args]
    print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    if done.returncode != 0:
        raise SystemExit(f"benchmark {name} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    return result


def headline(results: dict[str, dict]) -> dict[str, float]:
    """The figures the targets apply to, from whichever benchmarks ran."""
    figures: dict[str, float] = {}
    if "trainer" in results:
        rows = results["trainer"]["sizes"]
        figures["trainer_vs_plain"] = min(r["trainer_vs_plain"] for r in rows)  # the worst size
        one_m = [r for r in rows if r["preset"] == "1m"]
        if one_m:
            figures["cpu_mfu"] = one_m[0]["trainer_mfu"]
            if one_m[0].get("compiled_mfu") is not None:
                figures["cpu_mfu_compiled"] = one_m[0]["compiled_mfu"]
    if "orchestration" in results:
        figures["orchestration_makespan_ratio"] = results["orchestration"]["orchestration_makespan_ratio"]
    if "fit" in results:
        figures["bootstrap_1000_s"] = results["fit"]["bootstrap_1000_s"]
    if "diagnostics" in results:
        figures["diagnostics_overhead"] = results["diagnostics"]["diagnostics_overhead"]
    if "scale" in results:
        figures.update({k: v for k, v in results["scale"].items() if k.startswith("scale_")})
    return figures


def targets_met(figures: dict[str, float]) -> dict[str, bool]:
    met = {}
    for key, value in figures.items():
        target, sense = TARGETS[key]
        met[key] = value <= target if sense == "max" else value >= target
    return met


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    memory = (
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3 if hasattr(os, "sysconf") else None
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1) if memory else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the short suite (headline figures only)")
    mode.add_argument("--gpu", action="store_true", help="the GPU benchmarks")
    mode.add_argument("--scale", action="store_true", help="how the commands' costs grow with the grid")
    parser.add_argument("--write", action="store_true", help="rewrite the results in BENCHMARKS.md")
    parser.add_argument("--only", help="comma-separated benchmark names of the chosen suite")
    args = parser.parse_args()
    name = "quick" if args.quick else "gpu" if args.gpu else "scale" if args.scale else "cpu"
    suite = {"quick": QUICK, "gpu": GPU, "scale": SCALE, "cpu": FULL}[name]
    if args.only:
        suite = {k: v for k, v in suite.items() if k in args.only.split(",")}

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = {bench: run_benchmark(bench, bench_args) for bench, bench_args in suite.items()}
    figures = headline(results)
    document = {
        "suite": name,
        "command": f"python benchmarks/run.py {' '.join(sys.argv[1:])}".strip(),
        "machine": {**machine(), "load_before": load_before, "load_after": os.getloadavg()[0]},
        "figures": figures,
        "targets_met": targets_met(figures),
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=1) + "\n")
    if args.write:
        rewrite_generated(BENCHMARKS_MD, name, document)
        print(f"rewrote the {name} results in {BENCHMARKS_MD}", file=sys.stderr)
    print(
        json.dumps(
            {
                **figures,
                "targets": {k: TARGETS[k][0] for k in figures},
                "targets_met": document["targets_met"],
            }
        )
    )


if __name__ == "__main__":
    main()
