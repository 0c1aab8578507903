"""Grid files: read one, check its shape, and enumerate its points.

A grid file is YAML::

    name: smoke                      # experiment name, run folder name, Ray task prefix
    description: optional free text
    base:                            # a run config: the keys of `gammaray train --set`
      init.scheme: gamma             # dotted keys and nested sections both work
      train: {batch_size: 16}
    axes:                            # key -> values; the grid is their cartesian product ...
      model.preset: [tiny, 100k]
      train.tokens: [100000, 300000] # D in tokens, or train.tokens_per_param (20 ≈ Chinchilla)
    zip:                             # ... times each group of keys that move together
      - {init.gamma: [0.5, 1.0], optim.weight_decay: [0.1, 1.0]}
    resources: {cpus: 1, gpus: 0, processes: 1}   # per run; cpus and gpus are per process
    max_parallel: 2                  # runs at once (default: as many as the cluster holds)
    retries: 2                       # re-attempts of a run whose worker died (default 2)
    branch: {over: train.tokens}     # WSD runs that differ only in D branch off one trunk
    tune:                            # optional: what `gammaray tune` searches (`submit` ignores it)
      params: {optim.lr: "log:1e-4:3e-2"}

This module checks what can be checked without building run configs (keys, types, empty or
repeated axis values, zip lengths); ``orchestrator.grids.expand`` builds and resolves every point.
Every problem is a :class:`GridError` naming the file, the key and the index.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import GridError
from orchestrator.tuning.space import TuneSettings, parse_section
from trainers.config import config_keys, parse_override, read_yaml_mapping
from trainers.errors import ConfigError

GRID_KEYS = (
    "name",
    "description",
    "base",
    "axes",
    "zip",
    "resources",
    "max_parallel",
    "retries",
    "branch",
    "tune",
)
RESOURCE_KEYS = ("cpus", "gpus", "processes")
DEFAULT_RETRIES = 2
# Grid names become MLflow experiment names, folder names and Ray task names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# The two spellings of D: an axis (or override) that sets one drops the other from the base.
TOKEN_KEYS = ("train.tokens", "train.tokens_per_param")


@dataclass(frozen=True)
class Resources:
    """What one run asks of the cluster. ``cpus`` and ``gpus`` are per process; a run with
    ``processes`` > 1 (DeepSpeed) is placed as a gang of that many bundles."""

    cpus: int = 1  # CPU cores per process; also the torch threads of each process
    gpus: int = 0  # GPUs per process
    processes: int | None = None  # None: each point's train.processes (default 1)


@dataclass(frozen=True)
class Axis:
    """One swept key: ``location`` is where it sits in the file (``axes.init.gamma``, ``zip[0].init.gamma``)."""

    key: str
    values: tuple[Any, ...]
    location: str


@dataclass(frozen=True)
class Point:
    """One grid point before its config is built: the swept values and where each came from."""

    index: int  # 0-based, in expansion order
    values: tuple[tuple[str, Any], ...]  # (dotted key, value) in file order
    locations: tuple[tuple[str, str], ...]  # (dotted key, "axes.init.gamma[1]")

    def where(self, key: str) -> str | None:
        return dict(self.locations).get(key)

    def label(self) -> str:
        """``preset=tiny tokens=100000 gamma=0.5``: the swept values by their last key segment."""
        return " ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.values) or "base"


@dataclass(frozen=True)
class Grid:
    """A checked grid file. ``base`` maps dotted config keys to values."""

    name: str
    source: str  # the file as named on the command line, for messages
    base: Mapping[str, Any] = field(default_factory=dict)
    axes: tuple[Axis, ...] = ()  # crossed with each other ...
    zips: tuple[tuple[Axis, ...], ...] = ()  # ... and with each group of equally long axes
    resources: Resources = Resources()
    max_parallel: int | None = None
    retries: int = DEFAULT_RETRIES
    description: str = ""
    overridden: tuple[str, ...] = ()  # base keys set by --set rather than by the file
    branch_over: str | None = None  # the D spelling whose points branch off one trunk (branch.over)
    tune: TuneSettings | None = None  # the optional tune: section (orchestrator.tuning.space)

    def points(self) -> list[Point]:
        """Every point of the grid: the cartesian product of the axes and the zip groups."""
        choices: list[list[list[tuple[str, Any, str]]]] = []
        for axis in self.axes:
            choices.append(
                [[(axis.key, value, f"{axis.location}[{i}]")] for i, value in enumerate(axis.values)]
            )
        for group in self.zips:
            length = len(group[0].values)
            choices.append(
                [[(a.key, a.values[i], f"{a.location}[{i}]") for a in group] for i in range(length)]
            )
        points = []
        for index, combination in enumerate(itertools.product(*choices)):
            items = [item for part in combination for item in part]
            points.append(
                Point(
                    index=index,
                    values=tuple((key, value) for key, value, _ in items),
                    locations=tuple((key, where) for key, _, where in items),
                )
            )
        return points


def with_values(values: Mapping[str, Any], updates: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``values`` (dotted config keys) with ``updates`` applied. D has two spellings
    (``TOKEN_KEYS``): updates that set either drop both from ``values``, so a swept or searched
    D replaces the base's whichever way each is written (updates that set both are left to the
    config's check). The one rule for base → point → trial values."""
    updates = list(updates)
    out = dict(values)
    if any(key in TOKEN_KEYS for key, _ in updates):
        for key in TOKEN_KEYS:
            out.pop(key, None)
    out.update(updates)
    return out


