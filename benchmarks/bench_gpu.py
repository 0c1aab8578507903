"""GPU throughput and MFU of the trainer at ~125M and ~350M, against a plain bf16 PyTorch loop.

For each preset, on one GPU, in this order:
  plain      the reference: the same model, init, batch and AdamW step (fp32 weights, bf16
             autocast, gradient clipping) in a bare loop over batches already on the GPU;
  torch      ``trainers.launch.run_local`` with the torch backend (``train.precision=bf16``:
             fp32 weights, bf16 autocast), in this process, eager and then with
             ``train.compile=true`` (its compile falls in the first window, which is dropped);
  deepspeed  the DeepSpeed backend, one process, per ZeRO stage in ``--zero`` (bf16 enabled:
             bf16 weights, fp32 master copy); ``run_local`` starts it in a fresh process. Eager,
             and compiled too with ``--compile-deepspeed``.
Every run takes ``steps`` steps in windows of ``window`` steps and waits for the GPU only at the
end of a window (the trainer's loop does the same at each log record). The first window (CUDA
context, cuBLAS heuristics, allocator growth) is dropped and tokens/s is the median over the
others, the same for the trainer (its per-window ``train/tokens_per_s`` records) and the plain
loop. Evals are off the trainer's clock; checkpoints and diagnostics are off.

MFU = flops_per_token (every matmul and attention, ``trainers.model.flops_per_token``) × tokens/s
over (a) the device's dense bf16 peak from its datasheet (``BF16_PEAK``, matched on the device
name; None for a device not in the table) and (b) the best bf16 rate of an 8192×8192 matmul
measured in the same run. ``vs_plain`` is a row's tokens/s over the plain loop's at that preset.
Target: ≥ 40% MFU against the datasheet peak at ~350M.

Batch × sequence per preset (``SHAPES``, recorded in every row): 32 × 1024 at both, which every
row ran in on an 80 GB H100. At 16k tokens per step AdamW and clipping took 12% of a
compiled 350m step. ``--batch`` and ``--seq-len`` override them. A failing row (out of memory, a
DeepSpeed error) is recorded with its error and the others go on.

    python benchmarks/bench_gpu.py [--presets 125m,350m] [--zero 2,3] [--steps 60] [--window 10]
                                [--compile-deepspeed] [--out PATH]

Without a CUDA GPU it prints one line and exits with status 1. The last stdout line is one JSON
object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.callbacks import JsonlLogger, read_jsonl
from trainers.config import load_run_config, resolve
from trainers.data import build_source
from trainers.init import init_weights
from trainers.launch import run_local
from trainers.model import Transformer
from trainers.optim import build_optimizer

NO_GPU = "bench_gpu: no CUDA GPU visible (torch.cuda.is_available() is false); run it on a machine with an NVIDIA GPU"

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched in order on
# torch.cuda.get_device_name: the specific H100 variants before the generic H100 (the SXM part
# reports itself as "NVIDIA H100 80GB HBM3"). None: no datasheet figure here, matmul only.
BF16_PEAK: tuple[tuple[str, float | None], ...] = (
    ("H200", 989.4e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", None),
    ("H100", 989.4e12),
    ("A100", 312e12),
)

SHAPES = {"125m": (32, 1024), "350m": (32, 1024)}  # (batch, seq_len) per preset
DEFAULT_SHAPE = (16, 1024)


def bf16_peak_for(device_name: str) -> float | None:
    """The datasheet dense bf16 FLOP/s of ``device_name``, or None if it is not in the table."""
    name = device_name.upper()
    for key, peak in BF16_PEAK:
        if key in name:
            return peak
    return None


def steady_rate(window_rates: list[float]) -> float:
    """Median tokens/s over the windows after the first (the warm-up)."""
    if len(window_rates) < 2:
        raise ValueError(f"need at least two windows to drop the warm-up one, got {len(window_rates)}")
    return statistics.median(window_rates[1:])


def mfu(tokens_per_s: float | None, flops_per_token: int, peak: float | None) -> float | None:
    if not tokens_per_s or not peak:
        return None
    return tokens_per_s * flops_per_token / peak


def matmul_bf16_flops(size: int = 8192, repeats: int = 10, inner: int = 10) -> float:
    """Best observed bf16 FLOP/s of an (n×n)·(n×n) matmul on the current GPU."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):  # warm-up: cuBLAS picks its kernel, clocks ramp up
        torch.mm(a, b)
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        torch.cuda.synchronize()
        best = max(best, inner * 2 * size**3 / (time.perf_counter() - start))
    return best


def plain_window_rates(overrides: list[str], steps: int, window: int) -> list[float]:
    """The reference: tokens/s per window of a bare bf16-autocast loop with the trainer's model and step."""
    run = resolve(load_run_config(None, overrides))
    batch_size, seq_len = run.config.train.batch_size, run.config.train.seq_len
    source = build_source(run.config.data, seq_len, run.config.seed)
    batches = [torch.from_numpy(source.train_batch(s, batch_size)).cuda() for s in range(steps)]
    model = Transformer(run.arch)
    init_weights(model, run.config.init, torch.Generator().manual_seed(run.config.seed))
    model.cuda()
    optimizer = build_optimizer(model, run.config.optim)
    rates, clock = [], time.perf_counter()
    for step, batch in enumerate(batches, 1):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.config.optim.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % window == 0:
            loss.item()  # wait for the GPU here only, as the trainer does at each log record
            now = time.perf_counter()
            rates.append(window * batch_size * seq_len / (now - clock))
            clock = now
    return rates


