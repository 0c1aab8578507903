"""Downstream evaluation: ``gammaray export`` (a run as a Hugging Face model) and ``gammaray eval``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli.commands import tracking_option
from orchestrator.cli.support import fail, json_option, print_json, user_errors
from trainers.run_folder import default_tracking_uri, workspace_dir

EVAL_FAILED_EXIT = 1


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--grid", help="Export every finished run of this grid (into <run>/hf unless --out).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: <run>/hf).")
@click.option("--step", type=click.IntRange(0), help="Export this checkpoint step (default: the newest).")
@json_option
@user_errors
def export(
    run_dir: str | None, grid: str | None, out_dir: str | None, step: int | None, as_json: bool
) -> None:
    """Write RUN_DIR (a run folder) as a Hugging Face LlamaForCausalLM folder with its tokenizer."""
    from trainers.export import export_run

    if (run_dir is None) == (grid is None):
        fail("export: give a run folder or --grid NAME, not both")
    if grid is not None:
        folders = sorted(p.parent for p in (workspace_dir() / "grids" / grid).glob("*/summary.json"))
        if not folders:
            fail(f"--grid: no finished run of grid {grid!r} under {workspace_dir() / 'grids'}")
        targets = [(f, Path(out_dir) / f.name if out_dir else f / "hf") for f in folders]
    else:
        targets = [(Path(run_dir), Path(out_dir) if out_dir else Path(run_dir) / "hf")]
    written = [str(export_run(folder, out, step)) for folder, out in targets]
    if as_json:
        print_json({"exported": written})
    else:
        click.echo("\n".join(f"exported {path}" for path in written))


@click.command("eval")
@click.option("--grid", help="The grid whose finished runs are scored.")
@click.option(
    "--tasks", default="", help="Comma-separated task names: shipped ones or lm-evaluation-harness's."
)
@click.option("--limit", type=int, help="Score at most this many documents of each task.")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option(
    "--gpus-per-run", default=0.0, show_default=True, type=float, help="GPUs each scoring task takes."
)
@click.option("--address", help="Ray cluster address (default: a local cluster).")
@click.option("--list-tasks", is_flag=True, help="Print the shipped task names, one a line, and exit.")
@tracking_option
@json_option
@user_errors
def evaluate(
    grid: str | None,
    tasks: str,
    limit: int | None,
    batch_size: int,
    gpus_per_run: float,
    address: str | None,
    list_tasks: bool,
    tracking_uri: str | None,
    as_json: bool,
) -> None:
    """Score every finished run of a grid with lm-evaluation-harness; scores go to MLflow as
    eval/<task>/<metric> and to <run>/downstream.jsonl. Runs already scored are skipped."""
    from orchestrator.evaluate import evaluate_grid, shipped_tasks

    if list_tasks:
        click.echo("\n".join(shipped_tasks()))
        return
    if grid is None:
        fail("--grid: required (the grid whose runs are scored)")
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    outcome = evaluate_grid(
        grid,
        names,
        tracking_uri or default_tracking_uri(),
        limit=limit,
        batch_size=batch_size,
        gpus_per_run=gpus_per_run,
        address=address,
        say=lambda line: click.echo(line, err=True),
    )
    for run_id, missing in outcome.not_applicable.items():
        click.echo(f"{run_id}: its data cannot ask {', '.join(missing)}; left out", err=True)
    for run_id, reason in outcome.failed.items():
        click.echo(f"{run_id}: not scored: {reason}", err=True)
    if as_json:
        print_json(
            {
                "scored": outcome.scored,
                "skipped": outcome.skipped,
                "failed": outcome.failed,
                "not_applicable": outcome.not_applicable,
            }
        )
    if outcome.failed:
        sys.exit(EVAL_FAILED_EXIT)
