"""Checkpoints: one folder per step, written whole or not at all.

Layout: ``<out>/checkpoints/step-00000123/`` holds the backend's files (model, optimizer) and
``meta.json`` (step, the loop's own state, RNG states). A checkpoint is written into a hidden
temporary folder and renamed into place, so a process killed mid-write leaves no half checkpoint.
The data stream needs no state: batch k is a pure function of (seed, k).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainers.run_folder import CHECKPOINTS_DIR

_PREFIX = "step-"


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / CHECKPOINTS_DIR


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return None
    complete = sorted(p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / "meta.json").is_file())
    return complete[-1] if complete else None


def save_checkpoint(
    out_dir: Path,
    step: int,
    meta: dict[str, Any],
    write_state: Callable[[Path], None],
    is_main: bool,
    barrier: Callable[[], None],
    keep: int,
) -> Path:
    """Write a checkpoint for ``step`` (every process of a run calls this together).

    ``write_state(folder)`` writes the backend's files (collective for DeepSpeed); the main
    process then adds ``meta.json`` and renames the folder into place.
    """
    root = checkpoint_root(out_dir)
    final = root / f"{_PREFIX}{step:08d}"
    staging = root / f".staging-{_PREFIX}{step:08d}"
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    write_state(staging)
    barrier()
    if is_main:
        meta = {**meta, "step": step, "torch_rng_state": torch.get_rng_state().tolist()}
        (staging / "meta.json").write_text(json.dumps(meta))
        _fsync_dir(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        _prune(root, keep)
    barrier()
    return final


def read_meta(checkpoint: Path) -> dict[str, Any]:
    meta = json.loads((checkpoint / "meta.json").read_text())
    torch.set_rng_state(torch.tensor(meta.pop("torch_rng_state"), dtype=torch.uint8))
    return meta


def _prune(root: Path, keep: int) -> None:
    complete = sorted(p for p in root.iterdir() if p.name.startswith(_PREFIX))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
