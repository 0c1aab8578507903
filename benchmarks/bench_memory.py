"""Peak resident memory of one training run per CPU size, against a plain PyTorch loop and the import floor.

For each size, every measure in its own fresh process so that no peak carries over:
  floor    a process that only imports torch and the project's trainer modules, and builds a
           one-element AdamW: the first optimizer makes torch import torch._dynamo, sympy and
           mpmath (~70 MiB, 800 modules), which every run pays and which is not the run's own
           memory. It does not depend on the size, so it is measured once, not per size;
  plain    the same model, init, batch (32 × 128) and AdamW step (with gradient clipping) in a
           bare loop over pre-generated batches, after the same imports;
  trainer  ``trainers.launch.run_local`` (torch backend: ``trainers.loop.train`` in that process)
           as in a real run: an eval before, one in the middle and one at the end (diagnostics
           on), checkpoints at the default five per run, metrics.jsonl written;
  deepspeed  (``--deepspeed``) the same run on the DeepSpeed backend, ZeRO-2, one process; it
           trains in a process that ``run_local`` spawns, whose peak is reported, beside the
           peak of the process that waits for it (``deepspeed_parent_mib``), and against its own
           floor (the imports plus deepspeed). An unmeasured DeepSpeed run goes first: the first
           one on a machine compiles an op, and a reaped compiler's peak would count.
``trainer_vs_plain`` is the ratio of the peaks above the import floor (what the run itself holds),
not of the whole peaks, which at small sizes are mostly the floor; ``trainer_minus_plain_mib`` is
the difference in MiB. ``model_state_mib`` is the analytic floor of training with AdamW:
n_params × 16 bytes (fp32 weights, gradients, Adam m and v); the rest above the import floor is
activations, the data source, allocator slack, torch kernel code paged in at first use, and the
loop's own state.

How a peak is read: ``ru_maxrss`` of a process that ``exec`` ran also counts the high-water mark
of the address space it replaced (Linux records it at exec), so a child started straight from a
process holding torch reports at least that process's size. Each measured process is therefore
started by a small launcher process (a bare Python, ~10 MiB) that forks, execs it, and reads its
peak with ``os.wait4``. A peak varies by a few MiB between fresh processes (allocator and
garbage-collector timing; ±10 MiB seen at ~400 MiB), so smaller differences are noise;
``--repeats`` takes the median over more processes.

Every child runs with one thread (``train.threads=1``, ``OMP_NUM_THREADS=1``): on a busy 2-core
machine, OpenMP threads fighting over the cores make a step up to 10× slower. Steps are few (6 by
default): the peak is reached once the first step has allocated gradients and Adam's state.

    python benchmarks/bench_memory.py [--sizes tiny,100k,400k,1m,2m,5m] [--steps 6] [--repeats 1] [--deepspeed]

The last stdout line is one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = "tiny,100k,400k,1m,2m,5m"
BATCH, SEQ_LEN = 32, 128
KIND_CHOICES = ("floor", "plain", "trainer", "deepspeed-floor", "deepspeed")

# Forks and execs argv[1:] with its stdout sent to stderr (the launcher's stdout carries only its
# own line), then prints "<exit code> <peak RSS in KiB>" of that direct child.
LAUNCHER = """\
import os, sys
pid = os.fork()
if pid == 0:
    os.dup2(2, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def run_child(kind: str, preset: str, steps: int) -> tuple[int, dict]:
    """(peak RSS in KiB, what the child reported) of one fresh child process of ``kind``."""
    with tempfile.TemporaryDirectory() as folder:
        result, log = Path(folder) / "result.json", Path(folder) / "stderr.log"
        command = [
            sys.executable,
            "-c",
            LAUNCHER,
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            "--sizes",
            preset,
            "--steps",
            str(steps),
            "--result",
            str(result),
        ]
        with open(log, "w") as stderr:
            done = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                check=False,
            )
        fields = done.stdout.split()
        if len(fields) != 2 or fields[0] != "0" or not result.is_file():
            tail = " | ".join(log.read_text().strip().splitlines()[-3:])
            raise RuntimeError(
                f"{kind} child at {preset} failed (launcher said {done.stdout.strip()!r}): {tail}"
            )
        return int(fields[1]), json.loads(result.read_text())


