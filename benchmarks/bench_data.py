"""Token-source throughput: how fast ``train_batch`` serves a trainer's steps.

    python benchmarks/bench_data.py [--seq-len 128] [--batch-size 32] [--steps 2000]

Measures ``train_batch(step, batch_size)`` over consecutive steps (the trainer's access pattern,
block generation included) for each source, and the one-off cost of building the synthetic world.
The last line of stdout is one JSON object: ``{"synthetic_tokens_per_s": ..., ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.data import DataConfig, build_source, write_memmap


def tokens_per_s(config: DataConfig, seq_len: int, batch_size: int, steps: int) -> float:
    source = build_source(config, seq_len, seed=0)
    start = time.perf_counter()  # every block the steps need is generated inside the clock
    for step in range(steps):
        source.train_batch(step, batch_size)
    elapsed = time.perf_counter() - start
    return steps * batch_size * (seq_len + 1) / elapsed


def measure(seq_len: int = 128, batch_size: int = 32, steps: int = 2000) -> dict:
    args = argparse.Namespace(seq_len=seq_len, batch_size=batch_size, steps=steps)
    shape = (args.seq_len, args.batch_size, args.steps)

    start = time.perf_counter()
    build_source(DataConfig(), args.seq_len, seed=0)
    build_s = time.perf_counter() - start

    result: dict[str, float | int] = {"seq_len": args.seq_len, "batch_size": args.batch_size}
    result["synthetic_tokens_per_s"] = tokens_per_s(DataConfig(), *shape)
    result["synthetic_composite_0.2_tokens_per_s"] = tokens_per_s(DataConfig(composite_fraction=0.2), *shape)
    result["composite_tokens_per_s"] = tokens_per_s(DataConfig(source="composite"), *shape)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = np.random.default_rng(0).integers(0, 50257, size=10_000_000)
        path = write_memmap(Path(tmp) / "tokens.bin", tokens, 50257)
        config = DataConfig(source="memmap", path=str(path))
        result["memmap_tokens_per_s"] = tokens_per_s(config, *shape)
        text = Path(tmp) / "corpus.txt"
        text.write_bytes(tokens.astype(np.uint8).tobytes())
        result["text_tokens_per_s"] = tokens_per_s(DataConfig(source="text", path=str(text)), *shape)
    result["synthetic_build_s"] = build_s

    for key, value in result.items():
        print(
            f"{key:>40}: {value:,.4g}" if isinstance(value, float) else f"{key:>40}: {value}", file=sys.stderr
        )
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(measure(args.seq_len, args.batch_size, args.steps)))


if __name__ == "__main__":
    main()
