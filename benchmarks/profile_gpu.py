"""Where a training step's GPU time goes: torch.profiler over the trainer's step at one preset.

Builds the torch backend exactly as a run does (``train.precision=bf16``, ``train.compile`` as
asked), takes ``--warmup`` steps (the compile, if any, falls there), then profiles ``--steps``
steps and prints, per step: the wall time, the time kernels kept the GPU busy, and that busy time
split by kind of kernel (matmuls, attention, optimizer, Inductor's fused kernels, the rest), with
the slowest kernels last. Idle time is wall minus busy: the GPU waiting for the Python side.

    python benchmarks/profile_gpu.py --preset 350m [--batch 16] [--seq-len 1024] [--compile] [--steps 10]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.backends.torch_backend import TorchBackend
from trainers.config import load_run_config, resolve
from trainers.data import build_source
from trainers.init import init_weights
from trainers.model import Transformer

# Kernel name pattern -> kind, first match wins (cuBLAS and CUTLASS matmuls have many names).
KINDS = (
    (re.compile(r"flash|fmha|attention", re.I), "attention"),
    (re.compile(r"adam|multi_tensor|foreach|lpnorm", re.I), "optimizer and clipping"),
    (re.compile(r"gemm|nvjet|xmma|cutlass|cublas|wgmma|sm90", re.I), "matmul"),
    (re.compile(r"^triton_", re.I), "inductor fused"),
    (re.compile(r"softmax|nll|cross_entropy", re.I), "cross-entropy"),
)


def kind_of(kernel: str) -> str:
    return next((kind for pattern, kind in KINDS if pattern.search(kernel)), "other elementwise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="350m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12, help="how many of the slowest kernels to list")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_gpu: no CUDA GPU visible")

    run = resolve(
        load_run_config(
            None,
            [
                f"model.preset={args.preset}",
                f"train.batch_size={args.batch}",
                f"train.seq_len={args.seq_len}",
                "train.device=cuda",
                "train.precision=bf16",
                f"train.compile={args.compile}",
            ],
        )
    )
    source = build_source(run.config.data, args.seq_len, run.config.seed)
    rows = [
        torch.from_numpy(source.train_batch(s, args.batch)).cuda() for s in range(args.warmup + args.steps)
    ]
    batches = [(row[:, :-1], row[:, 1:]) for row in rows]
    model = Transformer(run.arch)
    init_weights(model, run.config.init, torch.Generator().manual_seed(run.config.seed))
    backend = TorchBackend(run, model)
    for batch in batches[: args.warmup]:
        backend.train_step(*batch, lr=1e-4)
    torch.cuda.synchronize()

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for batch in batches[args.warmup :]:
            backend.train_step(*batch, lr=1e-4)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1e3 / args.steps

    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    per_step = {
        e.key: e.self_device_time_total / 1e3 / args.steps for e in kernels
    }  # µs total -> ms per step
    by_kind: dict[str, float] = defaultdict(float)
    for name, ms in per_step.items():
        by_kind[kind_of(name)] += ms
    busy_ms = sum(per_step.values())
    tokens = args.batch * args.seq_len
    print(
        f"{args.preset}, {args.batch}×{args.seq_len} tokens, {'compiled' if args.compile else 'eager'}: "
        f"{wall_ms:.1f} ms per step ({tokens / wall_ms * 1e3:,.0f} tok/s), GPU busy {busy_ms:.1f} ms, "
        f"idle {max(wall_ms - busy_ms, 0):.1f} ms"
    )
    for kind, ms in sorted(by_kind.items(), key=lambda item: -item[1]):
        print(f"  {kind:<24} {ms:7.2f} ms  {ms / wall_ms:6.1%} of the step")
    print("  slowest kernels (ms per step):")
    for name, ms in sorted(per_step.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {ms:7.2f}  {kind_of(name):<24} {name[:110]}")


if __name__ == "__main__":
    main()
