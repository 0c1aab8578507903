"""Token sources read from files: raw bytes (``text``) and pretokenized arrays (``memmap``).

Split rule (both): of a file's ``n`` tokens, the last ``floor(n * eval_fraction)`` are held out
for eval and the rest are for training. A training row is a window of ``seq_len + 1`` tokens that
lies wholly inside the training part, at a start drawn uniformly from the run seed (row ``g`` is
the same for any batch size). The eval set is ``eval_sequences`` windows at evenly spaced starts
inside the held-out part (they overlap when that part is shorter than ``eval_sequences`` rows).

``memmap`` files: ``<name>.bin`` holds the tokens as a flat little-endian ``uint16`` or
``uint32`` array; ``<name>.bin.json`` beside it holds ``{"dtype": "uint16", "vocab_size": 50257}``
(other keys are ignored). ``write_memmap`` writes both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from trainers.data.stream import TRAIN_TAG, seed_word
from trainers.errors import ConfigError

DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
_ROWS_PER_BLOCK = 4096  # training window starts drawn per block (one small draw per block)


def metadata_path(path: str | os.PathLike[str]) -> Path:
    """The metadata file beside a memmap token file: ``<path>.json``."""
    return Path(f"{os.fspath(path)}.json")


def write_memmap(path: str | os.PathLike[str], tokens: np.ndarray, vocab_size: int) -> Path:
    """Write ``tokens`` (integers in ``0 .. vocab_size-1``) as a ``memmap`` source file.

    Stores ``uint16`` when ``vocab_size <= 65536``, else ``uint32``; writes the metadata file
    beside it. Returns the token file's path.
    """
    tokens = np.asarray(tokens).reshape(-1)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if not 1 <= vocab_size <= 1 << 32:
        raise ValueError(f"vocab_size must be in 1 .. 2^32, got {vocab_size}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"tokens must lie in 0 .. {vocab_size - 1}")
    name = "uint16" if vocab_size <= 1 << 16 else "uint32"
    path = Path(path)
    tokens.astype(DTYPES[name]).tofile(path)
    metadata_path(path).write_text(json.dumps({"dtype": name, "vocab_size": int(vocab_size)}) + "\n")
    return path


class FileSource:
    """Rows of a flat token array (a ``np.memmap``); see the module docstring for the split."""

    def __init__(
        self,
        tokens: np.ndarray,
        vocab_size: int,
        seq_len: int,
        seed: int,
        eval_sequences: int,
        eval_fraction: float,
        path: str,
    ) -> None:
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.path = path
        row_len = seq_len + 1
        n = len(tokens)
        n_eval = int(n * eval_fraction)
        n_train = n - n_eval
        if n_train < row_len or n_eval < row_len:
            raise ConfigError(
                f"path: {path} has {n} tokens: with eval_fraction {eval_fraction} its training "
                f"part has {n_train} and its held-out part {n_eval}; each needs at least "
                f"seq_len + 1 = {row_len}"
            )
        self._tokens = tokens
        self._n_starts = n_train - row_len + 1  # training windows start in 0 .. n_starts-1
        self._key = (TRAIN_TAG, seed_word(seed))
        self._cached_block: tuple[int, np.ndarray] | None = None
        starts = n_train + np.linspace(0, n_eval - row_len, eval_sequences).round().astype(np.int64)
        self._eval = self._windows(starts)
        self._check(self._eval, key="path")  # build_source names the section

    def train_batch(self, step: int, batch_size: int) -> np.ndarray:
        if step < 0 or batch_size < 1:
            raise ValueError(f"need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
        rows = np.arange(step * batch_size, (step + 1) * batch_size)
        blocks = rows // _ROWS_PER_BLOCK
        starts = np.empty(batch_size, dtype=np.int64)
        for block in np.unique(blocks):
            mask = blocks == block
            starts[mask] = self._starts(int(block))[rows[mask] % _ROWS_PER_BLOCK]
        batch = self._windows(starts)
        self._check(batch, key="data.path")  # found mid-run: name the full key
        return batch

    def eval_batch(self) -> np.ndarray:
        return self._eval.copy()

    def _starts(self, block: int) -> np.ndarray:
        if self._cached_block is None or self._cached_block[0] != block:
            rng = np.random.default_rng([*self._key, int(block)])
            self._cached_block = (block, rng.integers(0, self._n_starts, size=_ROWS_PER_BLOCK))
        return self._cached_block[1]

    def _windows(self, starts: np.ndarray) -> np.ndarray:
        return self._tokens[starts[:, None] + np.arange(self.seq_len + 1)].astype(np.int64)

    def _check(self, rows: np.ndarray, key: str) -> None:
        # The metadata's vocab_size is trusted by the model's embedding: a larger token would
        # fail there with a far less helpful message (or silently on some devices).
        if rows.max() >= self.vocab_size:
            raise ConfigError(
                f"{key}: {self.path} holds token {int(rows.max())}, outside vocab_size {self.vocab_size}"
            )


def open_text(path: str, seq_len: int, seed: int, eval_sequences: int, eval_fraction: float) -> FileSource:
    """Any file as byte tokens (vocabulary 256)."""
    _check_exists(path)
    if os.path.getsize(path) == 0:
        raise ConfigError(f"path: {path} is empty")
    tokens = np.memmap(path, dtype=np.uint8, mode="r")
    return FileSource(tokens, 256, seq_len, seed, eval_sequences, eval_fraction, path)


def open_memmap(path: str, seq_len: int, seed: int, eval_sequences: int, eval_fraction: float) -> FileSource:
    """A pretokenized ``.bin`` file with its ``<path>.json`` metadata."""
    _check_exists(path)
    meta_path = metadata_path(path)
    if not meta_path.is_file():
        raise ConfigError(
            f"path: no metadata file {meta_path} beside {path} (see trainers.data.write_memmap)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"path: metadata file {meta_path} is not valid JSON: {error}") from None
    if not isinstance(meta, dict) or meta.get("dtype") not in DTYPES:
        raise ConfigError(f'path: metadata file {meta_path}: "dtype" must be "uint16" or "uint32"')
    vocab_size = meta.get("vocab_size")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ConfigError(f'path: metadata file {meta_path}: "vocab_size" must be a positive integer')
    dtype = DTYPES[meta["dtype"]]
    size = os.path.getsize(path)
    if size == 0 or size % dtype.itemsize:
        raise ConfigError(f"path: {path} has {size} bytes, not a whole number of {meta['dtype']} tokens")
    tokens = np.memmap(path, dtype=dtype, mode="r")
    return FileSource(tokens, vocab_size, seq_len, seed, eval_sequences, eval_fraction, path)


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"path: no such file: {path}")
