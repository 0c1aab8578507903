"""A deterministic, endless stream of fixed-length segments, read as rows of tokens.

A generated corpus is a sequence of *segments*; each segment comes from one *family* (facts,
copying, ...) with a fixed length per family. The stream is cut, like packed text, into rows of
``row_len = seq_len + 1`` tokens, so a segment may straddle two rows.

Rows are generated in blocks of ``rows_per_block`` rows; block ``b`` of a split is a pure function
of ``(key, b)`` through ``np.random.default_rng([*key, b])``. So row ``g`` is the same whoever asks
for it, in any order, and any batch size reads the same stream; blocks are generated in bulk
(one vectorized draw per family) and a few are cached, which makes a step's batch cheap.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

# Stream tags: distinct first words keep the seed sequences of the splits and of the fixed world
# tables apart (numpy's SeedSequence hashes the whole list, so streams are independent).
WORLD_TAG = 0x5EED_0001
TRAIN_TAG = 0x5EED_0002
EVAL_TAG = 0x5EED_0003

BLOCK_TOKENS = 1 << 17  # tokens per generated block (~1 MiB as int64)
_CACHED_BLOCKS = 4


class Family(Protocol):
    """A kind of segment: ``length`` tokens, drawn ``n`` at a time."""

    name: str
    length: int
    roles: np.ndarray  # (length,) int8: the ``trainers.data.vocab.Role`` of each position
    entropy: float  # nats per segment after its marker, for a model that knows the fixed tables

    def generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` segments: an (n, length) int64 array of token ids."""
        ...


def seed_word(seed: int) -> int:
    """A non-negative 64-bit word for ``seed`` (SeedSequence refuses negative entropy)."""
    return seed & 0xFFFF_FFFF_FFFF_FFFF


class SegmentStream:
    """Rows of the stream mixing ``families`` with per-segment probabilities ``weights``."""

    def __init__(
        self,
        families: Sequence[Family],
        weights: Sequence[float],
        row_len: int,
        key: tuple[int, ...],
    ) -> None:
        probabilities = np.asarray(weights, dtype=np.float64)
        keep = probabilities > 0
        self.families = [f for f, k in zip(families, keep, strict=True) if k]
        self.probabilities = probabilities[keep] / probabilities[keep].sum()
        self.row_len = row_len
        self.key = key
        self.rows_per_block = max(1, BLOCK_TOKENS // row_len)
        self._lengths = np.array([f.length for f in self.families], dtype=np.int64)
        self._mean_length = float(self.probabilities @ self._lengths)
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()

    def entropy_per_token(self) -> float:
        """The stream's entropy rate in nats per token: the loss of a model that knows every
        fixed table and sees all of the current segment (row starts, which cut segments, cost
        a little more). A floor for any model's eval loss on long rows."""
        p = self.probabilities
        marker = float(-(p * np.log(p)).sum())  # which family comes next
        per_segment = marker + float(p @ np.array([f.entropy for f in self.families]))
        return per_segment / self._mean_length

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``start .. stop-1``: (tokens int64, roles int8), each (stop - start, row_len)."""
        per = self.rows_per_block
        pieces = []
        for block in range(start // per, (stop - 1) // per + 1):
            tokens, roles = self._block(block)
            lo = max(start, block * per) - block * per
            hi = min(stop, (block + 1) * per) - block * per
            pieces.append((tokens[lo:hi], roles[lo:hi]))
        if len(pieces) == 1:
            return pieces[0][0].copy(), pieces[0][1].copy()
        return (
            np.concatenate([p[0] for p in pieces]),
            np.concatenate([p[1] for p in pieces]),
        )

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._cache.get(block)
        if cached is not None:
            self._cache.move_to_end(block)
            return cached
        result = self._generate(np.random.default_rng([*self.key, block]))
        self._cache[block] = result
        if len(self._cache) > _CACHED_BLOCKS:
            self._cache.popitem(last=False)
        return result

    def _generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        need = self.rows_per_block * self.row_len
        spare = int(self._lengths.max())
        tokens = np.empty(need + spare, dtype=np.int64)
        roles = np.empty(need + spare, dtype=np.int8)
        filled = 0
        while filled < need:  # one pass almost always; a second when the draw ran short
            n = math.ceil((need - filled) / self._mean_length * 1.02) + 8
            which = np.searchsorted(self._cdf, rng.random(n), side="right")
            ends = filled + np.cumsum(self._lengths[which])
            # Keep the segments that start before `need` (the last one may run past it).
            n = min(int(np.searchsorted(ends, need, side="left")) + 1, len(which))
            which, ends = which[:n], ends[:n]
            starts = ends - self._lengths[which]
            for f, family in enumerate(self.families):
                index = np.flatnonzero(which == f)
                if index.size == 0:
                    continue
                positions = starts[index, None] + np.arange(family.length)  # (n_f, length)
                tokens[positions] = family.generate(rng, index.size)
                roles[positions] = family.roles
            filled = int(ends[-1])
        shape = (self.rows_per_block, self.row_len)
        return tokens[:need].reshape(shape), roles[:need].reshape(shape)