def trainer_window_rates(overrides: list[str], steps: int, window: int) -> list[float]:
    """The trainer's own tokens/s per log window (eval and checkpoints are off its clock)."""
    run = resolve(load_run_config(None, overrides))
    tokens = steps * run.config.train.batch_size * run.config.train.seq_len
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "metrics.jsonl"
        config = load_run_config(
            None,
            [
                *overrides,
                f"train.tokens={tokens}",
                f"train.log_every={window}",
                "train.eval_every=1000000",
                "train.checkpoint_every=1000000",
                "diag.enabled=false",
            ],
        )
        run_local(config, Path(folder) / "run", [JsonlLogger(log)])
        return [r["train/tokens_per_s"] for r in read_jsonl(log) if r.get("kind") == "train"]


def attempt(measure_rates: Callable[..., list[float]], *args) -> tuple[float | None, str | None]:
    """(steady tokens/s, None), or (None, the error) so that one failing row does not stop the rest."""
    try:
        return steady_rate(measure_rates(*args)), None
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[
            0
        ]  # e.g. "CUDA out of memory. Tried to allocate ..."
        return None, f"{type(error).__name__}: {first_line[:300]}"
    finally:
        gc.collect()  # the failed run's tensors, then the cached blocks, before the next row
        torch.cuda.empty_cache()


def split(value: str | list) -> list[str]:
    return [v for v in value.split(",") if v] if isinstance(value, str) else [str(v) for v in value]


def measure(
    presets: str | list[str] = "125m,350m",
    zero: str | list[int] = "2,3",
    steps: int = 60,
    window: int = 10,
    batch: int | None = None,
    seq_len: int | None = None,
    compile_deepspeed: bool = False,
) -> dict:
    if not torch.cuda.is_available():
        raise RuntimeError(NO_GPU)
    if steps % window or steps < 2 * window:
        raise ValueError(
            f"steps must be a multiple of window and at least two windows, got {steps} and {window}"
        )
    device = torch.cuda.get_device_name()
    peak = bf16_peak_for(device)
    matmul = matmul_bf16_flops()
    print(
        f"{device}: bf16 matmul {matmul / 1e12:.0f} TFLOP/s, datasheet peak "
        f"{f'{peak / 1e12:.1f} TFLOP/s' if peak else 'unknown'}",
        file=sys.stderr,
    )
    rows = []
    for preset in split(presets):
        b, t = SHAPES.get(preset, DEFAULT_SHAPE)
        b, t = batch or b, seq_len or t
        overrides = [
            f"model.preset={preset}",
            f"train.batch_size={b}",
            f"train.seq_len={t}",
            "train.device=cuda",
            "train.precision=bf16",
        ]
        flops_per_token = resolve(load_run_config(None, overrides)).flops_per_token
        plain, plain_error = attempt(plain_window_rates, overrides, steps, window)
        runs = [("plain", None, False, plain, plain_error)]
        for compile in (False, True):
            compiled = [*overrides, f"train.compile={compile}"]
            runs.append(("torch", None, compile, *attempt(trainer_window_rates, compiled, steps, window)))
        for stage in split(zero):
            for compile in (False, True) if compile_deepspeed else (False,):
                ds = [
                    *overrides,
                    "train.backend=deepspeed",
                    "train.processes=1",
                    f"train.zero_stage={stage}",
                    f"train.compile={compile}",
                ]
                runs.append(
                    ("deepspeed", int(stage), compile, *attempt(trainer_window_rates, ds, steps, window))
                )
        for backend, stage, compile, rate, error in runs:
            row = {
                "preset": preset,
                "backend": backend,
                "zero_stage": stage,
                "compile": compile,
                "batch": b,
                "seq_len": t,
                "tokens_per_s": rate,
                "mfu_vs_peak": mfu(rate, flops_per_token, peak),
                "mfu_vs_matmul": mfu(rate, flops_per_token, matmul),
                "vs_plain": rate / plain if rate and plain else None,
            }
            if error:
                row["error"] = error
            rows.append(row)
            label = f"{preset} {backend}{f' ZeRO-{stage}' if stage is not None else ''}{' compiled' if compile else ''}"
            summary = error or f"{rate:,.0f} tok/s, MFU {row['mfu_vs_matmul']:.1%} of the matmul rate" + (
                f", {row['vs_plain']:.3f}× plain" if row["vs_plain"] else ""
            )
            print(f"{label:>20}: {summary}", file=sys.stderr)
    return {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "deepspeed": _version("deepspeed"),
        "bf16_peak_flops": peak,
        "matmul_bf16_flops": matmul,
        "steps": steps,
        "window": window,
        "rows": rows,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="125m,350m")
    parser.add_argument(
        "--zero", default="2,3", help="DeepSpeed ZeRO stages to run, comma-separated ('' for none)"
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument(
        "--window", type=int, default=10, help="steps per timing window; the first window is warm-up"
    )
    parser.add_argument("--batch", type=int, help="sequences per step for every preset (default: SHAPES)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence for every preset (default: SHAPES)")
    parser.add_argument("--compile-deepspeed", action="store_true", help="add a compiled row per ZeRO stage")
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(NO_GPU)  # one line on stderr, exit status 1
    result = measure(
        args.presets, args.zero, args.steps, args.window, args.batch, args.seq_len, args.compile_deepspeed
    )
    line = json.dumps(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
