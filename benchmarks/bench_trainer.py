"""Trainer throughput against a minimal plain-PyTorch loop, and MFU against a measured matmul peak.

The reference ("plain") is the same model, init, batch and AdamW step (with gradient clipping)
in a bare loop over pre-generated batches. This VM's speed swings by 10-20% within seconds, so
the two are interleaved step by step in one process rather than timed as two runs:
``trainers.loop.train`` (torch backend, its own data source, evals and checkpoints off its
clock) runs with ``train.log_every=2``, and a callback runs two plain steps at each of its log
records. The loop stops its clock before it calls callbacks, so each side clocks only its own
steps: trainer window, plain window, matmul burst, trainer window, ... Each pair of adjacent
windows gives a ratio; a repeat's figure is the median over its pairs after the first few
(warm-up), and the result is the median over repeats. The ratio trainer/plain is the
orchestration tax.

  compiled  (--compile SIZES) the same with ``train.compile=true`` on the trainer's side (the
            plain loop stays eager), its graph compiled once per process before the repeats (a
            one-off cost, reported as ``compile_s``);
  deepspeed (--deepspeed) the DeepSpeed backend, ZeRO-2 in one process, once per size: it
            trains in a process of its own (15-25 s to start), so it is timed as a whole run
            (its ``tokens_per_s``) against a whole plain run right before it.

MFU = flops_per_token × tokens/s / peak, with the peak measured here as the best fp32 matmul
rate (square matrices, this process's threads) in a short burst after every window pair: each
window's MFU is its tokens/s over the peak measured next to it, and a figure is the median over
windows, then over repeats. A peak taken once, or before the run, would move every MFU with the
machine's speed of the moment.

    python benchmarks/bench_trainer.py [--sizes tiny,1m,5m] [--steps 30] [--repeats 3] [--deepspeed] [--compile 1m]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.callbacks import Callback
from trainers.config import load_run_config, resolve
from trainers.data import build_source
from trainers.init import init_weights
from trainers.launch import run_local
from trainers.model import Transformer
from trainers.optim import build_optimizer

BATCH = ["train.batch_size=32", "train.seq_len=128"]
WINDOW = 2  # steps per timing window, on each side
WARM_UP_PAIRS = 1  # pairs of windows left out at the start of each run (its first steps allocate)


class MatmulPeak:
    """Best observed fp32 FLOP/s of an (n×n)·(n×n) matmul, in short bursts."""

    def __init__(self, size: int = 1024):
        self.a, self.b = torch.randn(size, size), torch.randn(size, size)
        self.flops = 2 * size**3

    def burst(self, matmuls: int = 3) -> float:
        """The best of ``matmuls`` timed matmuls (about 50 ms on 2 cores)."""
        best = 0.0
        for _ in range(matmuls):
            start = time.perf_counter()
            torch.mm(self.a, self.b)
            best = max(best, self.flops / (time.perf_counter() - start))
        return best


class PlainLoop:
    """The reference: the same model and step with nothing around it, over pre-generated batches."""

    def __init__(self, overrides: list[str], steps: int):
        run = resolve(load_run_config(None, overrides))
        source = build_source(run.config.data, run.config.train.seq_len, run.config.seed)
        self.batches = [
            torch.from_numpy(source.train_batch(s, run.config.train.batch_size)) for s in range(steps)
        ]
        self.model = Transformer(run.arch)
        init_weights(self.model, run.config.init, torch.Generator().manual_seed(0))
        self.optimizer = build_optimizer(self.model, run.config.optim)
        self.batch_tokens = run.config.train.batch_size * run.config.train.seq_len  # as the trainer counts
        self.done = 0

    def tokens_per_s(self, steps: int) -> float:
        """Run the next ``steps`` steps; their tokens per second."""
        start = time.perf_counter()
        for _ in range(steps):
            self.model.loss(self.batches[self.done % len(self.batches)]).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.done += 1
        return steps * self.batch_tokens / (time.perf_counter() - start)


class Interleave(Callback):
    """At each of the trainer's log records (every WINDOW steps), WINDOW plain steps, then a
    matmul peak burst."""

    def __init__(self, plain: PlainLoop, peak: MatmulPeak):
        self.plain, self.peak = plain, peak
        self.trainer_rates: list[float] = []
        self.plain_rates: list[float] = []
        self.peaks: list[float] = []

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.trainer_rates.append(metrics["train/tokens_per_s"])  # the loop's clock for this window
        self.plain_rates.append(self.plain.tokens_per_s(WINDOW))
        self.peaks.append(self.peak.burst())


@dataclass
class Windows:
    """One interleaved run's medians over its window pairs (warm-up pairs left out)."""

    ratio: float  # trainer / plain tokens/s
    trainer_tokens_per_s: float
    plain_tokens_per_s: float
    trainer_mfu: float
    plain_mfu: float
    peak_flops: float  # the bursts' median


