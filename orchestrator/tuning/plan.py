"""A tuning plan: a grid's points as studies, what each study searches, and each trial's run.

The grid is loaded and expanded as ``gammaray submit`` does it. Its points are grouped by the
values of the ``per`` keys (default: every axis that varies), one Optuna study per group, so the
best learning rate can move with size and γ. Every point of a group must agree on every other
knob: a group is one run config, and each trial is that config with the searched keys set.
A trial is a normal run: its run id is the hash of its resolved config, its folder
``<workspace>/tune/<grid>/<run-id>``, so identical values give the same, reusable run.

Everything is checked here, before a study is created or a run is launched: the search space
(syntax, keys, and that both ends of every range are valid values in every study's config), the
groups, and the storage URL's form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import GridError
from orchestrator.grids.expand import RunSpec, derived_numbers, expand, point_values
from orchestrator.grids.parse import Grid, Point, load_grid, with_values
from orchestrator.tuning.space import (
    DEFAULT_METRIC,
    Param,
    TuneSettings,
    check_metric,
    check_params,
    parse_param,
    parse_per,
)
from trainers.config import resolve_dotted
from trainers.errors import ConfigError
from trainers.run_folder import workspace_dir
from trainers.schema import flat_dict

DEFAULT_TRIALS = 10
ALL_POINTS = "all"  # the group key of a study when no --per key is given


@dataclass(frozen=True)
class Group:
    """One study: a grid point whose config every trial shares, but for the searched keys."""

    key: str  # "model.preset=tiny,init.gamma=0.5", or "all" when there are no per keys
    values: tuple[tuple[str, Any], ...]  # the per keys and their values here
    spec: RunSpec  # the grid point as written
    raw: tuple[tuple[str, Any], ...]  # its unresolved config values (dotted), as spec.expand built them

    @property
    def n_params_non_embedding(self) -> int:
        return self.spec.n_params_non_embedding


@dataclass(frozen=True)
class TunePlan:
    """A checked grid, its studies and search space; nothing is written until it runs."""

    grid: Grid
    params: tuple[Param, ...]
    per: tuple[str, ...]
    trials: int  # finished trials (complete + pruned) each study should hold
    metric: str  # minimized: the final eval record's value
    groups: tuple[Group, ...]
    storage: str  # Optuna storage URL
    folder: Path  # <workspace>/tune/<grid>: trial run folders, best.yaml

    def study_name(self, group: Group) -> str:
        """``<grid>/<group key>``: the study's name in the storage."""
        return f"{self.grid.name}/{group.key}"

    def distributions(self) -> dict[str, Any]:
        """The search space as Optuna distributions, by config key."""
        return {param.key: param.distribution() for param in self.params}

    def trial_spec(self, group: Group, values: Mapping[str, Any]) -> RunSpec:
        """The run of a trial: ``group``'s config with ``values`` (config key → value) set.

        Raises ConfigError if the values make an invalid config.
        """
        raw = with_values(group.raw, values.items())
        resolved = resolve_dotted(raw)
        shown = " ".join(f"{key.rsplit('.', 1)[-1]}={short_value(value)}" for key, value in values.items())
        return replace(
            group.spec,
            run_id=resolved.run_id,
            config=resolved.config,
            point=group.spec.point + tuple(values.items()),
            label=f"{group.key} {shown}".strip(),
            out_dir=str(self.folder / resolved.run_id),
            **derived_numbers(resolved),
        )


def make_plan(
    grid_file: str | Path,
    overrides: Iterable[str] = (),
    params: Sequence[str] = (),
    per: str | None = None,
    trials: int | None = None,
    storage: str | None = None,
) -> TunePlan:
    """Load and check everything ``gammaray tune`` needs; flags override the grid's ``tune:``.

    ``params`` are ``--param`` texts (when given, they replace ``tune.params`` as a whole),
    ``per`` the ``--per`` text (``"model.preset,init.gamma"``; ``""`` for no per key).
    Raises GridError naming the flag, or the file and key, at fault. Writes nothing.
    """

    grid = load_grid(grid_file, overrides)
    settings = grid.tune or TuneSettings()
    source = grid.source
    if params:
        searched = tuple(parse_param(text) for text in params)
        where: Callable[[str], str] = _flag_location
    elif settings.params:
        searched = settings.params
        where = functools.partial(_section_location, source)
    else:
        raise GridError(
            f"{source}: nothing to tune: give --param KEY=log:LOW:HIGH (e.g. --param optim.lr=log:1e-4:3e-2) "
            "or a tune.params section in the grid"
        )
    swept = {axis.key: axis.location for axis in _all_axes(grid)}
    if per is not None:
        per_keys = parse_per(per, "--per")
    elif settings.per is not None:
        per_keys = settings.per
    else:
        per_keys = tuple(axis.key for axis in _all_axes(grid) if len(set(map(repr, axis.values))) > 1)
    check_params(searched, swept, per_keys, where)
    metric = check_metric(settings.metric, f"{source}: tune.metric") if settings.metric else DEFAULT_METRIC
    workspace = workspace_dir()
    specs = expand(grid, workspace)
    groups = _groups(grid, specs, per_keys, per is not None)
    for group in groups:
        _check_ranges(group, searched, where)
    return TunePlan(
        grid=grid,
        params=searched,
        per=per_keys,
        trials=trials if trials is not None else settings.trials or DEFAULT_TRIALS,
        metric=metric,
        groups=tuple(groups),
        storage=_storage_url(storage, workspace),
        folder=workspace / "tune" / grid.name,
    )


