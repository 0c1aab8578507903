"""The ``gammaray`` command line.

Heavy libraries (torch, deepspeed, ray, mlflow) are imported inside the commands that use them,
so ``gammaray --help`` answers at once. Every command turns a user error into one line on
stderr, ``gammaray: error: <key or file>: <what is wrong>``, and exit code 2.
"""

from __future__ import annotations

import click

from analysis.cli import fit_command, report_command
from orchestrator.cli.commands import cancel, mlflow_ui, status, submit
from orchestrator.cli.evaluate import evaluate, export
from orchestrator.cli.trainer import inspect, train
from orchestrator.cli.tune import tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gammaray")
def main() -> None:
    """gammaray: scaling-law experiments over model size, tokens, init rate γ and weight decay."""


# The trainer's commands, the grids' (orchestrator.cli.commands), tuning, and analysis (which
# imports neither torch nor ray).
for command in (
    train,
    inspect,
    submit,
    status,
    cancel,
    mlflow_ui,
    tune,
    export,
    evaluate,
    fit_command,
    report_command,
):
    main.add_command(command)

if __name__ == "__main__":
    main()
