"""The trainer's commands: ``gammaray train`` (one run, here) and ``gammaray inspect``."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from orchestrator.cli.support import json_option, print_json, set_option, user_errors
from trainers.callbacks import ConsoleProgress, JsonlLogger
from trainers.run_folder import ERROR_LOG, METRICS_FILE, workspace_dir

RUN_FAILED_EXIT = 1  # the run failed (a user error exits 2)


@click.command()
@click.argument("run_file", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Run folder (default: <workspace>/train/<run-id>).",
)
@json_option
@user_errors
def train(run_file: str | None, overrides: tuple[str, ...], out_dir: str | None, as_json: bool) -> None:
    """Train one run from RUN_FILE (YAML, optional) and --set overrides.

    The run folder holds config.yaml, metrics.jsonl, checkpoints and summary.json. Running the
    same command again resumes an interrupted run, and returns a finished one without training.
    """
    from trainers.config import load_run_config, resolve
    from trainers.errors import TrainingError
    from trainers.launch import run_local
    from trainers.loop import read_summary
    from trainers.preemption import Preempted

    config = load_run_config(run_file, overrides)
    resolved = resolve(config)
    out = Path(out_dir) if out_dir else workspace_dir() / "train" / resolved.run_id
    result = read_summary(out)
    if result is not None and result.run_id == resolved.run_id:
        click.echo(f"run {result.run_id} already finished in {out}", err=True)
    else:
        try:
            result = run_local(config, out, [ConsoleProgress(), JsonlLogger(out / METRICS_FILE)])
        except Preempted as stopped:
            click.echo(f"gammaray: {stopped}", err=True)
            sys.exit(stopped.exit_code)
        except TrainingError as error:  # the run could not go on: one line here, the traceback in the folder
            _keep_traceback(out / ERROR_LOG)
            click.echo(f"gammaray: error: {error}", err=True)
            sys.exit(RUN_FAILED_EXIT)
    if as_json:
        print_json({**result.to_dict(), "out_dir": str(out)})
    else:
        click.echo(
            f"{result.status}: eval loss {result.initial_eval_loss:.4f} → {result.final_eval_loss:.4f} "
            f"after {result.tokens:,} tokens ({result.tokens_per_s:,.0f} tokens/s); results in {out}"
        )


@click.command()
@click.argument("run_file", required=False, type=click.Path(dir_okay=False))
@set_option
@json_option
@user_errors
def inspect(run_file: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show the resolved config, parameter counts, FLOPs per token and the init table."""
    from trainers.inspect import inspect_run

    report = inspect_run(run_file, overrides)
    if as_json:
        print_json(report)
        return
    from trainers.inspect import format_report

    click.echo(format_report(report))


def _keep_traceback(path: Path) -> None:
    """Append the exception being handled to ``path`` (best effort: the disk may be the problem)."""
    try:
        with open(path, "a") as log:
            traceback.print_exc(file=log)
    except OSError:
        pass