def short_value(value: Any) -> str:
    """A value for names and lines: 0.5 → ``0.5``, 1.0 → ``1.0``, 0.0031234567 → ``0.003123``."""
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 8 else f"{value:.4g}"
    return str(value)


def _flag_location(key: str) -> str:
    return f"--param {key}"


def _section_location(source: str, key: str) -> str:
    return f"{source}: tune.params.{key}"


# ---- groups --------------------------------------------------------------------------------


def _all_axes(grid: Grid) -> list:
    return [*grid.axes, *(axis for group in grid.zips for axis in group)]


def _groups(grid: Grid, specs: Sequence[RunSpec], per: Sequence[str], per_given: bool) -> list[Group]:
    """One group per distinct combination of the per keys' values, in grid order."""
    points = grid.points()
    members: dict[tuple, list[tuple[Point, RunSpec]]] = {}
    for point, spec in zip(points, specs):
        raw = _raw_values(grid, point, spec)
        values = tuple((key, _value_of(key, raw, spec)) for key in per)
        members.setdefault(tuple((k, repr(v)) for k, v in values), []).append((point, spec))
    groups = []
    for (point, spec), *others in members.values():
        if others:
            _refuse_mixed_group(grid, point, [p for p, _ in others], per, per_given)
        raw = _raw_values(grid, point, spec)
        values = tuple((key, _value_of(key, raw, spec)) for key in per)
        key = ",".join(f"{k}={short_value(v)}" for k, v in values) or ALL_POINTS
        groups.append(Group(key=key, values=values, spec=spec, raw=tuple(raw.items())))
    return groups


def _refuse_mixed_group(
    grid: Grid, first: Point, others: list[Point], per: Sequence[str], per_given: bool
) -> None:
    """A group holds one config: name the first swept key that still varies inside it, and
    suggest per keys that cover every such key of the grid."""
    mine = dict(first.values)
    for other in others:
        for key, value in other.values:
            if key not in per and repr(mine.get(key)) != repr(value):
                varying = [
                    a.key for a in _all_axes(grid) if a.key not in per and len(set(map(repr, a.values))) > 1
                ]
                flag = "--per" if per_given else "--per (or tune.per)"
                raise GridError(
                    f"{grid.source}: {(first.where(key) or key).rsplit('[', 1)[0]}: {key} varies within one study "
                    f"({short_value(mine.get(key))} and {short_value(value)}) but is not a per key; "
                    f"tune each value separately with {flag} {','.join([*per, *varying])}"
                )
    # Unreachable: two points in one study differ in some key, and the loop above names it.
    raise GridError(f"{grid.source}: points {first.index} and {others[0].index} fall into the same study")


def _raw_values(grid: Grid, point: Point, spec: RunSpec) -> dict[str, Any]:
    """The point's config values as ``expand`` builds them: base, then the point's values, then
    the process and thread counts its resources decided."""
    values = point_values(grid, point)
    values["train.processes"] = spec.config.train.processes
    values["train.threads"] = spec.config.train.threads
    return values


def _value_of(key: str, raw: Mapping[str, Any], spec: RunSpec) -> Any:
    """A per key's value at a point: as written in the grid, else the resolved config's."""
    if key in raw:
        return raw[key]

    return flat_dict(spec.config).get(key)


# ---- the search space in every study ------------------------------------------------------


def _check_ranges(group: Group, params: Sequence[Param], where: Callable[[str], str]) -> None:
    """Both ends of every range (every choice) must make a valid config in this study."""
    for param in params:
        for value in param.probe_values():
            try:
                resolve_dotted(with_values(group.raw, [(param.key, value)]))
            except ConfigError as error:
                message = str(error)
                if message.startswith(f"{param.key}: "):
                    message = message[len(param.key) + 2 :]
                at = f" in study {group.key}" if group.key != ALL_POINTS else ""
                raise GridError(
                    f"{where(param.key)}: {short_value(value)} is not a valid value{at}: {message}"
                ) from None


def _storage_url(storage: str | None, workspace: Path) -> str:
    """``--storage`` as given, or ``sqlite:///<workspace>/optuna.db`` beside MLflow's store."""
    if storage is None:
        return f"sqlite:///{workspace / 'optuna.db'}"
    if "://" not in storage:
        raise GridError(f"--storage {storage!r}: expected a database URL such as sqlite:///path/optuna.db")
    return storage
