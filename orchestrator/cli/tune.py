"""The ``gammaray tune`` command: Optuna studies over a grid's points, trials trained on Ray.

Registers itself on the ``gammaray`` group of ``orchestrator.cli.main``. A user error (a bad grid,
parameter, per key or storage URL) is one line on stderr and exit code 2, before any study is
created or run launched. Progress goes to stderr, one line per finished trial; stdout gets the
best values and the rule, and with ``--json`` one JSON document as its last line. Exits 1 when
a study ended short of its trials (too many failed).
"""

from __future__ import annotations

import sys

import click

from orchestrator.cli.support import (
    fail,
    json_option,
    print_json,
    set_option,
    sigterm_as_interrupt,
    user_errors,
)


@click.command()
@click.argument("grid_file", type=click.Path(dir_okay=False))
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=RANGE",
    help="A config key to search: KEY=log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or choice:a,b,... "
    "(repeatable; replaces the grid's tune.params).",
)
@click.option(
    "--per",
    metavar="KEY,KEY",
    help="Keys whose values make a study each (default: the grid's tune.per, else every axis that varies).",
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    help="Finished trials (complete + pruned) each study should hold; a larger K later adds only the missing ones.",
)
@set_option
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="Join this Ray cluster (its GCS address) instead of starting a local one.",
)
@click.option("--storage", metavar="URL", help="Optuna storage (default: sqlite:///<workspace>/optuna.db).")
@json_option
@user_errors
def tune(
    grid_file: str,
    params: tuple[str, ...],
    per: str | None,
    trials: int | None,
    overrides: tuple[str, ...],
    address: str | None,
    storage: str | None,
    as_json: bool,
) -> None:
    """Tune hyperparameters of GRID_FILE's points with Optuna, one study per group.

    Each trial is a normal run (content-hashed run id, folder <workspace>/tune/<grid>/<run-id>);
    trials run in parallel on Ray and are pruned from their eval loss as they train. Writes the
    best values as a grid snippet (<workspace>/tune/<grid>/best.yaml), a size rule across model
    sizes, and a report (<workspace>/reports/<grid>-tune.html).
    """
    from orchestrator.tuning.driver import run
    from orchestrator.tuning.plan import make_plan
    from orchestrator.tuning.results import format_summary

    if address and address.startswith(("http://", "https://")):
        fail(
            f"--address {address}: tune drives its trials from this process; give the cluster's GCS address HOST:6379"
        )
    plan = make_plan(grid_file, overrides, params=params, per=per, trials=trials, storage=storage)
    with sigterm_as_interrupt():
        outcome = run(plan, address=address)
    click.echo(format_summary(outcome))
    click.echo(
        f"tune {outcome.grid}: {outcome.total_trials} finished trials in {len(outcome.studies)} "
        f"stud{'y' if len(outcome.studies) == 1 else 'ies'}, {outcome.new_trials} new "
        f"({outcome.trained} trained, {outcome.reused} reused runs, {outcome.failed} failed)",
        err=True,
    )
    if as_json:
        print_json(outcome.as_json())
    if not outcome.reached_target:
        sys.exit(1)
