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
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainers.errors import ConfigError


class InitScheme(str, enum.Enum):
    GAMMA = "gamma"
    SIGMA = "sigma"
    DEFAULT = "default"


@dataclass(frozen=True)
class InitConfig:
    scheme: Literal["gamma", "sigma", "default"] = "gamma"
    gamma: float = 1.0  # the papers' recommendation: small init by default
    sigma: float = 0.02  # std of the ``sigma`` scheme
    embedding_fan_in: Literal["d_model", "vocab_size", "one"] = "d_model"

    def validate(self) -> None:
        if self.gamma <= 0:
            raise ConfigError(f"gamma: must be > 0, got {self.gamma}")
        if self.sigma <= 0:
            raise ConfigError(f"sigma: must be > 0, got {self.sigma}")


def gamma_std(fan_in: int, gamma: float) -> float:
    """std = fan_in^(-γ): the γ-initialization rule."""
    return fan_in ** (-gamma)


@dataclass(frozen=True)
class ParamInit:
    """How one parameter tensor is initialized; ``target_std`` is the std it is drawn with."""

    name: str
    shape: tuple[int, ...]
    fan_in: int | None  # None for norm gains and biases
    scheme: str  # gamma | sigma | default | ones | zeros
    target_std: float


def plan_init(model: nn.Module, config: InitConfig) -> list[ParamInit]:
    """One ``ParamInit`` per distinct parameter tensor of ``model``, in ``named_parameters`` order."""
    embedding_names = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Embedding)}
    plans = []
    for name, param in model.named_parameters():  # tied tensors are listed once
        shape = tuple(param.shape)
        if param.ndim == 1:
            kind = "ones" if name.endswith("weight") else "zeros"  # norm gain or bias
            plans.append(ParamInit(name, shape, None, kind, 0.0))
            continue
        is_embedding = name in embedding_names
        fan_in = _embedding_fan_in(shape, config.embedding_fan_in) if is_embedding else shape[1]
        if config.scheme == InitScheme.GAMMA:
            std = gamma_std(fan_in, config.gamma)
        elif config.scheme == InitScheme.SIGMA:
            std = config.sigma
        else:  # PyTorch's defaults: N(0, 1) for embeddings, U(±1/√fan_in) for Linear
            fan_in = shape[1]
            std = 1.0 if is_embedding else 1.0 / math.sqrt(3 * fan_in)
        plans.append(ParamInit(name, shape, fan_in, config.scheme, std))
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
                "scheme": plan.scheme,
                "target_std": plan.target_std,
                "measured_std": values.std().item() if values.numel() > 1 else 0.0,
            }
        )
    return rows


def _embedding_fan_in(shape: tuple[int, ...], rule: str) -> int:
    vocab_size, d_model = shape
    return {"d_model": d_model, "vocab_size": vocab_size, "one": 1}[rule]
