"""What ``gammaray tune`` searches: parameters, groups, trial counts, read from flags or a grid.

A parameter is a config key and a range, written ``KEY=KIND:...`` on the command line
(``--param``) or ``KEY: KIND:...`` under a grid's ``tune.params``::

    optim.lr=log:1e-4:3e-2            a float sampled on a log scale, LOW > 0
    optim.weight_decay=float:0:1      a float sampled uniformly
    train.batch_size=int:8:64         an integer sampled uniformly (both ends included)
    model.attn_gate=choice:off,head   one of the listed values (each read as a YAML scalar)

A grid's optional ``tune:`` section holds the defaults the flags override::

    tune:
      params: {optim.lr: "log:1e-4:3e-2"}
      per: [model.preset]      # keys whose values make a study each (default: every varying axis)
      trials: 8                # finished trials (complete + pruned) each study should hold
      metric: eval/loss        # minimized; a metric of the run's eval records

Syntax and keys are checked here (the key against the trainer's typed config); whether the
bounds are valid values of the key is checked against each study's config by
``orchestrator.tuning.plan``. Every problem is a :class:`GridError` naming the parameter.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from orchestrator.errors import GridError
from trainers.config import config_keys
from trainers.schema import result_keys

ParamKind = Literal["log", "float", "int", "choice"]
KINDS: tuple[str, ...] = ("log", "float", "int", "choice")
TUNE_KEYS = ("params", "per", "trials", "metric")
DEFAULT_METRIC = "eval/loss"
# Set by the grid's resources: a trial cannot choose them.
RESOURCE_BOUND_KEYS = ("train.processes", "train.device")


@dataclass(frozen=True)
class Param:
    """One searched config key and its range."""

    key: str  # dotted config key, also the parameter's name in the Optuna study
    kind: ParamKind
    low: float | int | None = None  # log, float, int: the range, both ends included
    high: float | int | None = None
    choices: tuple[Any, ...] = ()  # choice: the values, in the order given

    @property
    def numeric(self) -> bool:
        """True for ranges (log, float, int): the values a size rule can be fitted to."""
        return self.kind != "choice"

    def spec(self) -> str:
        """The range as written: ``log:0.0001:0.03``."""
        if self.kind == "choice":
            return "choice:" + ",".join(str(c) for c in self.choices)
        return f"{self.kind}:{self.low:g}:{self.high:g}"

    def probe_values(self) -> tuple[Any, ...]:
        """Values whose validity stands for the whole range: both ends, or every choice."""
        return self.choices if self.kind == "choice" else (self.low, self.high)

    def distribution(self) -> Any:
        """The Optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == "log")


@dataclass(frozen=True)
class TuneSettings:
    """A grid's ``tune:`` section, or the command line's flags; None means "not given"."""

    params: tuple[Param, ...] | None = None
    per: tuple[str, ...] | None = None
    trials: int | None = None
    metric: str | None = None


def parse_param(text: str) -> Param:
    """``"optim.lr=log:1e-4:3e-2"`` (a ``--param`` flag) → a checked :class:`Param`."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise GridError(f"--param {text!r}: expected KEY=KIND:..., e.g. optim.lr=log:1e-4:3e-2")
    return parse_spec(key, spec.strip(), f"--param {key}")


def parse_spec(key: str, spec: Any, where: str) -> Param:
    """The range ``spec`` (``log:1e-4:3e-2``, ...) of config key ``key``; ``where`` starts messages."""
    check_key(key, where)
    if not isinstance(spec, str) or ":" not in spec:
        raise GridError(f"{where}: expected KIND:..., one of {_forms()}, got {spec!r}")
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise GridError(f"{where}: unknown kind {kind!r}{_suggest(kind, KINDS)}; expected one of {_forms()}")
    hint = _key_type(key)
    if kind == "choice":
        param = Param(
            key, "choice", choices=_choices(rest, where, textual=_types(hint) <= {str, Literal, type(None)})
        )
    else:
        parts = rest.split(":")
        if len(parts) != 2:
            raise GridError(f"{where}: {kind} expects {kind}:LOW:HIGH, got {spec!r}")
        low, high = (_number(part, kind, where) for part in parts)
        if not low < high:
            raise GridError(f"{where}: LOW must be below HIGH, got {spec!r}")
        if kind == "log" and low <= 0:
            raise GridError(f"{where}: a log scale needs LOW > 0, got {spec!r}")
        param = Param(key, kind, low=low, high=high)  # type: ignore[arg-type]
    _check_kind_fits(param, hint, where)
    return param


def parse_section(raw: Any, source: str) -> TuneSettings | None:
    """A grid's ``tune:`` section (None when the grid has none). Raises GridError."""
    if raw is None:
        return None
    where = f"{source}: tune"
    if not isinstance(raw, Mapping):
        raise GridError(f"{where}: must be a mapping with keys {', '.join(TUNE_KEYS)}, got {raw!r}")
    for key in raw:
        if key not in TUNE_KEYS:
            raise GridError(
                f"{where}.{key}: unknown key{_suggest(str(key), TUNE_KEYS)} (known keys: {', '.join(TUNE_KEYS)})"
            )
    params = None
    if "params" in raw:
        if not isinstance(raw["params"], Mapping) or not raw["params"]:
            raise GridError(
                f'{where}.params: must be a mapping of config key -> range, e.g. {{optim.lr: "log:1e-4:3e-2"}}'
            )
        params = tuple(
            parse_spec(str(key), spec, f"{where}.params.{key}") for key, spec in raw["params"].items()
        )
    per = parse_per(raw["per"], f"{where}.per") if "per" in raw else None
    trials = None
    if "trials" in raw:
        trials = raw["trials"]
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise GridError(f"{where}.trials: must be an integer >= 1, got {trials!r}")
    metric = None
    if "metric" in raw:
        metric = check_metric(raw["metric"], f"{where}.metric")
    return TuneSettings(params=params, per=per, trials=trials, metric=metric)


