"""Token-level losses of the fixed eval set, split by how much context each target needs (``tokens/``).

The γ-initialization papers find the gains of small init concentrated on tokens that short
context cannot predict but the wider context can. Every target token of the eval set (row
position t + 1, predicted from positions 0..t) falls in one bucket:

- **trivial**: a bigram baseline predicts it. p̂(target | previous token) ≥ ``diag.trivial_threshold``
  (0.5), with p̂(b | a) = c(a, b) / c(a) counted over adjacent pairs of the first
  ``diag.bigram_tokens`` training tokens (rows ``0, 1, ...`` of the training stream), and the
  previous token seen at least ``MIN_PREVIOUS_COUNT`` times there (a rarer one gives no
  trustworthy estimate, so its targets are not called trivial).
- **context**: not trivial, and the context further back than the previous token is what
  constrains it. Generated sources (``synthetic``, ``composite``) know each token's role
  (``trainers.data.vocab``): the roles whose ``ROLE_KIND`` is ``"context"`` (rule continuations,
  copy repeats, composite answers). File sources (``text``, ``memmap``) have no roles: there a
  target is *context* when it is an induction target, i.e. the pair (previous token, target)
  already occurs earlier in the same row, so copying the continuation of an earlier occurrence
  of the previous token predicts it (Olsson et al. 2022, "In-context learning and induction
  heads"). "The target occurs anywhere earlier" would not do: in a window of byte-level text
  nearly every byte does.
- **other**: the rest (uniformly random, memorized, frequency-predicted tokens).

Metrics: ``tokens/loss/<bucket>`` (mean next-token cross-entropy, nats) and
``tokens/count/<bucket>`` (targets in the bucket) for ``trivial``, ``context`` and ``other``; for
generated sources also ``tokens/loss/<role>`` and ``tokens/count/<role>`` for every role present
(lower-case ``trainers.data.vocab.Role`` names: ``copy_repeat``, ``rule_next``, ``fact_value``, ...).
An empty bucket logs its count (0) and no loss. Losses are computed in the weights' own precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.data import ROLE_KIND, Role, TokenSource

if TYPE_CHECKING:
    from trainers.config import ResolvedRun
    from trainers.diagnostics import EvalSchedule

BUCKETS = ("trivial", "context", "other")  # bucket ids 0, 1, 2
TRIVIAL, CONTEXT, OTHER = range(3)
MIN_PREVIOUS_COUNT = 5
_DENSE_MAX = 1 << 22  # pair tables up to this many cells (32 MiB) are dense: a bincount, no sort
_MAX_LOGITS = 1 << 25  # logits per forward (128 MiB in fp32): bounds memory at large vocabularies
CONTEXT_ROLES = np.array([int(role) for role, kind in ROLE_KIND.items() if kind == "context"], dtype=np.int8)


class BigramCounts:
    """Counts of adjacent token pairs; p̂(b | a) = c(a, b) / c(a). A dense (V, V) table for small
    vocabularies, sorted pair codes (any vocabulary size) for large ones."""

    def __init__(self, rows: Iterable[np.ndarray], vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.previous_counts = np.zeros(vocab_size, dtype=np.int64)  # c(a) as a previous token
        codes = []
        for batch in rows:  # (B, L) int token rows
            previous = batch[:, :-1].ravel()
            codes.append(self._code(previous, batch[:, 1:].ravel()))
            self.previous_counts += np.bincount(previous, minlength=vocab_size)
        all_codes = np.concatenate(codes) if codes else np.empty(0, np.uint64)
        self._dense: np.ndarray | None = None
        if vocab_size * vocab_size <= _DENSE_MAX:
            self._dense = np.bincount(all_codes.astype(np.int64), minlength=vocab_size * vocab_size)
        else:
            self._codes, self._counts = np.unique(all_codes, return_counts=True)

    def _code(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        # uint64: (V - 1)·V + V - 1 < 2^64 for any vocabulary a memmap file can hold (< 2^32).
        return previous.astype(np.uint64) * np.uint64(self.vocab_size) + following.astype(np.uint64)

    def pair_counts(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        """c(previous, following), elementwise."""
        code = self._code(previous, following)
        if self._dense is not None:
            return self._dense[code.astype(np.int64)]
        if not len(self._codes):
            return np.zeros(code.shape, dtype=np.int64)
        index = np.minimum(np.searchsorted(self._codes, code), len(self._codes) - 1)
        return np.where(self._codes[index] == code, self._counts[index], 0)

    def probability(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        """p̂(following | previous), elementwise; 0 where ``previous`` was never seen."""
        seen = self.previous_counts[previous]
        return self.pair_counts(previous, following) / np.maximum(seen, 1)


def trivial_targets(rows: np.ndarray, bigram: BigramCounts, threshold: float) -> np.ndarray:
    """(B, T) bool for rows (B, T + 1): p̂(target | previous) >= ``threshold`` with the previous
    token seen at least ``MIN_PREVIOUS_COUNT`` times."""
    previous, target = rows[:, :-1], rows[:, 1:]
    confident = bigram.previous_counts[previous] >= MIN_PREVIOUS_COUNT
    return confident & (bigram.probability(previous, target) >= threshold)


def induction_targets(rows: np.ndarray) -> np.ndarray:
    """(B, T) bool for rows (B, T + 1): the pair (rows[b, t], rows[b, t + 1]) also occurs at an
    earlier position of the same row."""
    b, t = rows.shape[0], rows.shape[1] - 1
    row_id = np.repeat(np.arange(b), t)
    position = np.tile(np.arange(t), b)
    previous, target = rows[:, :-1].ravel(), rows[:, 1:].ravel()
    order = np.lexsort((position, target, previous, row_id))  # by row, pair, then position
    same = (row_id[order][1:] == row_id[order][:-1]) & (previous[order][1:] == previous[order][:-1])
    same &= target[order][1:] == target[order][:-1]
    repeat = np.zeros(b * t, dtype=bool)
    repeat[order[1:]] = same  # every occurrence of a pair in a row after its first
    return repeat.reshape(b, t)


def context_roles(target_roles: np.ndarray) -> np.ndarray:
    """Which targets' roles (any shape, ``Role`` values) need in-context information."""
    return np.isin(target_roles, CONTEXT_ROLES)


