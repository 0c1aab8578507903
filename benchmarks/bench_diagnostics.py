"""What the eval-time diagnostics (``diag/``, ``tokens/``, ``probe/``) cost a run, in wall time.

For each size, whole runs of ``trainers.loop.train`` (torch backend, the default ten evals per
run, checkpoints off, the composite task mixed in so that every probe runs) with
``diag.enabled`` true and false, interleaved (off, on, off, on, ...) so that a noisy machine
slows both alike. Three measures:

- ``overhead``: what the diagnostics add to a run, from the time spent inside the probes'
  ``measure`` (timed directly; the probes are all that differs between on and off): probe time
  ÷ (wall time − probe time) of the same run, median over repeats. Load slows the probes and
  the rest of the run alike, so this is the steady measure, and the one the target applies to.
- ``overhead_wall``: the median over repeats of wall(on) / wall(off) − 1, start-up included,
  the direct comparison; on a shared machine its noise can exceed the effect.
- ``probe_share``: probe time over the whole wall time of the same run.

``--on-only`` skips the runs with diagnostics off: ``overhead`` needs only the runs with them on
(the quick suite's setting); ``overhead_wall`` is then left out.

    python benchmarks/bench_diagnostics.py [--sizes tiny,100k] [--steps 100] [--repeats 3] [--threads 1] [--on-only]

The last stdout line is one JSON object: ``{"diagnostics_overhead": <largest median overhead>,
"diagnostics_overhead_wall": ..., "probe_share": ..., "sizes": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trainers.loop as loop
from trainers.config import load_run_config
from trainers.probes import build_probes

BASE = [
    "train.batch_size=32",
    "train.seq_len=128",
    "data.composite_fraction=0.2",
    "train.checkpoint_every=1000000",
]


class _TimedProbes:
    """Stands in for ``build_probes`` in the loop and adds up the time spent in ``measure``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, run, source):
        probes = build_probes(run, source)
        for probe in probes:
            probe.measure = self._timed(probe.measure)
        return probes

    def _timed(self, measure):
        def timed(model, step, final):
            start = time.perf_counter()
            try:
                return measure(model, step, final)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def timed_run(overrides: list[str]) -> tuple[float, float]:
    """(wall seconds, seconds inside probes) of one run."""
    timer = _TimedProbes()
    loop.build_probes = timer  # the loop looks the name up in its own module
    with tempfile.TemporaryDirectory() as folder:
        result = loop.train(load_run_config(None, overrides), folder)
    return result.wall_s, timer.seconds


def bench_size(preset: str, steps: int, repeats: int, threads: int, on_only: bool) -> dict:
    tokens = steps * 32 * 128
    overrides = [f"model.preset={preset}", *BASE, f"train.tokens={tokens}", f"train.threads={threads}"]
    timed_run([*overrides, "train.tokens=8192"])  # warm-up: imports, allocator, data tables
    off, on, inside = [], [], []
    for _ in range(repeats):
        if not on_only:
            off.append(timed_run([*overrides, "diag.enabled=false"])[0])
        wall, seconds = timed_run([*overrides, "diag.enabled=true"])
        on.append(wall)
        inside.append(seconds)
    row = {
        "preset": preset,
        "steps": steps,
        "wall_s_on": statistics.median(on),
        "probe_s": statistics.median(inside),
        "overhead": statistics.median(s / (w - s) for s, w in zip(inside, on, strict=True)),
        "probe_share": statistics.median(s / w for s, w in zip(inside, on, strict=True)),
    }
    if off:
        row["wall_s_off"] = statistics.median(off)
        row["overhead_wall"] = statistics.median(b / a - 1 for a, b in zip(off, on, strict=True))
    return row


def measure(
    sizes: str = "tiny,100k", steps: int = 100, repeats: int = 3, threads: int = 1, on_only: bool = False
) -> dict:
    rows = []
    for preset in sizes.split(","):
        rows.append(bench_size(preset, steps, repeats, threads, on_only))
        row = rows[-1]
        wall = "" if on_only else f"{row['wall_s_off']:.2f} s off, "
        wall += f"{row['wall_s_on']:.2f} s on" + ("" if on_only else f" ({row['overhead_wall']:+.1%})")
        print(
            f"{preset:>5}: {wall}; {row['probe_s']:.2f} s in probes: overhead {row['overhead']:.1%}",
            file=sys.stderr,
        )
    result = {
        "diagnostics_overhead": max(r["overhead"] for r in rows),
        "probe_share": max(r["probe_share"] for r in rows),
        "threads": threads,
        "sizes": rows,
    }
    if not on_only:
        result["diagnostics_overhead_wall"] = max(r["overhead_wall"] for r in rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,100k")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--on-only", action="store_true", help="skip the runs with diagnostics off")
    args = parser.parse_args()
    print(json.dumps(measure(args.sizes, args.steps, args.repeats, args.threads, args.on_only)))


if __name__ == "__main__":
    main()
