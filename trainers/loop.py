"""The training loop: one run, from one resolved config, in this process.

The loop steps, evaluates and checkpoints; everything else (console, JSONL, MLflow, diagnostics)
hooks in through callbacks. It knows nothing of grids or Ray. Every process of a multi-process
run calls ``train`` with its own ``DistInfo``; only the main process calls callbacks and writes
the summary.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from trainers.backends import make_backend
from trainers.backends.common import Backend
from trainers.callbacks import Callback
from trainers.checkpoint import checkpoints_newest_first, damage, read_meta, save_checkpoint
from trainers.config import ResolvedRun, RunConfig, dump_yaml, resolve
from trainers.data import TokenSource, build_source
from trainers.data.vocab import Role
from trainers.distributed import SINGLE_PROCESS, DistInfo
from trainers.init import init_weights
from trainers.model import Transformer
from trainers.optim import lr_at
from trainers.preemption import Preempted, StopRequest
from trainers.probes import build_probes
from trainers.run_folder import CONFIG_FILE, SUMMARY_FILE

IGNORED_TARGET = -100  # F.cross_entropy's ignore_index: a target the loss does not score

RunStatus = Literal["finished", "diverged"]


@dataclass(frozen=True)
class RunResult:
    """What a run ended as. Losses are mean next-token cross-entropy in nats."""

    run_id: str
    status: RunStatus
    n_params: int
    n_params_non_embedding: int
    tokens: int  # tokens trained (up to the divergence, if any)
    steps: int  # optimizer steps done
    train_flops: int  # tokens × 6 × n_params_non_embedding
    initial_eval_loss: float
    final_eval_loss: float  # NaN if diverged
    tokens_per_s: float  # training throughput, excluding eval and checkpoint time
    wall_s: float  # this attempt's wall time, start-up included
    diverged_step: int | None = None  # the step whose loss was first NaN/inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_summary(out_dir: Path) -> RunResult | None:
    """The finished run's result, if ``out_dir`` holds one."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    return RunResult(**json.loads(path.read_text()))


