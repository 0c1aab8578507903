"""A Llama-style decoder: RMSNorm, RoPE, SwiGLU MLP, causal SDPA attention, optional gated attention.

Shapes in comments: B batch, T sequence length, C d_model, H heads, D head dim, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainers.errors import ConfigError
from trainers.presets import PRESETS

AttnGate = Literal["off", "head", "element"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one model. ``preset`` names a rung of the size ladder (``trainers.presets``);
    explicit ``n_layers``/``d_model``/``n_heads``/``d_ff`` override the preset's values."""

    preset: str = "tiny"
    n_layers: int | None = None
    d_model: int | None = None
    n_heads: int | None = None
    d_ff: int | None = None  # SwiGLU hidden width
    norm_eps: float = 1e-12  # RMSNorm ε; the γ-init papers find 1e-5 hides the benefit of small init
    attn_gate: AttnGate = "off"  # sigmoid output gate on attention: per head or per element
    tie_embeddings: bool = False
    rope_theta: float = 10000.0

    def validate(self) -> None:

        if self.preset not in PRESETS:
            raise ConfigError(f"preset: unknown preset {self.preset!r} (choose from {', '.join(PRESETS)})")
        for name in ("n_layers", "d_model", "n_heads", "d_ff"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: must be >= 1, got {value}")
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"norm_eps: must be in (0, 1), got {self.norm_eps}")
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta: must be > 0, got {self.rope_theta}")


