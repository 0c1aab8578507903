"""WSD branching: the points of a grid that differ only in D share one trunk.

With ``branch: {over: train.tokens}`` (or ``train.tokens_per_param``) and a WSD schedule whose
warmup is a fixed number of tokens, a WSD run of D tokens is, step for step, the same as any
longer one of the same family up to its own decay start: the same batches (a function of the
seed and the step), the same learning rate (warmup, then the peak), the same state. So the
longest point of each family is trained as usual and is the *trunk*: it also writes a
checkpoint, kept whatever ``keep_checkpoints`` says, at the decay start of every shorter point.
Each shorter point is a *branch*: its run folder is seeded with that checkpoint (and the
trunk's records up to it) and it trains only its decay. Every point keeps its own run id (the
hash of its config, as if it trained alone), run folder, MLflow run and summary; a branch's
``config.yaml`` trained alone with ``gammaray train`` gives the same losses exactly.

A family is every point with the same values of every other axis. This module only plans:
``orchestrator.scheduler`` holds a branch back until its checkpoint exists and seeds it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import GridError
from orchestrator.grids.parse import Grid
from trainers.callbacks import read_jsonl
from trainers.checkpoint import checkpoint_root, damage
from trainers.optim import decay_start, warmup_steps
from trainers.run_folder import METRICS_FILE

# The records of a trunk that a branch's history starts with (its own start record follows).
SEEDED_KINDS = ("train", "eval")


@dataclass(frozen=True)
class BranchStart:
    """Where a branch begins: a checkpoint of step ``step`` in its trunk's run folder."""

    trunk_run_id: str
    trunk_dir: str
    step: int

    @property
    def checkpoint(self) -> Path:
        return checkpoint_root(Path(self.trunk_dir)) / f"step-{self.step:08d}"


def plan_branches(grid: Grid, specs: Sequence) -> list:
    """``specs`` (``RunSpec``s in expansion order) with each family's trunk given its branch
    points and each branch its start; unchanged without ``branch:``. Raises GridError."""
    over = grid.branch_over
    if over is None:
        return list(specs)
    families: dict[tuple, list] = {}
    for spec in specs:
        _check_schedule(grid, spec)
        others = tuple((k, repr(v)) for k, v in spec.point if k != over)
        families.setdefault(others, []).append(spec)
    planned = {}
    for members in families.values():
        if len(members) < 2:
            raise GridError(
                f"{grid.source}: branch.over: point {members[0].label} has no other value of {over} with the "
                "same other values: a family of one point has nothing to branch from"
            )
        trunk = max(members, key=lambda s: s.steps)
        starts = {}
        for spec in members:
            if spec is trunk:
                continue
            step = decay_start(spec.steps, spec.config.optim)
            starts[spec.run_id] = step
            planned[spec.run_id] = dataclasses.replace(
                spec, branch=BranchStart(trunk.run_id, trunk.out_dir, step)
            )
        planned[trunk.run_id] = dataclasses.replace(trunk, checkpoint_at=tuple(sorted(set(starts.values()))))
    return [planned[spec.run_id] for spec in specs]


def _check_schedule(grid: Grid, spec) -> None:
    optim = spec.config.optim
    if optim.schedule != "wsd":
        raise GridError(
            f"{grid.source}: branch: needs optim.schedule: wsd in every point; {spec.label} has {optim.schedule}"
        )
    batch_tokens = spec.config.train.batch_size * spec.config.train.seq_len
    if optim.warmup_tokens is None and warmup_steps(spec.steps, optim, batch_tokens) > 0:
        raise GridError(
            f"{grid.source}: branch: needs optim.warmup_tokens (a warmup that is a share of the run differs "
            "between the branches); set it, or optim.warmup_fraction: 0"
        )


def seed_branch(spec) -> bool:
    """Put the trunk's checkpoint at the branch's start, and the trunk's records up to it, into the
    branch's run folder; True when the branch can start (it had been seeded or has begun
    already), False while the trunk's checkpoint does not exist or does not verify."""
    start = spec.branch
    out = Path(spec.out_dir)
    own = checkpoint_root(out)
    if own.is_dir() and any(p.name.startswith("step-") for p in own.iterdir()):
        return True  # seeded before (its checkpoints are its own from here on)
    source = start.checkpoint
    if not source.is_dir() or damage(source) is not None:
        return False
    own.mkdir(parents=True, exist_ok=True)
    staging = own / f".seeding-{source.name}"
    shutil.rmtree(staging, ignore_errors=True)
    # Checkpoints never change once written: a hard link costs no space where one can be made.
    shutil.copytree(source, staging, copy_function=_link_or_copy)
    records = [
        r
        for r in read_jsonl(Path(start.trunk_dir) / METRICS_FILE)
        if r.get("kind") in SEEDED_KINDS and r.get("step", 0) <= start.step
    ]
    history = out / METRICS_FILE
    if not history.exists():
        history.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(staging, own / source.name)
    return True


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