def train(
    config: RunConfig,
    out_dir: str | Path,
    callbacks: Sequence[Callback] = (),
    dist: DistInfo = SINGLE_PROCESS,
    checkpoint_at: Sequence[int] = (),
) -> RunResult:
    """Train one run into ``out_dir``, resuming from its latest checkpoint if there is one.

    ``checkpoint_at``: steps that also get a checkpoint, kept to the end whatever
    ``train.keep_checkpoints`` says (a branching trunk's branch points; they change no result).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    run = resolve(config)
    train_config = run.config.train
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CONFIG_FILE).write_text(dump_yaml(run.config))
    source = build_source(run.config.data, seq_len=train_config.seq_len, seed=run.config.seed)
    model = Transformer(run.arch)
    init_weights(model, run.config.init, torch.Generator().manual_seed(run.config.seed))
    backend = make_backend(run, model, dist)
    try:
        with StopRequest(train_config.preempt_grace_s) as stop:
            loop = _Loop(
                run,
                source,
                backend,
                out_dir,
                callbacks if dist.is_main else (),
                dist,
                started,
                stop,
                frozenset(checkpoint_at),
            )
            return loop.run()
    finally:
        backend.close()


class _Loop:
    def __init__(
        self,
        run: ResolvedRun,
        source: TokenSource,
        backend: Backend,
        out_dir: Path,
        callbacks: Sequence[Callback],
        dist: DistInfo,
        started: float,
        stop: StopRequest,
        checkpoint_at: frozenset[int],
    ):
        self.resolved, self.source, self.backend, self.out_dir = run, source, backend, out_dir
        self.callbacks, self.dist, self.started, self.stop = callbacks, dist, started, stop
        self.checkpoint_at = checkpoint_at
        train = run.config.train
        self.total_steps = run.steps
        self.batch_tokens = train.batch_size * train.seq_len
        self.eval_every = run.eval_every
        self.checkpoint_every = run.checkpoint_every
        self.answers_only = train.loss_on == "answers"
        eval_rows = source.eval_batch_with_roles() if self.answers_only else (source.eval_batch(), None)
        self.eval_set = self._local_rows(inputs_and_targets(*eval_rows), drop_remainder=True)
        # Probes read whole weight matrices: under ZeRO-3 a process holds only a shard of each.
        self.probes = build_probes(run, source) if dist.is_main and train.zero_stage < 3 else []

    def run(self) -> RunResult:
        step, initial_eval_loss = self._resume()
        self._resumed_from = step
        self._emit("on_start", self.resolved.summary(), step)
        if step == 0:
            initial_eval_loss = self._evaluate(0)
        train_seconds, window_start, pending = 0.0, step, []
        window_clock = time.perf_counter()
        diverged_step = None
        while step < self.total_steps:
            inputs, targets = self._train_batch(step)
            lr = lr_at(step, self.total_steps, self.resolved.config.optim, self.batch_tokens)
            pending.append(self.backend.train_step(inputs, targets, lr))
            step += 1
            at_log = step % self.resolved.config.train.log_every == 0 or step == self.total_steps
            at_eval = step % self.eval_every == 0 and step < self.total_steps
            at_checkpoint = (
                step % self.checkpoint_every == 0 or step in self.checkpoint_at
            ) and step < self.total_steps
            stopping = self._stop_requested(at_log or at_eval or at_checkpoint) and step < self.total_steps
            if not (at_log or at_eval or at_checkpoint or stopping):
                continue
            # Wait for the device only here: reading losses every step would stall a GPU.
            losses = self.backend.mean_across_processes(torch.stack(pending)).cpu()
            elapsed = time.perf_counter() - window_clock
            train_seconds += elapsed
            finite = torch.isfinite(losses)
            if not finite.all():
                diverged_step = window_start + int((~finite).nonzero()[0]) + 1
                break
            self._emit(
                "on_step",
                step,
                {
                    "train/loss": float(losses[-1]),
                    "train/loss_mean": float(losses.mean()),
                    "train/lr": lr,
                    "train/tokens": step * self.batch_tokens,
                    "train/tokens_per_s": len(pending) * self.batch_tokens / max(elapsed, 1e-9),
                },
            )
            if at_eval:
                self._evaluate(step)
            if at_checkpoint or stopping:
                self._checkpoint(step, initial_eval_loss)
            if stopping:
                raise Preempted(step, self.stop.signum)
            pending, window_start, window_clock = [], step, time.perf_counter()
        return self._finish(step, initial_eval_loss, train_seconds, diverged_step)

    # ---- pieces -------------------------------------------------------------------------------

    def _stop_requested(self, at_window: bool) -> bool:
        """Whether to stop now: at any step for one process; for several, all together at the
        next window (one all-reduce of the flag there), since their checkpoint is collective."""
        if self.dist.world_size == 1:
            return self.stop.requested
        if not at_window:
            return False
        flag = torch.tensor([1.0 if self.stop.requested else 0.0])
        return bool(self.backend.sum_across_processes(flag).item() > 0)

    def _train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's inputs and targets of training step ``step``."""
        size = self.resolved.config.train.batch_size
        if self.answers_only:
            rows = self.source.train_batch_with_roles(step, size)
        else:
            rows = (self.source.train_batch(step, size), None)
        return self._local_rows(inputs_and_targets(*rows))

    def _resume(self) -> tuple[int, float]:
        """Load the newest checkpoint that verifies and loads; each one passed over is named in a
        warning. Without one, the run starts from step 0 (with a warning if some were damaged)."""
        skipped: list[tuple[Path, str]] = []
        for checkpoint in checkpoints_newest_first(self.out_dir):
            reason = damage(checkpoint)
            if reason is None:
                try:
                    self.backend.load(checkpoint)
                    meta = read_meta(checkpoint)
                except Exception as error:  # it verified (or predates file lists) but does not load
                    reason = f"cannot be loaded ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
            if reason is not None:
                skipped.append((checkpoint, reason))
                continue
            self._warn_skipped(skipped, f"resuming from {checkpoint.name}")
            return meta["step"], meta["initial_eval_loss"]
        self._warn_skipped(skipped, "no usable checkpoint left: starting from step 0")
        return 0, math.nan

    def _warn_skipped(self, skipped: list[tuple[Path, str]], outcome: str) -> None:
        if not self.dist.is_main:
            return
        for checkpoint, reason in skipped:
            print(
                f"gammaray: warning: checkpoint {checkpoint.name} is damaged ({reason}); {outcome}",
                file=sys.stderr,
                flush=True,
            )

    @torch.no_grad()
    def _evaluate(self, step: int, final: bool = False) -> float:
        batch_size = max(1, self.resolved.config.train.batch_size // self.dist.world_size)
        total = torch.zeros(2, dtype=torch.float64)  # (sum of per-sequence mean losses, sequences)
        for inputs, targets in zip(*(part.split(batch_size) for part in self.eval_set), strict=True):
            loss = self.backend.forward_loss(inputs, targets).double().cpu()
            total += torch.stack((loss * len(inputs), torch.tensor(float(len(inputs)), dtype=torch.float64)))
        total = self.backend.sum_across_processes(total).cpu()
        eval_loss = float(total[0] / total[1])
        metrics = {"eval/loss": eval_loss, "eval/tokens": step * self.batch_tokens}
        if self.probes:
            model = self.backend.model
            was_training = model.training
            model.eval()
            for probe in self.probes:
                metrics.update(probe.measure(model, step, final))
            model.train(was_training)
        self._emit("on_eval", step, metrics)
        return eval_loss

    def _checkpoint(self, step: int, initial_eval_loss: float) -> None:
        save_checkpoint(
            self.out_dir,
            step,
            meta={"initial_eval_loss": initial_eval_loss, "run_id": self.resolved.run_id},
            write_state=self.backend.save,
            is_main=self.dist.is_main,
            barrier=self._barrier,
            keep=self.resolved.config.train.keep_checkpoints,
            keep_steps=self.checkpoint_at,
        )

    def _finish(
        self, step: int, initial_eval_loss: float, train_seconds: float, diverged_step: int | None
    ) -> RunResult:
        if diverged_step is None:
            final_eval_loss = self._evaluate(step, final=True)
            trained_steps = step
            self._checkpoint(step, initial_eval_loss)  # the finished model, for export and evaluation
        else:
            final_eval_loss = math.nan
            trained_steps = diverged_step
        tokens = trained_steps * self.batch_tokens
        result = RunResult(
            run_id=self.resolved.run_id,
            status="finished" if diverged_step is None else "diverged",
            n_params=self.resolved.n_params,
            n_params_non_embedding=self.resolved.n_params_non_embedding,
            tokens=tokens,
            steps=trained_steps,
            train_flops=tokens * self.resolved.flops_per_token_6n,
            initial_eval_loss=initial_eval_loss,
            final_eval_loss=final_eval_loss,
            tokens_per_s=(step - self._resumed_from) * self.batch_tokens / train_seconds
            if train_seconds
            else 0.0,
            wall_s=time.perf_counter() - self.started,
            diverged_step=diverged_step,
        )
        if self.dist.is_main:
            _write_atomic(self.out_dir / SUMMARY_FILE, json.dumps(result.to_dict(), indent=2))
        self._emit("on_end", result.to_dict())
        return result

    def _local_rows(
        self, batch: tuple[torch.Tensor, torch.Tensor], drop_remainder: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of a global batch of (inputs, targets): rows rank::world."""
        kept = len(batch[0])
        if drop_remainder:  # every process must run the same number of forwards (ZeRO-3 gathers)
            kept -= kept % self.dist.world_size
        inputs, targets = (part[:kept][self.dist.rank :: self.dist.world_size] for part in batch)
        return inputs, targets

    def _barrier(self) -> None:
        if self.dist.world_size > 1:
            torch.distributed.barrier()

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def inputs_and_targets(tokens: np.ndarray, roles: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of T+1 tokens → inputs and next-token targets, each (B, T). Given the rows' roles,
    only the composite task's answers are scored: every other target is ``IGNORED_TARGET``."""
    rows = torch.from_numpy(tokens)
    inputs, targets = rows[:, :-1], rows[:, 1:]
    if roles is not None:
        unscored = torch.from_numpy(roles[:, 1:] != Role.COMP_ANSWER)
        targets = targets.masked_fill(unscored, IGNORED_TARGET)
    return inputs, targets


def _write_atomic(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    os.replace(staging, path)
