"""Checkpoints: one folder per step, written whole or not at all.

Layout: ``<out>/checkpoints/step-00000123/`` holds the backend's files (model, optimizer) and
``meta.json`` (step, the loop's own state, RNG states). A checkpoint is written into a hidden
temporary folder and renamed into place, so a process killed mid-write leaves no half checkpoint.
The data stream needs no state: batch k is a pure function of (seed, k). A finished run also
keeps a checkpoint of its last step: the trained model, which export and evaluation read.

``meta.json``, written last, also lists every other file of the checkpoint with its size and
SHA-256 (``files``), so a checkpoint damaged after it was written (a truncated or corrupt file
on a shared file system, a file gone) is recognized before it is loaded: ``damage`` says what
is wrong, and the loop resumes from the newest checkpoint that has none. Checkpoints written
before the list existed are trusted as they are.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch

from trainers.errors import TrainingError
from trainers.run_folder import CHECKPOINTS_DIR

_PREFIX = "step-"


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / CHECKPOINTS_DIR


def checkpoints_newest_first(out_dir: Path) -> list[Path]:
    """Every checkpoint folder that was renamed into place (each has a ``meta.json``), newest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    complete = (p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / "meta.json").is_file())
    return sorted(complete, reverse=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None (damaged or not: see ``damage``)."""
    found = checkpoints_newest_first(out_dir)
    return found[0] if found else None


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint's files, in a few words naming the file, or None."""
    try:
        meta = json.loads((checkpoint / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "meta.json: unreadable or not valid JSON"
    if not isinstance(meta, dict) or "step" not in meta:
        return "meta.json: no step recorded"
    for name, expected in meta.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name}: missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name}: {size:,} bytes where {expected['size']:,} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{name}: checksum mismatch"
    return None


def save_checkpoint(
    out_dir: Path,
    step: int,
    meta: dict[str, Any],
    write_state: Callable[[Path], None],
    is_main: bool,
    barrier: Callable[[], None],
    keep: int,
    keep_steps: Collection[int] = (),
) -> Path:
    """Write a checkpoint for ``step`` (every process of a run calls this together).

    ``write_state(folder)`` writes the backend's files (collective for DeepSpeed); the main
    process then adds ``meta.json`` and renames the folder into place. The newest ``keep``
    checkpoints stay, and those of ``keep_steps``.
    """
    root = checkpoint_root(out_dir)
    final = root / f"{_PREFIX}{step:08d}"
    staging = root / f".staging-{_PREFIX}{step:08d}"
    try:
        if is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        barrier()
        write_state(staging)
        barrier()
        if is_main:
            _publish(staging, final, root, step, meta, keep, keep_steps)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        shutil.rmtree(staging, ignore_errors=True)  # the space it held; older checkpoints stay
        raise CheckpointWriteError(staging, error) from error
    barrier()
    return final


class CheckpointWriteError(TrainingError):
    """A checkpoint could not be written (full disk, I/O error, permissions); the run stops with
    the folder and the OS's reason in one line, the checkpoints before it untouched."""

    def __init__(self, folder: Path, error: BaseException):
        if isinstance(error, OSError) and error.errno in errno.errorcode:
            reason = f"{errno.errorcode[error.errno]}: {error.strerror}"
        else:
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        try:
            free = f"; {shutil.disk_usage(folder.parent).free:,} bytes free there"
        except OSError:
            free = ""
        super().__init__(
            f"cannot write checkpoint {folder} ({reason}{free}); the checkpoints before it are kept"
        )


def _publish(
    staging: Path,
    final: Path,
    root: Path,
    step: int,
    meta: dict[str, Any],
    keep: int,
    keep_steps: Collection[int],
) -> None:
    """Add ``meta.json`` (with the file list) to a written checkpoint and rename it into place."""
    files = {
        str(path.relative_to(staging)): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(staging.rglob("*"))
        if path.is_file()
    }
    meta = {**meta, "step": step, "torch_rng_state": torch.get_rng_state().tolist(), "files": files}
    (staging / "meta.json").write_text(json.dumps(meta))
    _fsync_dir(staging)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _prune(root, keep, keep_steps)


def read_meta(checkpoint: Path) -> dict[str, Any]:
    meta = json.loads((checkpoint / "meta.json").read_text())
    torch.set_rng_state(torch.tensor(meta.pop("torch_rng_state"), dtype=torch.uint8))
    meta.pop("files", None)
    return meta


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _prune(root: Path, keep: int, keep_steps: Collection[int]) -> None:
    complete = sorted(p for p in root.iterdir() if p.name.startswith(_PREFIX))
    kept = {f"{_PREFIX}{step:08d}" for step in keep_steps}
    for old in complete[:-keep]:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