def interleaved(overrides: list[str], steps: int, peak: MatmulPeak) -> Windows:
    """One trainer run of ``steps`` steps, its windows interleaved with plain ones and peak bursts."""
    run = resolve(load_run_config(None, overrides))
    tokens = steps * run.config.train.batch_size * run.config.train.seq_len
    side = Interleave(PlainLoop(overrides, steps), peak)
    with tempfile.TemporaryDirectory() as folder:
        # Diagnostics off: they run at evals, off the clock, and have a benchmark of their own.
        config = load_run_config(
            None,
            [
                *overrides,
                f"train.tokens={tokens}",
                f"train.log_every={WINDOW}",
                "train.eval_every=1000000",
                "train.checkpoint_every=1000000",
                "diag.enabled=false",
            ],
        )
        run_local(config, folder, [side])
    trainer, plain = side.trainer_rates[WARM_UP_PAIRS:], side.plain_rates[WARM_UP_PAIRS:]
    peaks = side.peaks[WARM_UP_PAIRS:]
    flops = run.flops_per_token
    return Windows(
        ratio=statistics.median(t / p for t, p in zip(trainer, plain, strict=True)),
        trainer_tokens_per_s=statistics.median(trainer),
        plain_tokens_per_s=statistics.median(plain),
        trainer_mfu=statistics.median(t * flops / k for t, k in zip(trainer, peaks, strict=True)),
        plain_mfu=statistics.median(p * flops / k for p, k in zip(plain, peaks, strict=True)),
        peak_flops=statistics.median(peaks),
    )


def whole_run_tokens_per_s(overrides: list[str], steps: int) -> float:
    """A whole trainer run's own ``tokens_per_s`` (evals and checkpoints off its clock)."""
    run = resolve(load_run_config(None, overrides))
    tokens = steps * run.config.train.batch_size * run.config.train.seq_len
    with tempfile.TemporaryDirectory() as folder:
        config = load_run_config(
            None,
            [
                *overrides,
                f"train.tokens={tokens}",
                "train.eval_every=1000000",
                "train.checkpoint_every=1000000",
                "train.log_every=1000000",
                "diag.enabled=false",
            ],
        )
        return run_local(config, folder).tokens_per_s


def bench_size(preset: str, steps: int, repeats: int, deepspeed: bool, compile: bool) -> dict:
    overrides = [f"model.preset={preset}", *BATCH]
    compiled_overrides = [*overrides, "train.compile=true"]
    row: dict = {"preset": preset, "steps": steps}
    runs: dict[str, list[Windows]] = {"trainer": [], "compiled": []}
    peak = MatmulPeak()
    if compile:  # compile once, off the clock: every later model of this shape reuses the graph
        start = time.perf_counter()
        whole_run_tokens_per_s(compiled_overrides, 2)
        row["compile_s"] = time.perf_counter() - start
    for _ in range(repeats):
        runs["trainer"].append(interleaved(overrides, steps, peak))
        if compile:
            runs["compiled"].append(interleaved(compiled_overrides, steps, peak))
    row["matmul_peak_flops"] = statistics.median(r.peak_flops for r in runs["trainer"])
    row["plain_tokens_per_s"] = statistics.median(r.plain_tokens_per_s for r in runs["trainer"])
    row["plain_mfu"] = statistics.median(r.plain_mfu for r in runs["trainer"])
    for name in ("trainer", "compiled") if compile else ("trainer",):
        row[f"{name}_tokens_per_s"] = statistics.median(r.trainer_tokens_per_s for r in runs[name])
        row[f"{name}_vs_plain"] = statistics.median(r.ratio for r in runs[name])
        row[f"{name}_vs_plain_repeats"] = [round(r.ratio, 3) for r in runs[name]]
        row[f"{name}_mfu"] = statistics.median(r.trainer_mfu for r in runs[name])
    if deepspeed:
        plain = PlainLoop(overrides, steps).tokens_per_s(steps)
        ds = whole_run_tokens_per_s([*overrides, "train.backend=deepspeed", "train.zero_stage=2"], steps)
        row["deepspeed_tokens_per_s"] = ds
        row["deepspeed_vs_plain"] = ds / plain
    return row


def measure(sizes: str = "tiny,1m,5m", steps: int = 30, repeats: int = 3, deepspeed: bool = False,
            compile_sizes: str = "") -> dict:  # fmt: skip
    rows = []
    for preset in sizes.split(","):
        # More windows where they are cheap: a tiny step is 8× faster than 1m's, and noisier.
        size_steps = {"tiny": 3 * steps, "5m": max(4 * WINDOW, steps // 3)}.get(preset, steps)
        compile = preset in compile_sizes.split(",")
        rows.append(bench_size(preset, size_steps, repeats, deepspeed, compile))
        row = rows[-1]
        print(f"{preset:>5}: trainer {row['trainer_tokens_per_s']:,.0f} tok/s = {row['trainer_vs_plain']:.3f}× plain "
              f"{row['trainer_vs_plain_repeats']}, MFU {row['trainer_mfu']:.1%}"
              + (f"; compiled {row['compiled_vs_plain']:.3f}× plain, MFU {row['compiled_mfu']:.1%}" if compile else "")
              + (f"; deepspeed {row['deepspeed_vs_plain']:.3f}× plain" if deepspeed else ""),
              file=sys.stderr)  # fmt: skip
    return {"threads": torch.get_num_threads(), "window_steps": WINDOW, "sizes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,1m,5m")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--deepspeed", action="store_true", help="also time the DeepSpeed backend (1 process)"
    )
    parser.add_argument(
        "--compile", default="", metavar="SIZES", help="also time train.compile=true at these sizes"
    )
    args = parser.parse_args()
    print(json.dumps(measure(args.sizes, args.steps, args.repeats, args.deepspeed, args.compile)))


if __name__ == "__main__":
    main()