def load_grid(path: str | Path, overrides: Iterable[str] = ()) -> Grid:
    """Read and check the grid file at ``path`` with ``--set key=value`` overrides applied.

    Overrides of ``name``, ``max_parallel``, ``retries`` and ``resources.*`` change the grid;
    any other key changes the base run config. Raises :class:`GridError`.
    """
    source = str(path)
    try:
        raw = read_yaml_mapping(path)
    except ConfigError as error:
        raise GridError(str(error)) from None
    unknown = [key for key in raw if key not in GRID_KEYS]
    if unknown:
        raise GridError(
            f"{source}: {unknown[0]}: unknown key{_suggest(str(unknown[0]), GRID_KEYS)} "
            f"(known keys: {', '.join(GRID_KEYS)})"
        )
    grid_overrides, base_overrides = _split_overrides(overrides)

    name = grid_overrides.get("name", raw.get("name"))
    where_name = "--set name" if "name" in grid_overrides else f"{source}: name"
    if name is None:
        raise GridError(f"{source}: name: required (the grid's experiment name)")
    if not isinstance(name, str) or not _NAME.match(name):
        raise GridError(
            f"{where_name}: must be 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
            f"got {name!r}"
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise GridError(f"{source}: description: must be a string, got {description!r}")

    base = _section(raw.get("base"), f"{source}: base")
    for key, value in base.items():
        _check_key(key, f"{source}: base.{key}")
        _check_scalar(value, f"{source}: base.{key}")
    axes = _axes(raw.get("axes", _MISSING), source)
    zips = _zips(raw.get("zip", _MISSING), source)
    swept: dict[str, str] = {}
    for axis in [*axes, *(a for group in zips for a in group)]:
        if axis.key in swept:
            raise GridError(f"{source}: {axis.location}: {axis.key} is already swept by {swept[axis.key]}")
        swept[axis.key] = axis.location
    for key, value in base_overrides:
        _check_key(key, f"--set {key}")
        if key in swept:
            raise GridError(f"--set {key}: is swept by {swept[key]} in {source}; change the axis in the file")
        base = with_values(base, [(key, value)])

    resources_raw = _section(raw.get("resources"), f"{source}: resources")
    for key, value in grid_overrides.items():
        if key.startswith("resources."):
            resources_raw[key.split(".", 1)[1]] = value
    resources = _resources(resources_raw, source, grid_overrides)
    max_parallel = _count(
        grid_overrides.get("max_parallel", raw.get("max_parallel")),
        "max_parallel",
        source,
        grid_overrides,
        minimum=1,
    )
    retries = _count(
        grid_overrides.get("retries", raw.get("retries", DEFAULT_RETRIES)),
        "retries",
        source,
        grid_overrides,
        minimum=0,
    )
    tune = parse_section(raw.get("tune"), source)
    branch_over = _branch(raw.get("branch", _MISSING), source, swept)
    return Grid(
        name=name,
        source=source,
        base=base,
        axes=axes,
        zips=zips,
        resources=resources,
        max_parallel=max_parallel,
        retries=DEFAULT_RETRIES if retries is None else retries,
        description=description,
        overridden=tuple(key for key, _ in base_overrides),
        branch_over=branch_over,
        tune=tune,
    )


# ---- pieces --------------------------------------------------------------------------------

_MISSING = object()


def _split_overrides(overrides: Iterable[str]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    grid: dict[str, Any] = {}
    base: list[tuple[str, Any]] = []
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as error:
            raise GridError(str(error)) from None
        head = key.split(".", 1)[0]
        if key in ("name", "max_parallel", "retries") or (head == "resources" and "." in key):
            if head == "resources" and key.split(".", 1)[1] not in RESOURCE_KEYS:
                raise GridError(f"--set {key}: unknown resource (known: {', '.join(RESOURCE_KEYS)})")
            grid[key] = value
        elif head in ("name", "description", "base", "axes", "zip", "resources", "max_parallel", "retries"):
            raise GridError(f"--set {key}: cannot be overridden (edit the grid file)")
        else:
            base.append((key, value))
    return grid, base


def _section(value: Any, where: str) -> dict[str, Any]:
    """A mapping that may mix nested sections and dotted keys, flattened to dotted keys."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GridError(f"{where}: must be a mapping of keys, got {value!r}")
    flat: dict[str, Any] = {}
    for key, child in value.items():
        if not isinstance(key, str) or not key:
            raise GridError(f"{where}: keys must be non-empty strings, got {key!r}")
        if isinstance(child, Mapping):
            items = {f"{key}.{k}": v for k, v in _section(child, f"{where}.{key}").items()}
        else:
            items = {key: child}
        for dotted, item in items.items():
            if dotted in flat:
                raise GridError(f"{where}.{dotted}: given twice")
            flat[dotted] = item
    return flat


def _axes(value: Any, source: str) -> tuple[Axis, ...]:
    if value is _MISSING:
        return ()
    where = f"{source}: axes"
    if value is None or (isinstance(value, Mapping) and not value):
        raise GridError(f"{where}: is empty; name at least one key with a list of values, or leave axes out")
    return tuple(_axis(key, values, f"axes.{key}", source) for key, values in _section(value, where).items())


def _zips(value: Any, source: str) -> tuple[tuple[Axis, ...], ...]:
    if value is _MISSING:
        return ()
    if not isinstance(value, list) or not value:
        raise GridError(
            f"{source}: zip: must be a non-empty list of groups ({{key: [values], key: [values]}}), got {value!r}"
        )
    groups = []
    for g, group in enumerate(value):
        where = f"{source}: zip[{g}]"
        if not isinstance(group, Mapping) or not group:
            raise GridError(f"{where}: must be a non-empty mapping of key -> list of values, got {group!r}")
        axes = tuple(
            _axis(key, values, f"zip[{g}].{key}", source, unique=False)
            for key, values in _section(group, where).items()
        )
        first = axes[0]
        for axis in axes[1:]:
            if len(axis.values) != len(first.values):
                raise GridError(
                    f"{source}: {axis.location}: has {len(axis.values)} values but {first.location} has "
                    f"{len(first.values)}; keys of a zip group move together and need equally many values"
                )
        # A key may repeat a value inside a group (the other keys differ); a whole row may not.
        rows = list(zip(*(axis.values for axis in axes)))
        for i, row in enumerate(rows):
            for j in range(i):
                if all(_same(a, b) for a, b in zip(rows[j], row)):
                    raise GridError(f"{where}: values [{i}] repeat values [{j}] of every key")
        groups.append(axes)
    return tuple(groups)


def _axis(key: str, values: Any, location: str, source: str, unique: bool = True) -> Axis:
    _check_key(key, f"{source}: {location}")
    if not isinstance(values, list):
        raise GridError(f"{source}: {location}: must be a list of values, got {values!r}")
    if not values:
        raise GridError(f"{source}: {location}: empty list; give at least one value")
    for i, value in enumerate(values):
        _check_scalar(value, f"{source}: {location}[{i}]")
        for j in range(i if unique else 0):
            if _same(values[j], value):
                raise GridError(f"{source}: {location}[{i}]: {value!r} repeats {location}[{j}]")
    return Axis(key=key, values=tuple(values), location=location)


def _branch(value: Any, source: str, swept: Mapping[str, str]) -> str | None:
    """``branch: {over: KEY}``: KEY is a spelling of D that an axis sweeps."""
    if value is _MISSING or value is None:
        return None
    section = _section(value, f"{source}: branch")
    unknown = [key for key in section if key != "over"]
    if unknown:
        raise GridError(f"{source}: branch.{unknown[0]}: unknown key (known keys: over)")
    over = section.get("over")
    if over not in TOKEN_KEYS:
        raise GridError(
            f"{source}: branch.over: must be a spelling of D ({' or '.join(TOKEN_KEYS)}), got {over!r}"
        )
    if over not in swept:
        raise GridError(f"{source}: branch.over: {over} is not swept; branching needs several values of it")
    if swept[over].startswith("zip"):
        raise GridError(
            f"{source}: branch.over: {over} is swept by {swept[over]}; branching needs it on its own in axes"
        )
    return over


def _resources(raw: dict[str, Any], source: str, overrides: Mapping[str, Any]) -> Resources:
    for key in raw:
        if key not in RESOURCE_KEYS:
            raise GridError(
                f"{source}: resources.{key}: unknown key{_suggest(key, RESOURCE_KEYS)} "
                f"(known keys: {', '.join(RESOURCE_KEYS)})"
            )
    values = {}
    for key, minimum in (("cpus", 1), ("gpus", 0), ("processes", 1)):
        if key in raw:
            values[key] = _count(raw[key], f"resources.{key}", source, overrides, minimum=minimum)
    return Resources(**values)


def _count(value: Any, key: str, source: str, overrides: Mapping[str, Any], minimum: int) -> int | None:
    """A whole number >= ``minimum`` (YAML ``2`` or ``2.0``; not ``true``), or None if absent."""
    if value is None:
        return None
    where = f"--set {key}" if key in overrides else f"{source}: {key}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise GridError(f"{where}: must be an integer >= {minimum}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise GridError(f"{where}: must be an integer >= {minimum}, got {value!r}") from None
    if number != int(number) or number < minimum:
        raise GridError(f"{where}: must be an integer >= {minimum}, got {value!r}")
    return int(number)


def _check_key(key: str, where: str) -> None:
    keys = config_keys()
    if key in keys:
        return
    sections = {k.rsplit(".", 1)[0] for k in keys if "." in k}
    if key in sections:
        raise GridError(
            f"{where}: is a config section, not a key (name a key such as {key}.{_first_leaf(key, keys)})"
        )
    raise GridError(f"{where}: unknown config key{_suggest(key, keys)}")


def _check_scalar(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    kind = "a list" if isinstance(value, list) else type(value).__name__
    raise GridError(
        f"{where}: must be a single value (str, number, bool or null), got {kind}; sweep values under axes"
    )


def _same(a: Any, b: Any) -> bool:
    # YAML `1` and `1.0` are the same value for a float key; `true` and `1` are not.
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    )


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


def _first_leaf(section: str, keys: Mapping[str, Any]) -> str:
    return next(k[len(section) + 1 :] for k in keys if k.startswith(section + "."))
