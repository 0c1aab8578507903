"""Grid points as ``RunSpec``s: built, resolved, checked and content-addressed before anything runs.

Every point of a grid becomes a run config (the base with the point's values on top), is
resolved (architecture, parameter counts, steps, FLOPs) and gets its run id, a hash of the
resolved config's result-changing fields. A bad value is reported against the axis index or
base key it came from; two points with the same run id are a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import GridError
from orchestrator.grids.branch import BranchStart, plan_branches
from orchestrator.grids.parse import Grid, Point, Resources, with_values
from trainers.config import RunConfig, resolve_dotted
from trainers.errors import ConfigError
from trainers.schema import flat_dict


@dataclass(frozen=True)
class RunSpec:
    """One grid point, ready to train. Crosses the Ray boundary, so it is frozen and plain."""

    grid: str
    run_id: str  # 12 hex digits: hash of the resolved config's result-changing fields
    config: RunConfig  # resolved (train.tokens concrete) with train.threads set from the resources
    point: tuple[tuple[str, Any], ...]  # the swept (dotted key, value) pairs that define this point
    label: str  # the swept values in one line, e.g. "preset=tiny tokens=100000 gamma=0.5"
    resources: Resources  # processes concrete
    out_dir: str  # absolute: <workspace>/grids/<grid>/<run_id>
    n_params: int
    n_params_non_embedding: int
    tokens: int  # training tokens D actually planned (steps × batch × seq_len)
    steps: int
    train_flops: int  # 6·N_non_embedding·D
    flops_per_token: int  # every matmul + attention, forward and backward (for time estimates)
    entropy_per_token: float | None = None  # the data's entropy rate, where its source knows it
    # WSD branching (orchestrator.grids.branch): a trunk's extra checkpoints, kept to the end,
    # at its branches' decay starts; a branch's start in its trunk's checkpoint.
    checkpoint_at: tuple[int, ...] = ()
    branch: BranchStart | None = None

    @property
    def task_name(self) -> str:
        """The name of the run's Ray task: ``<grid>/<run-id>``."""
        return f"{self.grid}/{self.run_id}"

    @property
    def tokens_to_train(self) -> int:
        """The tokens this run trains itself: all of D, or for a branch only what follows its start."""
        if self.branch is None:
            return self.tokens
        return self.tokens - self.branch.step * self.config.train.batch_size * self.config.train.seq_len

    @property
    def processes(self) -> int:
        return self.resources.processes or 1

    def params(self) -> dict[str, str]:
        """MLflow params: the resolved config with dotted keys plus ``N``, ``N_non_embedding``,
        ``D`` (tokens), ``FLOPs`` (train FLOPs, 6ND) and, where the data source knows it,
        ``entropy_per_token`` (the known floor of the loss, for ``fit --e known``)."""
        params = {key: str(value) for key, value in flat_dict(self.config).items()}
        params.update(
            N=str(self.n_params),
            N_non_embedding=str(self.n_params_non_embedding),
            D=str(self.tokens),
            FLOPs=str(self.train_flops),
        )
        if self.entropy_per_token is not None:
            params["entropy_per_token"] = repr(self.entropy_per_token)
        return params


def grid_folder(workspace: Path, grid: str) -> Path:
    """Where a grid's run folders live: ``<workspace>/grids/<grid>/``."""
    return Path(workspace) / "grids" / grid


def expand(grid: Grid, workspace: Path) -> list[RunSpec]:
    """Every point of ``grid`` as a checked ``RunSpec``, in expansion order. Raises GridError."""
    folder = grid_folder(workspace, grid.name).resolve()
    specs: list[RunSpec] = []
    seen: dict[str, Point] = {}
    for point in grid.points():
        values = point_values(grid, point)
        resources = _resources(grid, point, values)
        try:
            resolved = resolve_dotted(values)
        except ConfigError as error:
            raise GridError(_locate(str(error), grid, point)) from None
        run_id = resolved.run_id
        if run_id in seen:
            other = seen[run_id]
            raise GridError(
                f"{grid.source}: points {other.index} ({other.label()}) and {point.index} ({point.label()}) "
                f"are the same run {run_id}: remove the repeated value"
            )
        seen[run_id] = point
        specs.append(
            RunSpec(
                grid=grid.name,
                run_id=run_id,
                config=resolved.config,
                point=point.values,
                label=point.label(),
                resources=resources,
                out_dir=str(folder / run_id),
                **derived_numbers(resolved),
            )
        )
    return plan_branches(grid, specs)


def derived_numbers(resolved: Any) -> dict[str, Any]:
    """The numbers a ``RunSpec`` carries from its resolved run (``trainers.config.ResolvedRun``)."""
    names = (
        "n_params",
        "n_params_non_embedding",
        "tokens",
        "steps",
        "train_flops",
        "flops_per_token",
        "entropy_per_token",
    )
    return {name: getattr(resolved, name) for name in names}


def point_values(grid: Grid, point: Point) -> dict[str, Any]:
    """The config values of a point before its resources are applied: the base, then the point's."""
    return with_values(grid.base, point.values)


def _resources(grid: Grid, point: Point, values: dict[str, Any]) -> Resources:
    """The point's resources, with train.processes and train.threads made to agree with them."""
    wanted = grid.resources
    backend = values.get("train.backend", "torch")
    if wanted.processes is not None:
        given = values.get("train.processes")
        if given is not None and given != wanted.processes:
            where = point.where("train.processes") or _base_key(grid, "train.processes")
            raise GridError(
                f"{grid.source}: resources.processes: {wanted.processes}, but {where} sets train.processes={given}; "
                "give the process count in one place"
            )
        if wanted.processes > 1 and backend != "deepspeed":
            raise GridError(
                f"{grid.source}: resources.processes: {wanted.processes} processes need train.backend: deepspeed, "
                f"got {backend} ({point.label()})"
            )
        values["train.processes"] = wanted.processes
    processes = values.get("train.processes", 1)
    device = values.get("train.device", "auto")
    if wanted.gpus and device == "cpu":
        raise GridError(
            f"{grid.source}: resources.gpus: {wanted.gpus} GPU(s) per process requested, but train.device is cpu "
            f"({point.label()})"
        )
    if not wanted.gpus and device == "cuda":
        axis = point.where("train.device")
        where = f"{grid.source}: {axis}" if axis else _base_location(grid, "train.device")
        raise GridError(f"{where}: cuda needs resources.gpus >= 1 (the run would get no GPU)")
    # One torch thread per allotted core, so runs sharing a node do not oversubscribe it.
    values.setdefault("train.threads", wanted.cpus)
    try:
        count = int(processes)
    except (TypeError, ValueError):
        count = 1  # not a number: building the config reports it against its key
    return Resources(cpus=wanted.cpus, gpus=wanted.gpus, processes=max(1, count))


def _locate(message: str, grid: Grid, point: Point) -> str:
    """Put a config error (``"init.gamma: must be > 0, got -1"``) where it came from in the file."""
    key, sep, rest = message.partition(": ")
    if sep:
        where = point.where(key)
        if where is not None:
            return f"{grid.source}: {where}: {rest}"
        if key in grid.base:
            return f"{_base_location(grid, key)}: {rest}"
    return f"{grid.source}: point {point.index} ({point.label()}): {message}"


def _base_location(grid: Grid, key: str) -> str:
    """Where a base key was set, for the start of an error line."""
    return f"--set {key}" if key in grid.overridden else f"{grid.source}: base.{key}"


def _base_key(grid: Grid, key: str) -> str:
    """Where a base key was set, inside an error line."""
    return f"--set {key}" if key in grid.overridden else f"base.{key}"
