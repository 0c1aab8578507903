"""Condensation and complexity of the weights over training, and attention-sink mass (``diag/``).

The γ-initialization papers explain the benefit of small init by *condensation*: early in
training the neurons of a layer align (their weight vectors point the same way) and weight
matrices and the embedding become effectively low-rank, and later they expand again. This
module measures that, per weight matrix, at eval time:

- ``effective_rank``: exp of the Shannon entropy of the normalized singular values
  p_i = σ_i / Σ_j σ_j (Roy & Vetterli, 2007). In [1, min(m, n)]; 1 for a rank-1 matrix.
- ``effective_rank_frac``: ``effective_rank / min(m, n)``, in (0, 1]: comparable across widths.
- ``stable_rank``: ‖W‖_F² / ‖W‖_2² = Σ σ_i² / σ_1² (Rudelson & Vershynin, 2007). In [1, rank W].
- ``condensation``: the fraction of pairs of neurons (rows of W, i.e. the input weights of one
  output unit; token vectors for the embedding) whose |cosine similarity| exceeds
  ``diag.cosine_threshold`` (0.7). 1 when all rows are parallel, ~0 for a random matrix.
- ``abs_cosine``: the mean |cosine similarity| over those pairs, in [0, 1].

and per model:

- ``spectrum_top<k>``: the share of the variance of the input embedding (token vectors as samples,
  centred) held by the top k eigenvalues of its covariance, in [0, 1].
- ``attn_sink``: the mean attention probability on the first position of a fixed eval batch,
  over batch, heads and query positions 1..T-1 (position 0 can only attend to itself), per
  attention layer (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks").
- ``norm_ms`` and ``norm_eps_share``, per RMSNorm on the same batch: the mean over tokens of
  mean(x²) of the norm's input, and of ε / (mean(x²) + ε), the share of the normalizer that ε
  takes: ~0 while ε is negligible, toward 1 where it swamps the activations (the papers' reason
  why ε = 1e-5 hides the benefit of small init).

Metric names are ``diag/<metric>/<scope>``. Scopes, from fine to coarse: a matrix
(``blocks.0.attn.q_proj``, ``embed``, ``lm_head``), a layer component (``blocks.0.attn``,
``blocks.0.mlp``), a kind (``attention``, ``mlp``, ``embedding``) and ``all``. A coarse scope's
value is the mean of its matrices' values. ``diag.detail`` picks the finest scope logged; kinds
and ``all`` always are. The embedding spectrum is ``diag/spectrum_top<k>/embed``; the sink is
``diag/attn_sink/blocks.<i>.attn`` per layer and ``diag/attn_sink/all`` (mean over layers); the
norms are ``diag/norm_ms/<norm>`` and ``diag/norm_eps_share/<norm>`` (``blocks.<i>.attn_norm``,
``blocks.<i>.mlp_norm``, ``final_norm``), with ``all`` the geometric mean of mean(x²) and the
mean of the ε share over norms.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainers.errors import ConfigError
from trainers.model import Attention, RMSNorm, SwiGLU

MATRIX_KINDS = ("attention", "mlp", "embedding")
MATRIX_METRICS = ("effective_rank", "effective_rank_frac", "stable_rank", "condensation", "abs_cosine")
_TINY = 1e-30  # guards 0/0 for an all-zero matrix or row
_CHUNK = 32  # matrices per batched SVD / Gram product: bounds the scratch memory


@dataclass(frozen=True)
class DiagConfig:
    """What a run measures of its model at eval time (``diag/``, ``tokens/`` and ``probe/``
    metrics; see ``docs/diagnostics.md``). Measuring changes nothing the run trains, so run ids
    leave this whole section out."""

    enabled: bool = True  # master switch for everything below
    every_evals: int = 1  # diag/ and probe/ metrics at every k-th eval; always at the first and the final one
    matrices: str = (
        "all"  # weight matrices measured: "all" or a comma-separated subset of attention, mlp, embedding
    )
    detail: Literal["kind", "layer", "matrix"] = (
        "layer"  # the finest scope logged (kinds and "all" always are)
    )
    cosine_threshold: float = 0.7  # |cosine| above which two neurons count as condensed
    max_rows: int = 1024  # neurons per matrix in the pairwise cosines; a fixed subset when there are more
    spectrum_top_k: str = "1,5"  # embedding covariance: variance share of the top k eigenvalues, per k listed
    sink_sequences: int = (
        4  # eval rows the attention-sink mass and the norms' ε share are measured on; 0 turns both off
    )
    tokens: Literal["final", "every", "off"] = (
        "final"  # token-level losses: at the final eval, at every diag eval, never
    )
    bigram_tokens: int = 1 << 20  # training tokens the bigram baseline of the token buckets is counted on
    trivial_threshold: float = 0.5  # a target is trivial when p_bigram(target | previous token) >= this
    probe: Literal["every", "final", "off"] = (
        "every"  # the composite reasoning probe, when the data holds the task
    )

    def validate(self) -> None:
        if self.every_evals < 1:
            raise ConfigError(f"every_evals: must be >= 1, got {self.every_evals}")
        _ = self.kinds  # raises for an unknown kind
        if not 0.0 < self.cosine_threshold < 1.0:
            raise ConfigError(f"cosine_threshold: must be in (0, 1), got {self.cosine_threshold}")
        if self.max_rows < 2:
            raise ConfigError(f"max_rows: must be >= 2, got {self.max_rows}")
        _ = self.top_ks  # raises for a bad list
        if self.sink_sequences < 0:
            raise ConfigError(f"sink_sequences: must be >= 0, got {self.sink_sequences}")
        if self.bigram_tokens < 1:
            raise ConfigError(f"bigram_tokens: must be >= 1, got {self.bigram_tokens}")
        if not 0.0 < self.trivial_threshold <= 1.0:
            raise ConfigError(f"trivial_threshold: must be in (0, 1], got {self.trivial_threshold}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The matrix kinds ``matrices`` selects, in ``MATRIX_KINDS`` order."""
        names = {part.strip() for part in self.matrices.split(",") if part.strip()}
        if names == {"all"}:
            return MATRIX_KINDS
        unknown = sorted(names - set(MATRIX_KINDS))
        if unknown or not names:
            raise ConfigError(
                f"matrices: must be 'all' or a comma-separated subset of {', '.join(MATRIX_KINDS)}, "
                f"got {self.matrices!r}"
            )
        return tuple(k for k in MATRIX_KINDS if k in names)

    @property
    def top_ks(self) -> tuple[int, ...]:
        """The k of ``spectrum_top_k``, sorted and distinct."""
        try:
            ks = sorted({int(part) for part in self.spectrum_top_k.split(",") if part.strip()})
        except ValueError:
            ks = []
        if not ks or ks[0] < 1:
            raise ConfigError(
                f"spectrum_top_k: must list positive integers like '1,5', got {self.spectrum_top_k!r}"
            )
        return tuple(ks)


