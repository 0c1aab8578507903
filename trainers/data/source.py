"""The token-source contract the trainer reads, and the source of the generated corpora."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from trainers.data.stream import EVAL_TAG, TRAIN_TAG, Family, SegmentStream, seed_word


@runtime_checkable
class TokenSource(Protocol):
    """Fixed-length token rows for training and a fixed held-out eval set.

    Rows hold ``seq_len + 1`` tokens: inputs are ``batch[:, :-1]``, targets ``batch[:, 1:]``.
    """

    vocab_size: int
    seq_len: int

    def train_batch(self, step: int, batch_size: int) -> np.ndarray:
        """(batch_size, seq_len + 1) int64 rows ``step * batch_size ..`` of the training stream.

        A pure function of (seed, step, batch_size): the same whoever asks, how often and in
        whatever order. Data-parallel rank r of w takes rows ``r::w`` of the global batch.
        """
        ...

    def eval_batch(self) -> np.ndarray:
        """(eval_sequences, seq_len + 1) int64: the fixed held-out set, disjoint from training."""
        ...


class GeneratedSource:
    """A generated corpus: training rows from the run seed, eval rows from a fixed stream.

    The eval stream does not depend on the run seed, so every run of a grid is scored on the
    same held-out sequences (less noise between runs); the two streams are independent draws.
    ``*_with_roles`` give, beside each token, its ``trainers.data.vocab.Role`` (int8).
    """

    def __init__(
        self,
        families: Sequence[Family],
        weights: Sequence[float],
        vocab_size: int,
        seq_len: int,
        seed: int,
        eval_sequences: int,
    ) -> None:
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.eval_sequences = eval_sequences
        self._train = SegmentStream(families, weights, seq_len + 1, (TRAIN_TAG, seed_word(seed)))
        self._eval = SegmentStream(families, weights, seq_len + 1, (EVAL_TAG, 0))
        self._eval_rows: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def entropy_per_token(self) -> float:
        """The corpus's entropy rate (nats per token): a known floor for the eval loss."""
        return self._train.entropy_per_token()

    def train_batch(self, step: int, batch_size: int) -> np.ndarray:
        return self.train_batch_with_roles(step, batch_size)[0]

    def train_batch_with_roles(self, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, roles), each (batch_size, seq_len + 1)."""
        if step < 0 or batch_size < 1:
            raise ValueError(f"need step >= 0 and batch_size >= 1, got {step}, {batch_size}")
        return self._train.rows(step * batch_size, (step + 1) * batch_size)

    def eval_batch(self) -> np.ndarray:
        return self.eval_batch_with_roles()[0]

    def eval_batch_with_roles(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, roles), each (eval_sequences, seq_len + 1)."""
        if self._eval_rows is None:
            self._eval_rows = self._eval.rows(0, self.eval_sequences)
        return self._eval_rows[0].copy(), self._eval_rows[1].copy()
