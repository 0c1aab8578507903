"""The run config: model, init, optimizer, data and training sections, loaded once and checked.

A run config comes from an optional YAML file and ``--set key=value`` overrides (dotted keys,
values parsed as YAML scalars), is checked here, and is trusted everywhere after. ``resolve``
turns it into a ``ResolvedRun``: the concrete architecture, parameter counts, steps and FLOPs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from trainers.data import DataConfig, source_entropy, source_vocab_size
from trainers.data.composite import segment_length as composite_segment_length
from trainers.diagnostics import DiagConfig
from trainers.errors import ConfigError
from trainers.init import InitConfig
from trainers.model import Architecture, ModelConfig, count_params, flops_per_token, resolve_architecture
from trainers.optim import OptimConfig, decay_start, warmup_steps
from trainers.schema import (
    added_later,
    build,
    defaults_left_out_of_ids,
    flat_dict,
    leaf_types,
    not_result,
    result_keys,
    set_dotted,
    to_dict,
)

# Bump when a change to the trainer changes what a given config trains: run ids change with it,
# so results of the old code are never mistaken for the new code's.
CONFIG_VERSION = 1

DEFAULT_TOKENS = 1_000_000


@dataclass(frozen=True)
class TrainConfig:
    tokens: int | None = None  # training tokens D; default 1M unless tokens_per_param is given
    tokens_per_param: float | None = None  # D as a multiple of n_params_non_embedding (20 ≈ Chinchilla)
    batch_size: int = 32  # global batch, in sequences
    seq_len: int = 128  # tokens per sequence
    backend: Literal["torch", "deepspeed"] = "torch"
    zero_stage: int = 2  # DeepSpeed ZeRO stage: 0, 1, 2 or 3
    processes: int = 1  # DeepSpeed data-parallel processes (one per GPU, or per CPU slot)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on a GPU, fp32 on a CPU
    # Which next-token targets the loss counts: every token, or only the answers of the
    # composite task (as the mechanism papers train it: keys, anchors and noise are random, so
    # their loss is noise in the gradient). Eval loss counts the same targets.
    loss_on: Literal["all", "answers"] = added_later("all")
    eval_every: int = not_result(0)  # steps between evals; 0: ten evals per run
    log_every: int = not_result(10)  # steps between train-loss records
    checkpoint_every: int = not_result(0)  # steps between checkpoints; 0: five per run (and the last step)
    keep_checkpoints: int = not_result(2)
    threads: int = not_result(0)  # torch intra-op threads; 0 leaves torch's default
    # torch.compile the training forward and backward: faster steps after a one-off compile
    # (tens of seconds on a CPU, where it needs a C++ compiler); worth it for long runs.
    compile: bool = not_result(False)
    # On SIGTERM or SIGINT the run stops at its next step with a checkpoint; if that takes longer
    # than this (a very long step), the process exits anyway (trainers.preemption).
    preempt_grace_s: float = not_result(30.0)

    def validate(self) -> None:
        if self.tokens is not None and self.tokens_per_param is not None:
            raise ConfigError("tokens: give tokens or tokens_per_param, not both")
        if self.tokens is not None and self.tokens < 1:
            raise ConfigError(f"tokens: must be a positive integer, got {self.tokens}")
        if self.tokens_per_param is not None and self.tokens_per_param <= 0:
            raise ConfigError(f"tokens_per_param: must be > 0, got {self.tokens_per_param}")
        for name in ("batch_size", "seq_len", "processes", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.preempt_grace_s <= 0:
            raise ConfigError(f"preempt_grace_s: must be > 0, got {self.preempt_grace_s}")
        for name in ("eval_every", "checkpoint_every", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"zero_stage: must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.backend == "torch" and self.processes != 1:
            raise ConfigError("processes: the torch backend runs one process; use backend=deepspeed for more")
        if self.batch_size % self.processes:
            raise ConfigError(
                f"batch_size: must be divisible by processes={self.processes}, got {self.batch_size}"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # What is measured at eval time; changes nothing the run trains, so run ids leave it out.
    diag: DiagConfig = field(default_factory=DiagConfig, metadata={"result": False})
    seed: int = 0  # seeds the init, the data and everything else random

    def validate(self) -> None:
        if self.train.loss_on == "answers":
            if self.data.source != "composite":
                raise ConfigError(
                    f"train.loss_on: 'answers' needs data.source 'composite' (the task with answers), "
                    f"got {self.data.source!r}"
                )
            segment = composite_segment_length(self.data.composite.noise_tokens)
            if self.train.seq_len < segment:
                raise ConfigError(
                    f"train.seq_len: must be >= {segment} (one composite segment) with train.loss_on "
                    f"'answers', so that every row has an answer; got {self.train.seq_len}"
                )


@dataclass(frozen=True)
class ResolvedRun:
    """A run config with everything derived from it made concrete."""

    config: RunConfig  # with train.tokens filled in
    arch: Architecture
    n_params: int
    n_params_non_embedding: int
    flops_per_token: int  # every matmul and attention (for MFU)
    flops_per_token_6n: int  # 6 × non-embedding params (Kaplan)
    steps: int
    tokens: int  # tokens actually trained: steps × batch_size × seq_len
    train_flops: int  # tokens × flops_per_token_6n: the C of C = 6ND
    entropy_per_token: float | None = None  # the data's entropy rate (nats/token), where the source knows it

    @property
    def run_id(self) -> str:
        return run_id(self.config)

    @property
    def eval_every(self) -> int:
        """Steps between evals: ``train.eval_every``, or ten evals per run."""
        return self.config.train.eval_every or max(1, self.steps // 10)

    @property
    def checkpoint_every(self) -> int:
        """Steps between checkpoints: ``train.checkpoint_every``, or five per run."""
        return self.config.train.checkpoint_every or max(1, self.steps // 5)

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "n_params": self.n_params,
            "n_params_non_embedding": self.n_params_non_embedding,
            "tokens": self.tokens,
            "steps": self.steps,
            "flops_per_token": self.flops_per_token,
            "flops_per_token_6n": self.flops_per_token_6n,
            "train_flops": self.train_flops,
            "entropy_per_token": self.entropy_per_token,
        }


def config_keys() -> dict[str, Any]:
    """Every leaf key of a run config (``model.preset``, ``seed``, ...) and its type hint."""
    return leaf_types(RunConfig)


def load_run_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a YAML run config (optional) and apply ``key=value`` overrides; raise ConfigError."""
    nested: dict[str, Any] = {}
    if path is not None:
        nested = read_yaml_mapping(path)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(nested, key, value)
    return config_from_mapping(nested)