@dataclass(frozen=True)
class EvalSchedule:
    """Which evals a probe measures at: every ``every_evals``-th eval of the loop, and the final."""

    eval_every: int  # steps between the loop's evals
    every_evals: int

    def due(self, step: int, final: bool) -> bool:
        # From the step, not a call count, so a resumed run measures at the same evals.
        return final or (step // self.eval_every) % self.every_evals == 0


# ---- the metrics, on plain tensors --------------------------------------------------------------


@torch.no_grad()
def spectral_metrics(weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """``effective_rank``, ``effective_rank_frac`` and ``stable_rank`` of each matrix of a
    (k, m, n) stack, each (k,). An all-zero matrix has effective rank 1 and stable rank 0."""
    s = torch.linalg.svdvals(weights.float())  # (k, min(m, n)), descending
    p = s / s.sum(-1, keepdim=True).clamp_min(_TINY)
    effective = torch.exp(-torch.special.xlogy(p, p).sum(-1))  # 0·log 0 = 0
    energy = s.pow(2)
    return {
        "effective_rank": effective,
        "effective_rank_frac": effective / s.shape[-1],
        "stable_rank": energy.sum(-1) / energy[..., 0].clamp_min(_TINY),
    }


@torch.no_grad()
def cosine_metrics(weights: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    """Pairwise |cosine| of the rows of each matrix of a (k, n, d) stack (n >= 2), over the
    n(n-1)/2 distinct pairs: ``condensation`` (the fraction above ``threshold``) and
    ``abs_cosine`` (the mean), each (k,). A zero row has cosine 0 with every other row."""
    n = weights.shape[-2]
    rows = weights.float()
    unit = rows / rows.norm(dim=-1, keepdim=True).clamp_min(_TINY)
    cos = (unit @ unit.transpose(-1, -2)).abs()  # (k, n, n), symmetric
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=cos.device)
    pairs = n * (n - 1)  # ordered pairs: each distinct pair twice, which leaves the means unchanged
    return {
        "condensation": ((cos > threshold) & off_diagonal).sum((-2, -1)) / pairs,
        "abs_cosine": (cos * off_diagonal).sum((-2, -1)) / pairs,
    }


@torch.no_grad()
def variance_share(samples: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Share of the total variance of ``samples`` (n, d) (rows are samples) held by the top k
    eigenvalues of their covariance, for each k (capped at d). 0 for constant samples."""
    centered = samples.float() - samples.float().mean(0, keepdim=True)
    eigenvalues = torch.linalg.svdvals(centered).pow(2)  # ∝ covariance eigenvalues, descending
    total = float(eigenvalues.sum())
    return {k: float(eigenvalues[:k].sum()) / total if total > 0 else 0.0 for k in ks}


@torch.no_grad()
def sink_and_norm_saturation(
    model: nn.Module, tokens: torch.Tensor
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Two measurements from one forward of ``tokens`` (B, T), each keyed by module path:

    - per attention module, the attention-sink mass: the mean probability on position 0 over
      the batch, the heads and query positions 1..T-1;
    - per RMSNorm, the mean over the tokens of mean(x²) of its input, and of ε / (mean(x²) + ε).

    The forward's output is what it would be otherwise, and the model is left as it was.
    """
    attention = [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)]
    norms: dict[str, tuple[float, float]] = {}

    def hook(name: str, eps: float):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            ms = inputs[0].float().pow(2).mean(-1)  # (B, T)
            norms[name] = (float(ms.mean()), float((eps / (ms + eps)).mean()))

        return record

    handles = [
        m.register_forward_pre_hook(hook(name, m.eps))
        for name, m in model.named_modules()
        if isinstance(m, RMSNorm)
    ]
    try:
        for _, module in attention:
            module.record_first_position = True
        model(tokens)
        sink = {name: float(m.first_position_mass[..., 1:].mean()) for name, m in attention}  # type: ignore[index]
    finally:
        for handle in handles:
            handle.remove()
        for _, module in attention:
            module.record_first_position = False
            module.first_position_mass = None
    return sink, norms


# ---- the model's matrices -----------------------------------------------------------------------


@dataclass(frozen=True)
class Matrix:
    """One weight matrix, rows being neurons: ``(out_features, in_features)`` of a linear layer,
    ``(vocab, d_model)`` of the embedding."""

    name: str  # module path: "blocks.0.attn.q_proj", "embed", "lm_head"
    kind: str  # one of MATRIX_KINDS
    layer: str  # "blocks.0.attn", "blocks.0.mlp"; an embedding matrix is its own layer
    weight: torch.Tensor


def weight_matrices(model: nn.Module, kinds: Iterable[str] = MATRIX_KINDS) -> list[Matrix]:
    """The matrices of ``model`` of the given kinds, in module order (a tied head counted once)."""
    kinds = set(kinds)
    found: list[Matrix] = []
    seen: set[int] = set()

    def add(name: str, kind: str, layer: str, weight: torch.Tensor) -> None:
        if kind in kinds and id(weight) not in seen:
            seen.add(id(weight))
            found.append(Matrix(name, kind, layer, weight.detach()))

    for path, module in model.named_modules():
        if isinstance(module, nn.Embedding) or path == "lm_head":
            add(path, "embedding", path, module.weight)
        elif isinstance(module, (Attention, SwiGLU)):
            kind = "attention" if isinstance(module, Attention) else "mlp"
            for child, linear in module.named_children():
                if isinstance(linear, nn.Linear):
                    add(f"{path}.{child}", kind, path, linear.weight)
    return found


@torch.no_grad()
def per_matrix_metrics(matrices: Sequence[Matrix], threshold: float, max_rows: int) -> dict[str, list[float]]:
    """Every metric of ``MATRIX_METRICS`` for each matrix, in the order given.

    Matrices of one shape are stacked and measured in one batched call (fp32, on their device).
    Matrices with more than ``max_rows`` rows have their cosines taken over a fixed subset of
    rows, the same subset at every eval. A matrix with a non-finite entry gets NaN.
    """
    out = {metric: [float("nan")] * len(matrices) for metric in MATRIX_METRICS}
    by_shape: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
    for i, matrix in enumerate(matrices):
        if torch.isfinite(matrix.weight).all():
            by_shape[tuple(matrix.weight.shape)].append(i)
    for shape, indices in by_shape.items():
        rows = _row_subset(shape[0], max_rows, matrices[indices[0]].weight.device)
        for start in range(0, len(indices), _CHUNK):
            chunk = indices[start : start + _CHUNK]
            stack = torch.stack([matrices[i].weight.float() for i in chunk])  # (k, m, n)
            values = spectral_metrics(stack)
            if shape[0] >= 2:
                values |= cosine_metrics(stack if rows is None else stack[:, rows], threshold)
            for metric, tensor in values.items():
                for i, value in zip(chunk, tensor.tolist()):
                    out[metric][i] = value
    return out


def _row_subset(n_rows: int, max_rows: int, device: torch.device) -> torch.Tensor | None:
    if n_rows <= max_rows:
        return None
    generator = torch.Generator().manual_seed(n_rows)  # fixed per shape: the same rows at every eval
    return torch.randperm(n_rows, generator=generator)[:max_rows].sort().values.to(device)


def aggregate(matrices: Sequence[Matrix], values: dict[str, list[float]], detail: str) -> dict[str, float]:
    """``diag/<metric>/<scope>`` means over the matrices of each scope (NaN values left out)."""
    scopes: dict[str, list[int]] = collections.defaultdict(list)
    for i, matrix in enumerate(matrices):
        names = ["all", matrix.kind]
        if detail in ("layer", "matrix"):
            names.append(matrix.layer)
        if detail == "matrix":
            names.append(matrix.name)
        for name in dict.fromkeys(names):  # an embedding matrix is its own layer: count it once
            scopes[name].append(i)
    metrics = {}
    for metric, per_matrix in values.items():
        for scope, members in scopes.items():
            finite = [per_matrix[i] for i in members if per_matrix[i] == per_matrix[i]]
            if finite:
                metrics[f"diag/{metric}/{scope}"] = sum(finite) / len(finite)
    return metrics


# ---- the probe ----------------------------------------------------------------------------------


class WeightDiagnostics:
    """The ``diag/`` probe: matrix metrics, the embedding spectrum, the attention-sink mass and the
    norms' ε share (the last two on the same eval rows)."""

    def __init__(self, config: DiagConfig, schedule: EvalSchedule, sink_tokens: torch.Tensor | None):
        self.config = config
        self.schedule = schedule
        self.sink_tokens = sink_tokens  # (B, T) eval inputs, or None: no sink measurement

    def measure(self, model: nn.Module, step: int, final: bool) -> dict[str, float]:
        if not self.schedule.due(step, final):
            return {}
        config = self.config
        matrices = weight_matrices(model, config.kinds)
        values = per_matrix_metrics(matrices, config.cosine_threshold, config.max_rows)
        metrics = aggregate(matrices, values, config.detail)
        embed = next((m for m in matrices if m.name == "embed"), None)
        if embed is not None and torch.isfinite(embed.weight).all():
            for k, share in variance_share(embed.weight, config.top_ks).items():
                metrics[f"diag/spectrum_top{k}/embed"] = share
        if self.sink_tokens is not None:
            device = next(model.parameters()).device
            sink, norms = sink_and_norm_saturation(model, self.sink_tokens.to(device))
            metrics |= {f"diag/attn_sink/{name}": value for name, value in sink.items()}
            if sink:
                metrics["diag/attn_sink/all"] = sum(sink.values()) / len(sink)
            for name, (ms, share) in norms.items():
                metrics[f"diag/norm_ms/{name}"] = ms
                metrics[f"diag/norm_eps_share/{name}"] = share
            if norms:
                positive = [ms for ms, _ in norms.values() if ms > 0]
                if positive:
                    metrics["diag/norm_ms/all"] = math.exp(
                        sum(math.log(ms) for ms in positive) / len(positive)
                    )
                metrics["diag/norm_eps_share/all"] = sum(share for _, share in norms.values()) / len(norms)
        return {key: value for key, value in metrics.items() if value == value}  # no NaN in the record
