"""The orchestrator's commands: ``submit``, ``status``, ``cancel`` and ``mlflow-ui``.

They register themselves on the ``gammaray`` group of ``orchestrator.cli.main``. Every user error
(a bad grid, an unknown grid, a missing store) is one line on stderr and exit code 2; with
``--json`` the last line of stdout is one JSON document. ``submit`` exits 1 when a run failed
or the tracking store could not be written (the JSON says which), 0 otherwise.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from orchestrator.cli.support import (
    fail,
    json_option,
    print_json,
    set_option,
    sigterm_as_interrupt,
    user_errors,
)
from orchestrator.cli.tables import format_duration, format_plan, format_status, plan_rows
from orchestrator.errors import GridError
from orchestrator.ray_job import follow, is_job_address, job_document, require_cluster_workspace, submit_job
from orchestrator.tracking.status import grid_status, request_cancel
from orchestrator.tracking.store import ui_command
from trainers.run_folder import default_tracking_uri

tracking_option = click.option(
    "--tracking-uri",
    metavar="URI",
    help="MLflow tracking store, e.g. http://HOST:PORT (default: sqlite:///<workspace>/mlflow.db).",
)


@click.command()
@click.argument("grid_file", type=click.Path(dir_okay=False))
@set_option
@click.option(
    "--address",
    metavar="ADDR",
    help="An existing Ray cluster instead of a local one: HOST:6379 (its GCS; this process drives the grid) "
    "or http://HOST:8265 (its dashboard; the grid is submitted as a Ray Job and its driver runs on the cluster).",
)
@tracking_option
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    help="Run at most K runs at once (overrides the grid's max_parallel).",
)
@click.option("--dry-run", is_flag=True, help="Print the run table and totals; launch and write nothing.")
@click.option(
    "--detach", is_flag=True, help="With --address http://...: return once the Ray Job is submitted."
)
@json_option
@user_errors
def submit(
    grid_file: str,
    overrides: tuple[str, ...],
    address: str | None,
    tracking_uri: str | None,
    max_parallel: int | None,
    dry_run: bool,
    detach: bool,
    as_json: bool,
) -> None:
    """Train every point of GRID_FILE on Ray and log it to MLflow.

    Runs already finished are skipped; unfinished ones resume from their checkpoints. Progress
    goes to stderr. --set KEY=VALUE overrides a base config key (or name, max_parallel,
    retries, resources.cpus/gpus/processes).
    """
    from orchestrator.submit import plan as make_plan
    from orchestrator.submit import run

    if detach and not is_job_address(address):
        fail("--detach: only with --address http://HEAD:8265 (a grid submitted as a Ray Job)")
    require_cluster_workspace()
    plan = make_plan(
        grid_file,
        overrides,
        address=address,
        tracking_uri=tracking_uri,
        max_parallel=max_parallel,
        check_machine=not dry_run,
    )
    if dry_run:
        from orchestrator.grids.estimate import check_capacity

        if address is None:
            try:
                check_capacity(plan.grid, plan.specs, plan.capacity)
            except GridError as error:
                click.echo(f"gammaray: note: not runnable here without --address: {error}", err=True)
        rows = plan_rows(plan.specs, plan.done)
        summary = plan.totals()
        click.echo(format_plan(rows))
        click.echo(
            f"grid {plan.grid.name}: {len(plan.specs)} runs, {len(plan.done)} done, {summary['runs']} to train: "
            f"{summary['train_flops']:.3g} FLOPs, ~{summary['cpu_hours']:.3g} CPU-hours, "
            f"~{summary['gpu_hours']:.3g} GPU-hours, "
            f"~{_duration(summary['wall_s'])} at {summary['parallel']} at once on {plan.capacity.source} (estimates)"
        )
        if plan.grid.branch_over:
            click.echo(
                f"branching over {plan.grid.branch_over}: {summary['tokens_to_train']:,} tokens to train instead of "
                f"{summary['tokens_without_branching']:,} "
                f"({summary['tokens_to_train'] / max(summary['tokens_without_branching'], 1):.2f}×)"
            )
        if as_json:
            print_json(
                {
                    "grid": plan.grid.name,
                    "tracking_uri": plan.tracking_uri,
                    "runs": len(plan.specs),
                    "trained": 0,
                    "skipped": len(plan.done),
                    "failed": 0,
                    "dry_run": True,
                    "totals": summary,
                    "plan": rows,
                }
            )
        return
    if is_job_address(address):
        assert address is not None
        _submit_as_job(
            plan.grid.name, grid_file, overrides, address, tracking_uri, max_parallel, detach, as_json
        )
        return
    stop = sigterm_as_interrupt()
    try:
        with stop:
            outcome = run(plan, address=address)
    except KeyboardInterrupt:
        signum = stop.signum
        click.echo(
            f"gammaray: grid {plan.grid.name}: stopped by {signal.Signals(signum).name}; the runs it was training "
            f"stopped at a checkpoint of their step (`gammaray status {plan.grid.name}` lists them); "
            "the same submit resumes them",
            err=True,
        )
        sys.exit(128 + signum)
    counts = "  ".join(f"{n} {state}" for state, n in outcome.counts.items() if n)
    click.echo(
        f"grid {outcome.grid}: {counts}; trained {outcome.trained}, skipped {outcome.skipped}; "
        f"tracking store {outcome.tracking_uri}",
        err=True,
    )
    if as_json:
        print_json(outcome.as_json())
    if outcome.counts["failed"] or not outcome.tracking_ok:
        sys.exit(1)


def _submit_as_job(
    grid_name: str,
    grid_file: str,
    overrides: tuple[str, ...],
    address: str,
    tracking_uri: str | None,
    max_parallel: int | None,
    detach: bool,
    as_json: bool,
) -> None:
    """Submit the (already checked) grid as a Ray Job; follow its log unless ``detach``."""

    if tracking_uri is None or not tracking_uri.startswith(("http://", "https://", "postgresql", "mysql")):
        fail(
            "--tracking-uri: a grid submitted as a Ray Job needs a tracking store that the cluster and this machine "
            "both reach, e.g. --tracking-uri http://MLFLOW:5000 (see cluster/README.md)"
        )
    assert tracking_uri is not None
    job = submit_job(grid_name, grid_file, overrides, address, tracking_uri, max_parallel)
    later = f"gammaray status {grid_name} --tracking-uri {tracking_uri}"
    click.echo(f"grid {grid_name}: submitted as Ray Job {job.job_id}; dashboard {address}", err=True)
    if detach:
        click.echo(f"it runs on the cluster; follow it with: {later}", err=True)
        if as_json:
            print_json(job_document(job, "SUBMITTED", ""))
        return
    try:
        document = follow(job)
    except KeyboardInterrupt:
        click.echo(f"\ndetached: the job goes on; follow it with: {later}", err=True)
        if as_json:
            print_json(job_document(job, "DETACHED", ""))
        return
    click.echo(f"grid {grid_name}: Ray Job {job.job_id} {document['job_status'].lower()}", err=True)
    if as_json:
        print_json(document)
    if document["job_status"] != "SUCCEEDED":
        sys.exit(1)


@click.command()
@click.argument("grid")
@tracking_option
@json_option
@user_errors
def status(grid: str, tracking_uri: str | None, as_json: bool) -> None:
    """Show the runs of GRID (a grid name or grid file) from the tracking store."""

    document = grid_status(_uri(tracking_uri), _grid_name(grid))
    if as_json:
        print_json(document)
    else:
        click.echo(format_status(document))


@click.command()
@click.argument("grid")
@tracking_option
@json_option
@user_errors
def cancel(grid: str, tracking_uri: str | None, as_json: bool) -> None:
    """Stop the pending and running runs of GRID (a grid name or grid file).

    They are marked cancelled in the tracking store; a running driver stops their Ray tasks
    within seconds. Checkpoints are kept: submitting the grid again resumes them.
    """

    uri, name = _uri(tracking_uri), _grid_name(grid)
    cancelled = request_cancel(uri, name)
    if as_json:
        print_json({"grid": name, "tracking_uri": uri, "cancelled": cancelled})
    else:
        click.echo(
            f"grid {name}: cancelled {len(cancelled)} run(s)"
            + (f": {', '.join(cancelled)}" if cancelled else "")
        )


@click.command("mlflow-ui")
@tracking_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the UI listens on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--print-command", is_flag=True, help="Print the `mlflow ui` command instead of running it.")
@user_errors
def mlflow_ui(tracking_uri: str | None, host: str, port: int, print_command: bool) -> None:
    """Open the MLflow UI on the workspace's tracking store (or --tracking-uri)."""
    import shlex

    uri = _uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        click.echo(f"{uri} is an MLflow server: open it in a browser")
        return
    command = ui_command(uri, host, port)
    if print_command:
        click.echo(shlex.join(command))
        return
    click.echo(f"MLflow UI on http://{host}:{port} ({uri}); Ctrl-C stops it", err=True)
    os.execv(command[0], command)


def _uri(tracking_uri: str | None) -> str:

    return tracking_uri or default_tracking_uri()


def _grid_name(grid: str) -> str:
    """A grid name as given, or the ``name`` inside a grid file."""
    if grid.endswith((".yaml", ".yml")) or Path(grid).is_file():
        from trainers.config import read_yaml_mapping

        name = read_yaml_mapping(grid).get("name")
        if not isinstance(name, str):
            fail(f"{grid}: name: required (the grid's name)")
        return name
    return grid


def _duration(seconds: float) -> str:

    return format_duration(seconds)
