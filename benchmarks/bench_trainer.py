"""Trainer throughput against a minimal plain-PyTorch loop, and MFU against a measured matmul peak.

For each size, in one process and interleaved so that a noisy machine slows both alike (plain,
trainer, then trainer, plain at the next repeat, so that a steady drift cancels in the median):
  plain     the same model, init, batch and AdamW step in a bare loop over pre-generated batches;
  trainer   ``trainers.loop.train`` (torch backend) with its data source; its own ``tokens_per_s``
            clocks the training steps and leaves out the evals and checkpoints;
  compiled  (--compile SIZES) the trainer with ``train.compile=true``, its graph compiled once
            per process before the repeats (a one-off cost, reported as ``compile_s``).
Both clock the same steps from the first one: the trainer evaluates once before its first
step, so the plain loop runs the same forward pass over the eval batch first, off the clock.
The ratio trainer/plain is the orchestration tax. MFU = flops_per_token × tokens/s / peak, with
the peak measured here as the best fp32 matmul rate (square matrices, this process's threads),
again at every repeat, right before it: this VM's speed drifts by 10-20% over minutes, and a
peak taken once would move every MFU with it.

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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.config import load_run_config, resolve  # noqa: E402
from trainers.data import build_source  # noqa: E402
from trainers.init import init_weights  # noqa: E402
from trainers.launch import run_local  # noqa: E402
from trainers.model import Transformer  # noqa: E402
from trainers.optim import build_optimizer  # noqa: E402

BATCH = ["train.batch_size=32", "train.seq_len=128"]


def matmul_peak_flops(size: int = 1024, seconds: float = 2.0) -> float:
    """Best observed fp32 FLOP/s of an (n×n)·(n×n) matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def plain_tokens_per_s(overrides: list[str], steps: int) -> float:
    """The reference: the same model and step with nothing around it."""
    run = resolve(load_run_config(None, overrides))
    source = build_source(run.config.data, run.config.train.seq_len, run.config.seed)
    batches = [torch.from_numpy(source.train_batch(s, run.config.train.batch_size)) for s in range(steps)]
    model = Transformer(run.arch)
    init_weights(model, run.config.init, torch.Generator().manual_seed(0))
    optimizer = build_optimizer(model, run.config.optim)
    with torch.no_grad():  # as the trainer's evaluation before step 0
        model.loss(torch.from_numpy(source.eval_batch()))
    start = time.perf_counter()
    for batch in batches:
        model.loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    # Tokens as the trainer counts them: batch × seq_len per step.
    return steps * run.config.train.batch_size * run.config.train.seq_len / (time.perf_counter() - start)


def trainer_tokens_per_s(overrides: list[str], steps: int) -> float:
    run = resolve(load_run_config(None, overrides))
    tokens = steps * run.config.train.batch_size * run.config.train.seq_len
    with tempfile.TemporaryDirectory() as folder:
        config = load_run_config(None, [*overrides, f"train.tokens={tokens}", "train.eval_every=1000000",
                                        "train.checkpoint_every=1000000", "train.log_every=1000000"])
        return run_local(config, folder).tokens_per_s


def bench_size(preset: str, steps: int, repeats: int, deepspeed: bool, compile: bool) -> dict:
    overrides = [f"model.preset={preset}", *BATCH]
    compiled_overrides = [*overrides, "train.compile=true"]
    # Off the clock: the first model of a shape pays first-use costs (allocator, kernels) that
    # would fall on whichever of the two ran first.
    plain_tokens_per_s(overrides, 3)
    trainer_tokens_per_s(overrides, 3)
    compile_s = None
    if compile:  # compile once, off the clock: every later model of this shape reuses the graph
        start = time.perf_counter()
        trainer_tokens_per_s(compiled_overrides, 2)
        compile_s = time.perf_counter() - start
    plain, trainer, compiled, ds, peaks = [], [], [], [], []
    for repeat in range(repeats):
        peaks.append(matmul_peak_flops(seconds=1.0))
        pair = [lambda: plain.append(plain_tokens_per_s(overrides, steps)),
                lambda: trainer.append(trainer_tokens_per_s(overrides, steps))]
        for measure_one in pair if repeat % 2 == 0 else reversed(pair):
            measure_one()
        if compile:
            compiled.append(trainer_tokens_per_s(compiled_overrides, steps))
        if deepspeed:
            ds.append(trainer_tokens_per_s([*overrides, "train.backend=deepspeed", "train.zero_stage=2"], steps))
    flops_per_token = resolve(load_run_config(None, overrides)).flops_per_token

    def mfu(tokens_per_s: list[float]) -> float:
        return statistics.median(t * flops_per_token / k for t, k in zip(tokens_per_s, peaks))

    row = {
        "preset": preset,
        "plain_tokens_per_s": statistics.median(plain),
        "trainer_tokens_per_s": statistics.median(trainer),
        "trainer_vs_plain": statistics.median(t / p for t, p in zip(trainer, plain)),
        "matmul_peak_flops": statistics.median(peaks),
        "trainer_mfu": mfu(trainer),
        "plain_mfu": mfu(plain),
    }
    if compile:
        row["compiled_tokens_per_s"] = statistics.median(compiled)
        row["compiled_vs_plain"] = statistics.median(c / p for c, p in zip(compiled, plain))
        row["compiled_mfu"] = mfu(compiled)
        row["compile_s"] = compile_s
    if deepspeed:
        row["deepspeed_tokens_per_s"] = statistics.median(ds)
        row["deepspeed_vs_plain"] = statistics.median(d / p for d, p in zip(ds, plain))
    return row


def measure(sizes: str = "tiny,1m,5m", steps: int = 30, repeats: int = 3, deepspeed: bool = False,
            compile_sizes: str = "") -> dict:  # fmt: skip
    rows = []
    for preset in sizes.split(","):
        # About the same seconds per measurement at every size: a tiny step is 8× faster than 1m's.
        size_steps = {"tiny": 4 * steps, "5m": max(5, steps // 4)}.get(preset, steps)
        compile = preset in compile_sizes.split(",")
        rows.append(bench_size(preset, size_steps, repeats, deepspeed, compile))
        row = rows[-1]
        print(f"{preset:>5}: trainer {row['trainer_tokens_per_s']:,.0f} tok/s = {row['trainer_vs_plain']:.3f}× plain, "
              f"MFU {row['trainer_mfu']:.1%}"
              + (f"; compiled {row['compiled_vs_plain']:.3f}× plain, MFU {row['compiled_mfu']:.1%}" if compile else "")
              + (f"; deepspeed {row['deepspeed_vs_plain']:.3f}× plain" if deepspeed else ""),
              file=sys.stderr)  # fmt: skip
    return {"threads": torch.get_num_threads(), "sizes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,1m,5m")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deepspeed", action="store_true", help="also time the DeepSpeed backend (1 process)")
    parser.add_argument("--compile", default="", metavar="SIZES", help="also time train.compile=true at these sizes")
    args = parser.parse_args()
    print(json.dumps(measure(args.sizes, args.steps, args.repeats, args.deepspeed, args.compile)))


if __name__ == "__main__":
    main()