def bucket_ids(trivial: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Bucket id (``TRIVIAL``, ``CONTEXT``, ``OTHER``) per target: trivial wins over context."""
    return np.where(trivial, TRIVIAL, np.where(context, CONTEXT, OTHER)).astype(np.int8)


def bucket_metrics(
    losses: np.ndarray, buckets: np.ndarray, roles: np.ndarray | None = None
) -> dict[str, float]:
    """``tokens/loss/<name>`` and ``tokens/count/<name>`` per bucket (and per role, if given) from
    per-target ``losses`` and equally shaped bucket ids (and roles)."""
    groups: list[tuple[str, np.ndarray]] = [(name, buckets == i) for i, name in enumerate(BUCKETS)]
    if roles is not None:
        groups += [(Role(int(r)).name.lower(), roles == r) for r in np.unique(roles)]
    metrics: dict[str, float] = {}
    for name, mask in groups:
        count = int(mask.sum())
        metrics[f"tokens/count/{name}"] = float(count)
        mean = float(losses[mask].mean()) if count else math.nan
        if math.isfinite(mean):
            metrics[f"tokens/loss/{name}"] = mean
    return metrics


@torch.no_grad()
def per_token_losses(model: nn.Module, rows: torch.Tensor, batch_size: int, vocab_size: int) -> np.ndarray:
    """(B, T) next-token cross-entropy (nats) of each target of ``rows`` (B, T + 1), at most
    ``batch_size`` rows per forward (fewer when their fp32 logits would pass ``_MAX_LOGITS``)."""
    device = next(model.parameters()).device
    per_chunk = max(1, min(batch_size, _MAX_LOGITS // (rows.shape[1] * vocab_size)))
    out = []
    for chunk in rows.split(per_chunk):
        chunk = chunk.to(device)
        logits = model(chunk[:, :-1]).float()  # (b, T, V)
        losses = F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="none")
        out.append(losses.view(chunk.shape[0], -1).cpu())
    return torch.cat(out).double().numpy()


class TokenLosses:
    """The ``tokens/`` probe on the run's fixed eval set."""

    def __init__(self, run: ResolvedRun, source: TokenSource, schedule: EvalSchedule) -> None:
        self.mode = run.config.diag.tokens
        self.schedule = schedule
        self.batch_size = run.config.train.batch_size
        self.threshold = run.config.diag.trivial_threshold
        self.bigram_tokens = run.config.diag.bigram_tokens
        self.source = source
        with_roles = getattr(source, "eval_batch_with_roles", None)
        if with_roles is not None:
            rows, roles = with_roles()
            self.roles: np.ndarray | None = roles[:, 1:]  # the targets' roles
        else:
            rows, self.roles = source.eval_batch(), None
        self.rows = rows
        self._buckets: np.ndarray | None = None  # found at the first measurement

    def measure(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        due = final if self.mode == "final" else self.schedule.due(step, final)
        if not due:
            return {}
        losses = per_token_losses(model, torch.from_numpy(self.rows), self.batch_size, self.source.vocab_size)
        return bucket_metrics(losses, self.buckets(), self.roles)

    def buckets(self) -> np.ndarray:
        """(B, T) bucket id of every eval target."""
        if self._buckets is None:
            seq_len, batch = self.source.seq_len, self.batch_size
            steps = max(1, math.ceil(self.bigram_tokens / (batch * seq_len)))
            bigram = BigramCounts(
                (self.source.train_batch(s, batch) for s in range(steps)), self.source.vocab_size
            )
            context = context_roles(self.roles) if self.roles is not None else induction_targets(self.rows)
            self._buckets = bucket_ids(trivial_targets(self.rows, bigram, self.threshold), context)
        return self._buckets
