"""Parameter initialization: a named phase with an explicit, seeded generator.

Schemes:
  gamma    every weight matrix W ~ N(0, std²) with std = fan_in^(-γ) (``gamma_std``). γ = 0.5 is
           LeCun-like; larger γ is a smaller init. γ stays constant across model sizes.
  sigma    every weight matrix W ~ N(0, σ²) with a fixed σ (GPT-2's 0.02), whatever its width.
  default  PyTorch's own initializers (Linear: kaiming-uniform(a=√5), Embedding: N(0, 1)).
Norm gains are 1 and biases 0 in every scheme.

Fan-in of a Linear weight (out, in) is ``in``. The embedding table (V, C) is a lookup, not a
matmul, so its fan-in is a choice (``InitConfig.embedding_fan_in``, d_model by default); the LM
head's fan-in is d_model. A tied head is initialized once, as the embedding.

Conventions (``init.convention``), for the gamma scheme:
  gammaray  std = fan_in^(-γ) for every matrix, one γ for all (the defaults of every key below).
  xu        the convention of the γ-initialization authors' published GPT-2-style code (Zhang,
           Xu et al., "Complexity Control Facilitates Reasoning-Based Compositional Generalization
           in Transformers"): std = d_model^(-γ) for every matrix, the MLP's down projection
           included (``fan_in_rule: d_model``); the residual-branch outputs (attention output, MLP
           down projection) divided by √(2·n_layers) (``residual_scale: depth``); and the output
           head at the embedding's rate (``gamma_head`` follows ``gamma_embedding``).
Per-component rates (``gamma_qk``: query and key; ``gamma_vo``: value, attention output and the
attention gate; ``gamma_mlp``: the three MLP matrices; ``gamma_embedding``; ``gamma_head``: an
untied LM head) default to ``gamma``. ``InitConfig.explicit`` spells a convention out in these
keys, so both spellings of one init share a run id.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from trainers.errors import ConfigError
from trainers.schema import added_later


class InitScheme(str, enum.Enum):
    GAMMA = "gamma"
    SIGMA = "sigma"
    DEFAULT = "default"


COMPONENTS = ("qk", "vo", "mlp", "embedding", "head")


@dataclass(frozen=True)
class InitConfig:
    scheme: Literal["gamma", "sigma", "default"] = "gamma"
    gamma: float = 1.0  # the papers' recommendation: small init by default
    sigma: float = 0.02  # std of the ``sigma`` scheme
    embedding_fan_in: Literal["d_model", "vocab_size", "one"] = "d_model"
    # The keys below joined after run ids were first issued; at their defaults they leave ids alone.
    convention: Literal["gammaray", "xu"] = added_later("gammaray")
    fan_in_rule: Literal["fan_in", "d_model"] = added_later("fan_in")  # the n of std = n^(-γ)
    # depth: the residual-branch outputs (o_proj, down_proj) divided by √(2·n_layers)
    residual_scale: Literal["none", "depth"] = added_later("none")
    gamma_qk: float | None = added_later(None)
    gamma_vo: float | None = added_later(None)
    gamma_mlp: float | None = added_later(None)
    gamma_embedding: float | None = added_later(None)
    gamma_head: float | None = added_later(None)

    def validate(self) -> None:
        if self.gamma <= 0:
            raise ConfigError(f"gamma: must be > 0, got {self.gamma}")
        if self.sigma <= 0:
            raise ConfigError(f"sigma: must be > 0, got {self.sigma}")
        for component in COMPONENTS:
            value = getattr(self, f"gamma_{component}")
            if value is None:
                continue
            if value <= 0:
                raise ConfigError(f"gamma_{component}: must be > 0, got {value}")
            if self.scheme != InitScheme.GAMMA:
                raise ConfigError(
                    f"gamma_{component}: per-component rates need scheme 'gamma', got {self.scheme!r}"
                )
        if self.scheme != InitScheme.GAMMA:
            for key, default in (("convention", "gammaray"), ("fan_in_rule", "fan_in")):
                if getattr(self, key) != default:
                    raise ConfigError(f"{key}: applies to scheme 'gamma' only, got scheme {self.scheme!r}")
        if self.scheme == InitScheme.DEFAULT and self.residual_scale != "none":
            raise ConfigError(
                "residual_scale: PyTorch's default init has no residual scaling; use scheme gamma or sigma"
            )
        uses_d_model = self.fan_in_rule == "d_model" or self.convention == "xu"
        if uses_d_model and self.embedding_fan_in != "d_model":
            raise ConfigError(
                "embedding_fan_in: the d_model rule draws the embedding at d_model^(-γ) too; leave it unset"
            )
        if self.convention == "xu":
            for key, default in (("fan_in_rule", "fan_in"), ("residual_scale", "none")):
                if getattr(self, key) != default:
                    raise ConfigError(
                        f"{key}: set by convention 'xu'; leave it unset, or use convention 'gammaray'"
                    )

    def explicit(self) -> InitConfig:
        """The same init with the convention spelled out in the other keys (convention gammaray)."""
        if self.convention == "gammaray":
            return self
        return replace(
            self,
            convention="gammaray",
            fan_in_rule="d_model",
            residual_scale="depth",
            gamma_head=self.gamma_head if self.gamma_head is not None else self.gamma_embedding,
        )

    def gamma_of(self, component: str) -> float:
        """The rate of one component (one of ``COMPONENTS``) under convention gammaray."""
        rate = getattr(self, f"gamma_{component}")
        return self.gamma if rate is None else rate


def gamma_std(fan_in: int, gamma: float) -> float:
    """std = fan_in^(-γ): the γ-initialization rule."""
    return fan_in ** (-gamma)


@dataclass(frozen=True)
class ParamInit:
    """How one parameter tensor is initialized; ``target_std`` is the std it is drawn with."""

    name: str
    shape: tuple[int, ...]
    fan_in: int | None  # the n of n^(-γ) as used; None for norm gains and biases
    scheme: str  # gamma | sigma | default | ones | zeros
    target_std: float
    component: str | None = None  # one of COMPONENTS for a matrix
    gamma: float | None = None  # the rate used (gamma scheme)
    residual_factor: float = 1.0  # 1/√(2·n_layers) on residual-branch outputs under residual_scale depth
    fan_in_rule: str | None = None  # fan_in | d_model (gamma scheme)


# Residual-branch output projections: what they write is added to the residual stream.
_RESIDUAL_OUTPUTS = (".attn.o_proj.weight", ".mlp.down_proj.weight")


def component_of(name: str, is_embedding: bool) -> str:
    """Which per-component rate a matrix takes, from its parameter name."""
    if is_embedding:
        return "embedding"
    if name.startswith("lm_head."):
        return "head"
    if ".attn.q_proj." in name or ".attn.k_proj." in name:
        return "qk"
    if ".attn." in name:  # v_proj, o_proj and the attention gate's projection
        return "vo"
    if ".mlp." in name:
        return "mlp"
    raise ValueError(f"{name}: no init component for this matrix")  # a new module needs a rule here


def plan_init(model: nn.Module, config: InitConfig) -> list[ParamInit]:
    """One ``ParamInit`` per distinct parameter tensor of ``model``, in ``named_parameters`` order."""
    config = config.explicit()
    embedding_names = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Embedding)}
    d_model = model.arch.d_model
    residual = 1 / math.sqrt(2 * model.arch.n_layers) if config.residual_scale == "depth" else 1.0
    plans = []
    for name, param in model.named_parameters():  # tied tensors are listed once
        shape = tuple(param.shape)
        if param.ndim == 1:
            kind = "ones" if name.endswith("weight") else "zeros"  # norm gain or bias
            plans.append(ParamInit(name, shape, None, kind, 0.0))
            continue
        is_embedding = name in embedding_names
        component = component_of(name, is_embedding)
        factor = residual if name.endswith(_RESIDUAL_OUTPUTS) else 1.0
        fan_in = _embedding_fan_in(shape, config.embedding_fan_in) if is_embedding else shape[1]
        if config.scheme == InitScheme.GAMMA:
            fan_in = d_model if config.fan_in_rule == "d_model" else fan_in
            gamma = config.gamma_of(component)
            plans.append(
                ParamInit(
                    name,
                    shape,
                    fan_in,
                    config.scheme,
                    gamma_std(fan_in, gamma) * factor,
                    component,
                    gamma,
                    factor,
                    config.fan_in_rule,
                )
            )
        elif config.scheme == InitScheme.SIGMA:
            plans.append(
                ParamInit(
                    name,
                    shape,
                    fan_in,
                    config.scheme,
                    config.sigma * factor,
                    component,
                    residual_factor=factor,
                )
            )
        else:  # PyTorch's defaults: N(0, 1) for embeddings, U(±1/√fan_in) for Linear
            std = 1.0 if is_embedding else 1.0 / math.sqrt(3 * shape[1])
            plans.append(ParamInit(name, shape, shape[1], config.scheme, std, component))
    return plans


@torch.no_grad()
def init_weights(model: nn.Module, config: InitConfig, generator: torch.Generator) -> list[ParamInit]:
    """Initialize every parameter of ``model`` in place; same generator state, same weights."""
    params = dict(model.named_parameters())
    plans = plan_init(model, config)
    for plan in plans:
        param = params[plan.name]
        if plan.scheme == "ones":
            param.fill_(1.0)
        elif plan.scheme == "zeros":
            param.zero_()
        elif plan.scheme == InitScheme.DEFAULT and plan.target_std != 1.0:
            bound = math.sqrt(3) * plan.target_std
            param.uniform_(-bound, bound, generator=generator)
        else:
            param.normal_(0.0, plan.target_std, generator=generator)
    return plans


def init_table(model: nn.Module, plans: list[ParamInit]) -> list[dict]:
    """Rows of ``gammaray inspect``'s init table: the plan beside the std actually measured."""
    params = dict(model.named_parameters())
    rows = []
    for plan in plans:
        values = params[plan.name].detach().float()
        rows.append(
            {
                "name": plan.name,
                "shape": list(plan.shape),
                "fan_in": plan.fan_in,
                "fan_in_rule": plan.fan_in_rule,
                "component": plan.component,
                "gamma": plan.gamma,
                "residual_factor": plan.residual_factor,
                "scheme": plan.scheme,
                "target_std": plan.target_std,
                "measured_std": values.std().item() if values.numel() > 1 else 0.0,
            }
        )
    return rows


def _embedding_fan_in(shape: tuple[int, ...], rule: str) -> int:
    vocab_size, d_model = shape
    return {"d_model": d_model, "vocab_size": vocab_size, "one": 1}[rule]