def config_from_mapping(nested: Mapping[str, Any]) -> RunConfig:
    return build(RunConfig, nested)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: must hold a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def parse_override(text: str) -> tuple[str, Any]:
    """``"init.gamma=0.5"`` → ``("init.gamma", 0.5)``; the value is read as a YAML scalar."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def resolve(config: RunConfig) -> ResolvedRun:
    """Make a config concrete. The vocabulary comes from the data source."""

    vocab_size = source_vocab_size(config.data, seq_len=config.train.seq_len, seed=config.seed)
    arch = resolve_architecture(config.model, vocab_size=vocab_size, seq_len=config.train.seq_len)
    counts = count_params(arch)
    flops = flops_per_token(arch)
    train = config.train
    if train.tokens_per_param is not None:
        tokens_requested = round(train.tokens_per_param * counts["n_params_non_embedding"])
    else:
        tokens_requested = train.tokens or DEFAULT_TOKENS
    batch_tokens = train.batch_size * train.seq_len
    steps = max(1, tokens_requested // batch_tokens)
    optim = config.optim
    if optim.warmup_tokens is not None and optim.schedule == "wsd":
        warmup = warmup_steps(steps, optim, batch_tokens)
        if warmup > decay_start(steps, optim):
            raise ConfigError(
                f"optim.warmup_tokens: {optim.warmup_tokens:,} tokens ({warmup} steps) run past the start of "
                f"the decay at step {decay_start(steps, optim)} of {steps}: train longer or warm up less"
            )
    config = replace(
        config,
        init=config.init.explicit(),  # a named init convention and its spelled-out keys share an id
        train=replace(train, tokens=tokens_requested, tokens_per_param=None),
    )
    return ResolvedRun(
        config=config,
        arch=arch,
        n_params=counts["n_params"],
        n_params_non_embedding=counts["n_params_non_embedding"],
        flops_per_token=flops["flops_per_token"],
        flops_per_token_6n=flops["flops_per_token_6n"],
        steps=steps,
        tokens=steps * batch_tokens,
        train_flops=steps * batch_tokens * flops["flops_per_token_6n"],
        # The composite answers are a function of their context: their loss can fall to 0.
        entropy_per_token=0.0 if train.loss_on == "answers" else source_entropy(config.data),
    )


def resolve_dotted(values: Mapping[str, Any]) -> ResolvedRun:
    """Resolve a config given as dotted keys (``{"model.preset": "tiny", "seed": 1}``), the form
    grid points and tuning trials are written in. Raises ConfigError naming the key."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        set_dotted(nested, key, value)
    return resolve(config_from_mapping(nested))


def run_id(config: RunConfig) -> str:
    """A 12-hex-digit hash of the fields that change the run's result (and the config version).

    Give it a resolved config (``resolve(config).config``) so that ``tokens`` and
    ``tokens_per_param`` spellings of the same D share an id.
    """
    keys = result_keys(RunConfig)
    left_out = defaults_left_out_of_ids(RunConfig)
    flat = {
        k: v for k, v in flat_dict(config).items() if k in keys and not (k in left_out and v == left_out[k])
    }
    payload = json.dumps({"version": CONFIG_VERSION, "config": flat}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