def measure(
    sizes: str | list[str] = SIZES, steps: int = 6, repeats: int = 1, deepspeed: bool = False
) -> dict:
    presets = sizes.split(",") if isinstance(sizes, str) else list(sizes)
    floor = statistics.median(run_child("floor", presets[0], steps)[0] for _ in range(repeats))
    if deepspeed:
        # Unmeasured: the first DeepSpeed run on a machine JIT-builds its shared-memory comm op
        # (minutes), and the compiler's peak would count as the worker's.
        run_child("deepspeed", presets[0], 1)
        ds_floor = statistics.median(
            run_child("deepspeed-floor", presets[0], steps)[0] for _ in range(repeats)
        )
    rows = []
    for preset in presets:
        started = time.perf_counter()
        plain, trainer, worker, parent = [], [], [], []
        for _ in range(repeats):  # interleaved, as the other benchmarks do
            plain.append(run_child("plain", preset, steps)[0])
            peak, info = run_child("trainer", preset, steps)
            trainer.append(peak)
            if deepspeed:
                ds_info = run_child("deepspeed", preset, steps)[1]
                worker.append(ds_info["worker_maxrss_kib"])
                parent.append(ds_info["self_maxrss_kib"])
        plain, trainer = statistics.median(plain), statistics.median(trainer)
        row = {
            "preset": preset,
            "n_params": info["n_params"],
            "model_state_mib": mib(info["n_params"] * 16 / 1024),
            "import_floor_mib": mib(floor),
            "plain_peak_mib": mib(plain),
            "trainer_peak_mib": mib(trainer),
            "plain_above_floor_mib": mib(plain - floor),
            "trainer_above_floor_mib": mib(trainer - floor),
            "trainer_vs_plain": round((trainer - floor) / max(plain - floor, 1), 3),
            "trainer_minus_plain_mib": mib(trainer - plain),
        }
        if deepspeed:
            row.update(
                deepspeed_import_floor_mib=mib(ds_floor),
                deepspeed_peak_mib=mib(statistics.median(worker)),
                deepspeed_parent_mib=mib(statistics.median(parent)),
                deepspeed_vs_plain=round((statistics.median(worker) - ds_floor) / max(plain - floor, 1), 3),
            )
        rows.append(row)
        ds = f"; deepspeed {row['deepspeed_peak_mib']:,.0f} MiB" if deepspeed else ""
        print(
            f"{preset:>5}: trainer {row['trainer_peak_mib']:,.0f} MiB, plain {row['plain_peak_mib']:,.0f} MiB, "
            f"floor {row['import_floor_mib']:,.0f} MiB; above the floor {row['trainer_vs_plain']:.2f}× plain "
            f"({row['trainer_minus_plain_mib']:+.0f} MiB); model state {row['model_state_mib']:,.1f} MiB{ds} "
            f"({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    return {
        "threads": 1,
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "steps": steps,
        "repeats": repeats,
        "trainer_vs_plain": "ratio of peak RSS above the import floor",
        "import_floor_mib": mib(floor),
        "sizes": rows,
    }


# ---- the measured processes --------------------------------------------------------------------


def child(kind: str, preset: str, steps: int, result_path: str) -> None:
    """One measured process: the imports every kind shares, then the work of ``kind``."""
    import torch

    import trainers.backends.torch_backend
    import trainers.launch  # noqa: F401  (imports the loop, config, model, data, probes, ...)

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], foreach=True)  # torch's deferred imports

    if kind == "deepspeed-floor":  # the DeepSpeed run's parent does not import deepspeed; its worker does
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # as the backend does on a CPU
        import deepspeed  # noqa: F401
    if kind in ("floor", "deepspeed-floor"):
        info = {}
    elif kind == "plain":
        info = plain_run(preset, steps)
    else:
        info = trainer_run(preset, steps, deepspeed=kind == "deepspeed")
    Path(result_path).write_text(json.dumps(info))


def overrides_for(preset: str) -> list[str]:
    # device=cpu: on a GPU machine "auto" would train on the GPU, and RSS would not measure it.
    return [
        f"model.preset={preset}",
        f"train.batch_size={BATCH}",
        f"train.seq_len={SEQ_LEN}",
        "train.threads=1",
        "train.device=cpu",
    ]


def plain_run(preset: str, steps: int) -> dict:
    import torch

    from trainers.config import load_run_config, resolve
    from trainers.data import build_source
    from trainers.init import init_weights
    from trainers.model import Transformer
    from trainers.optim import build_optimizer

    torch.set_num_threads(1)
    run = resolve(load_run_config(None, overrides_for(preset)))
    source = build_source(run.config.data, run.config.train.seq_len, run.config.seed)
    batches = [torch.from_numpy(source.train_batch(s, BATCH)) for s in range(steps)]
    model = Transformer(run.arch)
    init_weights(model, run.config.init, torch.Generator().manual_seed(0))
    optimizer = build_optimizer(model, run.config.optim)
    for batch in batches:
        model.loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"n_params": sum(p.numel() for p in model.parameters())}


def trainer_run(preset: str, steps: int, deepspeed: bool) -> dict:
    import resource

    from trainers.callbacks import JsonlLogger
    from trainers.config import load_run_config
    from trainers.launch import run_local

    overrides = [
        *overrides_for(preset),
        f"train.tokens={steps * BATCH * SEQ_LEN}",
        f"train.eval_every={max(1, steps // 2)}",
    ]  # evals at the start, the middle and the end
    if deepspeed:
        overrides += ["train.backend=deepspeed", "train.zero_stage=2", "train.processes=1"]
    with tempfile.TemporaryDirectory() as folder:
        result = run_local(
            load_run_config(None, overrides), folder, [JsonlLogger(Path(folder) / "metrics.jsonl")]
        )
    # The DeepSpeed run trained in a spawned process that run_local waited for: its peak is the
    # largest among this process's reaped children.
    return {
        "n_params": result.n_params,
        "steps": result.steps,
        "worker_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES)
    parser.add_argument(
        "--steps", type=int, default=6, help="training steps per run (the peak comes at the first)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="fresh processes per measure; the median is reported"
    )
    parser.add_argument(
        "--deepspeed", action="store_true", help="also the DeepSpeed backend (ZeRO-2, 1 process)"
    )
    parser.add_argument(
        "--child", choices=KIND_CHOICES, help=argparse.SUPPRESS
    )  # internal: one measured process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.sizes, args.steps, args.result)
        return
    print(json.dumps(measure(args.sizes, args.steps, args.repeats, args.deepspeed)))


if __name__ == "__main__":
    main()
