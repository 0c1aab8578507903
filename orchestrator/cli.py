"""The ``gammaray`` command line.

Heavy libraries (torch, deepspeed, ray, mlflow) are imported inside the commands that use them,
so ``gammaray --help`` answers at once. Every command turns a user error into one line on
stderr, ``gammaray: error: <key or file>: <what is wrong>``, and exit code 2.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import click

USER_ERROR_EXIT = 2


def fail(message: str) -> None:
    click.echo(f"gammaray: error: {message}", err=True)
    sys.exit(USER_ERROR_EXIT)


def user_errors(command: Callable) -> Callable:
    """Report the project's own exceptions as one line and exit 2; let bugs raise."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from trainers.errors import ConfigError

        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            fail(str(error))

    return wrapper


def print_json(document: dict[str, Any]) -> None:
    """One JSON document on the last line of stdout (NaN and inf become null)."""
    click.echo(json.dumps(_finite(document), default=str))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set init.gamma=0.5 (repeatable).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document as the last stdout line.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gammaray")
def main() -> None:
    """gammaray: scaling-law experiments over model size, tokens, init rate γ and weight decay."""


@main.command()
@click.argument("run_file", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default: <workspace>/train/<run-id>).")
@json_option
@user_errors
def train(run_file: str | None, overrides: tuple[str, ...], out_dir: str | None, as_json: bool) -> None:
    """Train one run from RUN_FILE (YAML, optional) and --set overrides.

    The run folder holds config.yaml, metrics.jsonl, checkpoints and summary.json. Running the
    same command again resumes an interrupted run, and returns a finished one without training.
    """
    from analysis.workspace import workspace_dir
    from trainers.callbacks import ConsoleProgress, JsonlLogger
    from trainers.config import load_run_config, resolve
    from trainers.launch import run_local
    from trainers.loop import read_summary

    config = load_run_config(run_file, overrides)
    resolved = resolve(config)
    out = Path(out_dir) if out_dir else workspace_dir() / "train" / resolved.run_id
    result = read_summary(out)
    if result is not None and result.run_id == resolved.run_id:
        click.echo(f"run {result.run_id} already finished in {out}", err=True)
    else:
        result = run_local(config, out, [ConsoleProgress(), JsonlLogger(out / "metrics.jsonl")])
    if as_json:
        print_json({**result.to_dict(), "out_dir": str(out)})
    else:
        click.echo(
            f"{result.status}: eval loss {result.initial_eval_loss:.4f} → {result.final_eval_loss:.4f} "
            f"after {result.tokens:,} tokens ({result.tokens_per_s:,.0f} tokens/s); results in {out}"
        )


@main.command()
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


if __name__ == "__main__":
    main()