@dataclass(frozen=True)
class Architecture:
    """A fully resolved architecture: what the model is built from."""

    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    vocab_size: int
    seq_len: int
    norm_eps: float
    attn_gate: AttnGate
    tie_embeddings: bool
    rope_theta: float

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def resolve_architecture(config: ModelConfig, vocab_size: int, seq_len: int) -> Architecture:
    """Fill the preset's shape into ``config``; the vocabulary comes from the data source."""

    preset = PRESETS[config.preset]
    arch = Architecture(
        n_layers=config.n_layers or preset.n_layers,
        d_model=config.d_model or preset.d_model,
        n_heads=config.n_heads or preset.n_heads,
        d_ff=config.d_ff or preset.d_ff,
        vocab_size=vocab_size,
        seq_len=seq_len,
        norm_eps=config.norm_eps,
        attn_gate=config.attn_gate,
        tie_embeddings=config.tie_embeddings,
        rope_theta=config.rope_theta,
    )
    if arch.d_model % arch.n_heads:
        raise ConfigError(f"model.n_heads: must divide d_model={arch.d_model}, got {arch.n_heads}")
    if arch.head_dim % 2:
        raise ConfigError(f"model.n_heads: head dim d_model/n_heads={arch.head_dim} must be even for RoPE")
    return arch


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + ε) · g, with the gain g initialized to 1."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in fp32: with ε = 1e-12 and a small init, bf16 would lose the tiny activations.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (T, D/2), for rotary position embeddings (Su et al., 2021)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :D/2], x[..., D/2:]) of x (B, H, T, D) by position-dependent angles."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def first_position_mass(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The causal softmax attention probability that each query puts on key position 0.

    From queries and keys (B, H, T, D) after RoPE, with SDPA's default scale 1/sqrt(D), the
    same probabilities ``F.scaled_dot_product_attention(..., is_causal=True)`` uses. Returns
    (B, H, T) in fp32; row t = 0 is 1 (the first query sees only itself). Builds the (T, T)
    score matrix per head, so it is for no-grad diagnostic forwards, not for training.
    """
    t = q.shape[-2]
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.exp(scores[..., 0] - torch.logsumexp(scores, dim=-1))


class Attention(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        c, self.n_heads, self.head_dim = arch.d_model, arch.n_heads, arch.head_dim
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)
        # Gated attention: o = (attn · σ(x W_g)) W_o; the gate lets a head output ~0 without
        # parking its attention on the first token (the "attention sink").
        self.attn_gate = arch.attn_gate
        gate_width = {"off": 0, "head": arch.n_heads, "element": c}[arch.attn_gate]
        self.gate_proj = nn.Linear(c, gate_width, bias=False) if gate_width else None
        # Diagnostics only (``trainers.diagnostics``): while ``record_first_position`` is True, a
        # forward also stores the probability each query puts on key position 0 in
        # ``first_position_mass`` (B, H, T). The output is computed exactly as otherwise.
        self.record_first_position = False
        self.first_position_mass: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:  # (B, T, C) -> (B, H, T, D)
            return proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = (
            apply_rope(heads(self.q_proj), cos, sin),
            apply_rope(heads(self.k_proj), cos, sin),
            heads(self.v_proj),
        )
        if self.record_first_position:
            self.first_position_mass = first_position_mass(q.detach(), k.detach())
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # (B, T, H, D)
        if self.gate_proj is not None:
            gate = torch.sigmoid(self.gate_proj(x))  # (B, T, H) or (B, T, C)
            y = y * gate.view(b, t, self.n_heads, -1)
        return self.o_proj(y.reshape(b, t, c))


class SwiGLU(nn.Module):
    """W_down (silu(x W_gate) ⊙ x W_up) (Shazeer, 2020)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.gate_proj = nn.Linear(arch.d_model, arch.d_ff, bias=False)
        self.up_proj = nn.Linear(arch.d_model, arch.d_ff, bias=False)
        self.down_proj = nn.Linear(arch.d_ff, arch.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.attn_norm = RMSNorm(arch.d_model, arch.norm_eps)
        self.attn = Attention(arch)
        self.mlp_norm = RMSNorm(arch.d_model, arch.norm_eps)
        self.mlp = SwiGLU(arch)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Token ids (B, T) → next-token logits (B, T, V). Weights are left for ``trainers.init``."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.embed = nn.Embedding(arch.vocab_size, arch.d_model)
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.n_layers))
        self.final_norm = RMSNorm(arch.d_model, arch.norm_eps)
        self.lm_head = nn.Linear(arch.d_model, arch.vocab_size, bias=False)
        if arch.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(arch.head_dim, arch.seq_len, arch.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._compiled_forward = None  # set by ``compile_training``

    def compile_training(self) -> None:
        """Run training forwards (``self.training`` and gradients on) through ``torch.compile``.

        Evaluation and the diagnostics' forwards stay eager: they run rarely, with other shapes
        and flags, and would each cost a compile. The module, its parameters and its state dict
        are unchanged, so checkpoints and engines that wrap the model see the same model.
        """
        self._compiled_forward = torch.compile(self._forward)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for ``tokens`` (B, T); with ``targets`` (B, T), the mean next-token
        cross-entropy in nats instead (so a wrapping engine sees one forward that returns a loss)."""
        if self._compiled_forward is not None and self.training and torch.is_grad_enabled():
            return self._compiled_forward(tokens, targets)
        return self._forward(tokens, targets)

    def _forward(self, tokens: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        t = tokens.shape[1]
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.embed(tokens)  # (B, T, C)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(self.final_norm(x))  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of a (B, T+1) batch of token ids."""
        return self(batch[:, :-1], batch[:, 1:])


# ---- sizes and compute -------------------------------------------------------------------------


def count_params(arch: Architecture) -> dict[str, int]:
    """Exact parameter counts, from the architecture alone.

    ``n_params_non_embedding`` leaves out the input embedding and the LM head (Kaplan et al. 2020,
    who exclude embedding and unembedding matrices); ``n_params`` counts every distinct tensor
    once, so a tied head adds nothing.
    """
    c, f, v, layers = arch.d_model, arch.d_ff, arch.vocab_size, arch.n_layers
    gate = {"off": 0, "head": arch.n_heads, "element": c}[arch.attn_gate] * c
    per_layer = 4 * c * c + gate + 3 * c * f + 2 * c  # attention, gate, SwiGLU, two norm gains
    non_embedding = layers * per_layer + c  # + final norm gain
    embedding = v * c
    head = 0 if arch.tie_embeddings else v * c
    return {
        "n_params": non_embedding + embedding + head,
        "n_params_non_embedding": non_embedding,
        "n_params_embedding": embedding + head,
    }


def flops_per_token(arch: Architecture) -> dict[str, int]:
    """Training FLOPs per token (forward + backward = 3 × forward; a multiply-add is 2 FLOPs).

    ``flops_per_token_6n``: Kaplan et al. 2020's C ≈ 6N with N the non-embedding parameters.
    ``flops_per_token``: every matmul, the LM head included (the embedding lookup is free), plus
    attention scores and values, 12·L·T·C (PaLM, Chowdhery et al. 2022, appendix B; counted over
    the full T×T matrix as is customary for MFU, not halved for causality).
    """
    counts = count_params(arch)
    matmul_params = counts["n_params_non_embedding"] + arch.d_model * arch.vocab_size
    attention = 12 * arch.n_layers * arch.seq_len * arch.d_model
    return {
        "flops_per_token_6n": 6 * counts["n_params_non_embedding"],
        "flops_per_token": 6 * matmul_params + attention,
    }


def describe(arch: Architecture) -> str:
    counts = count_params(arch)
    return (
        f"{arch.n_layers} layers × d_model {arch.d_model} × {arch.n_heads} heads, d_ff {arch.d_ff}, "
        f"vocab {arch.vocab_size}: {_human(counts['n_params_non_embedding'])} non-embedding, "
        f"{_human(counts['n_params'])} total parameters"
    )


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"