def parse_per(value: Any, where: str) -> tuple[str, ...]:
    """``"model.preset,init.gamma"`` or a list of keys → checked config keys (may be empty)."""
    if isinstance(value, str):
        keys = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list) and all(isinstance(k, str) for k in value):
        keys = [k.strip() for k in value]
    else:
        raise GridError(f"{where}: must be a list of config keys (or KEY,KEY,...), got {value!r}")
    for key in keys:
        check_key(key, f"{where}: {key}", searched=False)
    repeated = [key for i, key in enumerate(keys) if key in keys[:i]]
    if repeated:
        raise GridError(f"{where}: {repeated[0]} is given twice")
    return tuple(keys)


def check_metric(value: Any, where: str) -> str:
    """A metric name of the run's eval records, e.g. ``eval/loss`` (lower is better)."""
    if not isinstance(value, str) or "/" not in value or value.startswith(("train/", "/")):
        raise GridError(f"{where}: must name a metric of the eval records such as eval/loss, got {value!r}")
    return value


def check_params(
    params: Iterable[Param], swept: Mapping[str, str], per: Iterable[str], where: Callable[[str], str]
) -> None:
    """Refuse parameters given twice, or already set by a grid axis (``swept``: key → its
    location in the file) or by a per key. ``where(key)`` starts each message."""
    seen: set[str] = set()
    per = set(per)
    for param in params:
        if param.key in seen:
            raise GridError(f"{where(param.key)}: given twice")
        seen.add(param.key)
        if param.key in swept:
            raise GridError(
                f"{where(param.key)}: is swept by {swept[param.key]}; tune it or sweep it, not both"
            )
        if param.key in per:
            raise GridError(
                f"{where(param.key)}: is also a per key; a study cannot both hold it fixed and search it"
            )


def check_key(key: str, where: str, searched: bool = True) -> None:
    """A config key; when ``searched``, also one that changes a run's result and that a trial may set."""
    from trainers.config import RunConfig

    keys = config_keys()
    if key not in keys:
        sections = {k.rsplit(".", 1)[0] for k in keys if "." in k}
        if key in sections:
            raise GridError(f"{where}: {key} is a config section, not a key")
        raise GridError(f"{where}: unknown config key{_suggest(key, keys)}")
    if not searched:
        return
    if key not in result_keys(RunConfig):
        raise GridError(f"{where}: does not change a run's result (every trial would be the same run)")
    if key in RESOURCE_BOUND_KEYS:
        raise GridError(f"{where}: is set by the grid's resources, not per trial")


# ---- pieces --------------------------------------------------------------------------------


def _key_type(key: str) -> Any:
    return config_keys()[key]


def _check_kind_fits(param: Param, hint: Any, where: str) -> None:
    """A float range needs a float key, an integer range an int key; choices are checked as values."""
    options = _types(hint)
    if param.kind in ("log", "float") and float not in options:
        also = " (use int:LOW:HIGH)" if int in options else " (use choice:a,b,...)"
        raise GridError(f"{where}: {param.kind} needs a float key, {param.key} is {_type_name(hint)}{also}")
    if param.kind == "int":
        if int not in options:
            also = " (use float:LOW:HIGH or log:LOW:HIGH)" if float in options else " (use choice:a,b,...)"
            raise GridError(f"{where}: int needs an integer key, {param.key} is {_type_name(hint)}{also}")
        if param.low != int(param.low) or param.high != int(param.high):  # type: ignore[arg-type]
            raise GridError(f"{where}: int needs whole numbers, got {param.spec()}")


def _types(hint: Any) -> set[Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return {t for arg in typing.get_args(hint) for t in _types(arg)}
    if origin is Literal:
        return {Literal}
    return {hint}


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint)).replace("NoneType", "None")


def _number(text: str, kind: str, where: str) -> float | int:
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = None
    if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GridError(f"{where}: {kind} bounds must be numbers, got {text.strip()!r}")
    if kind == "int" and value == int(value):
        return int(value)
    return float(value) if kind != "int" else value


def _choices(text: str, where: str, textual: bool) -> tuple[Any, ...]:
    """Comma-separated values: strings as written for a string key (YAML would read ``off`` as
    false), YAML scalars for any other key."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise GridError(f"{where}: choice:a,b,... has an empty value in {text!r}")
        value: Any = part
        if not textual:
            try:
                value = yaml.safe_load(part)
            except yaml.YAMLError:
                value = part
            if value is not None and not isinstance(value, (str, int, float, bool)):
                value = part
        values.append(value)
    if len(values) < 2:
        raise GridError(f"{where}: choice needs at least two values, got {text!r}")
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise GridError(f"{where}: choice value {repeated[0]!r} is given twice")
    return tuple(values)


def _forms() -> str:
    return "log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH, choice:a,b,..."


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""
