"""The ``gammaray fit`` and ``gammaray report`` commands.

Both load runs (``--grid NAME`` from the tracking store, or ``--csv FILE``), fit them per
group and compare the groups. Bad input prints one line ``gammaray: error: <what>`` on stderr
and exits 2; a run that fits nothing at all also exits 2. The orchestrator's ``gammaray``
group registers these commands; ``python -m analysis.cli`` runs them on their own.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from analysis.errors import AnalysisError, is_warning
from analysis.labels import PARAM_SYMBOLS, format_ci, format_number, group_label, slice_label
from trainers.run_folder import default_report_path

FORM_CHOICES = ("n", "d", "joint", "isoflop")
E_CHOICES = ("shared", "per-group", "known")
HOLDOUT_CHOICES = ("none", "largest-n", "largest-d", "largest-c")
REPORT_BOOTSTRAP = 1000


def _fail(message: str) -> None:
    click.echo(f"gammaray: error: {message}", err=True)
    sys.exit(2)


def _parse_by(by: str | None) -> tuple[str, ...] | None:
    if by is None:
        return None
    columns = tuple(c.strip() for c in by.split(",") if c.strip())
    return columns


def _load(grid: str | None, csv_path: str | None, tracking_uri: str | None, best_over: str | None):
    from analysis.load import load_csv, load_grid_runs
    from analysis.select import best_over as select_best

    if bool(grid) == bool(csv_path):
        raise AnalysisError("give exactly one of --grid NAME or --csv FILE")
    table = load_grid_runs(grid, tracking_uri) if grid else load_csv(csv_path)
    return select_best(table, _parse_by(best_over) or ())


def _notes(analysis) -> list[str]:

    notes = list(analysis.messages)
    for fit in analysis.fits:
        where = f"{group_label(fit.group)}, {fit.form}" + (
            f" at {slice_label(fit.slice)}" if fit.slice else ""
        )
        notes += [f"{where}: {m}" for m in fit.messages]
    return notes


def _echo_notes(analysis, verbose: bool, where: str) -> None:
    """Every note with ``--verbose``; otherwise the warnings (notes that can change a conclusion)
    and a count of the rest, on stderr."""
    notes = _notes(analysis)
    shown = notes if verbose else [n for n in notes if is_warning(n)]
    for note in shown:
        text = note if is_warning(note) else f"note: {note}"
        click.echo(f"gammaray: {text}", err=True)
    hidden = len(notes) - len(shown)
    if hidden:
        click.echo(f"gammaray: {hidden} more note(s) {where}; --verbose prints them", err=True)


def _common_options(function):
    function = click.option(
        "--verbose", "verbose", is_flag=True, help="Print every note from loading and fitting."
    )(function)
    function = click.option(
        "--holdout",
        "holdout",
        type=click.Choice(HOLDOUT_CHOICES),
        default=None,
        help="Refit without the largest runs and predict them (default: largest-n with >= 4 sizes per group, else none).",
    )(function)
    function = click.option(
        "--e",
        "e_mode",
        type=click.Choice(E_CHOICES),
        default="shared",
        show_default=True,
        help="E shared by the groups of a comparison, fitted per group, or held at the data's known entropy rate.",
    )(function)
    function = click.option(
        "--tracking-uri",
        "tracking_uri",
        metavar="URI",
        default=None,
        help="MLflow tracking URI (default: the workspace's embedded store).",
    )(function)
    function = click.option(
        "--best-over",
        "best_over",
        metavar="COLS",
        default=None,
        help="Keep, at each point of the other axes, only the runs at the best value of these columns (e.g. optim.lr).",
    )(function)
    function = click.option(
        "--by",
        "by",
        metavar="COLS",
        default=None,
        help="Comma-separated grouping columns (default: init.gamma, or gamma for a CSV).",
    )(function)
    function = click.option(
        "--csv",
        "csv_path",
        metavar="FILE",
        default=None,
        help="CSV with columns N, D, loss and grouping columns.",
    )(function)
    function = click.option(
        "--grid", "grid", metavar="NAME", default=None, help="Grid name in the tracking store."
    )(function)
    return function


@click.command("fit")
@_common_options
@click.option(
    "--form",
    "form",
    metavar="n|d|joint|isoflop",
    default=None,
    help="Fit only this form (default: every applicable one).",
)
@click.option(
    "--bootstrap",
    "bootstrap",
    metavar="K",
    type=int,
    default=1000,
    show_default=True,
    help="Bootstrap resamples per fit (0: no CIs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document as the last line of stdout.")
def fit_command(
    grid: str | None,
    csv_path: str | None,
    by: str | None,
    best_over: str | None,
    tracking_uri: str | None,
    e_mode: str,
    holdout: str | None,
    verbose: bool,
    form: str | None,
    bootstrap: int,
    as_json: bool,
) -> None:
    """Fit power laws per group, with bootstrap CIs, and say which group descends faster."""
    from analysis.analyze import analyze
    from analysis.export import to_json
    from analysis.summary import summary_lines

    try:
        if form is not None and form not in FORM_CHOICES:
            raise AnalysisError(f"--form: unknown form '{form}' (expected one of {', '.join(FORM_CHOICES)})")
        if bootstrap < 0:
            raise AnalysisError(f"--bootstrap: must be >= 0, got {bootstrap}")
        table = _load(grid, csv_path, tracking_uri, best_over)
        result = analyze(
            table,
            by=_parse_by(by),
            forms=[form] if form else None,
            n_bootstrap=bootstrap,
            e_mode=e_mode,
            holdout=holdout,
        )
    except AnalysisError as exc:
        _fail(str(exc))
        return
    _echo_notes(result, verbose, "from fitting")
    if not as_json:
        click.echo(_fit_table(result))
        click.echo("")
        for line in summary_lines(result):
            click.echo(line)
    else:
        click.echo(to_json(result))
    if result.scaling and not result.any_ok:
        _fail("nothing could be fitted (see the notes above)")


def _fit_table(analysis) -> str:
    from analysis.fitting.fit import FORM_PARAMS

    lines = []
    for fit in analysis.fits:
        head = f"{group_label(fit.group):<18} {fit.form:<8} {slice_label(fit.slice):<12} n={fit.n_points:<4}"
        if not fit.ok and not any(v == v for v in fit.params.values()):
            lines.append(f"{head} not fitted")
            continue
        parts = []
        for p in FORM_PARAMS[fit.form]:
            value = fit.params.get(p, float("nan"))
            if value != value:
                continue
            ci = format_ci(fit.ci.get(p))
            parts.append(f"{PARAM_SYMBOLS.get(p, p)}={format_number(value)}" + (f" {ci}" if ci else ""))
        lines.append(f"{head} " + "  ".join(parts) + ("" if fit.ok else "  (partial)"))
    return "\n".join(lines)


@click.command("report")
@_common_options
@click.option(
    "--out",
    "out",
    metavar="FILE.html",
    default=None,
    help="Report path (default: <workspace>/reports/<name>/report.html).",
)
@click.option(
    "--png",
    "png",
    metavar="DIR",
    default=None,
    help="Also write the main figures as PNG files into DIR (needs kaleido and a Chromium).",
)
def report_command(
    grid: str | None,
    csv_path: str | None,
    by: str | None,
    best_over: str | None,
    tracking_uri: str | None,
    e_mode: str,
    holdout: str | None,
    verbose: bool,
    out: str | None,
    png: str | None,
) -> None:
    """Write a self-contained HTML report (with fit.json and fits.csv beside it); print the verdict."""
    from analysis.analyze import analyze
    from analysis.export import write_outputs
    from analysis.report.scaling import write_figures, write_report
    from analysis.summary import holdout_line, summary_lines

    try:
        table = _load(grid, csv_path, tracking_uri, best_over)
        path = Path(out) if out else default_report_path(table.name)
        if path.suffix.lower() not in (".html", ".htm"):
            raise AnalysisError(f"--out: {path}: the report is an HTML file (end the name in .html)")
        result = analyze(
            table, by=_parse_by(by), n_bootstrap=REPORT_BOOTSTRAP, e_mode=e_mode, holdout=holdout
        )
        try:
            write_report(result, path)
            write_outputs(result, path.parent)
            if png:
                write_figures(result, png)
        except OSError as exc:
            raise AnalysisError(f"{path}: cannot write the report: {exc.strerror or exc}") from None
    except AnalysisError as exc:
        _fail(str(exc))
        return
    _echo_notes(result, verbose, "in the report")
    if result.verdict is not None and len(result.groups) >= 2:
        click.echo("Verdict: " + result.verdict.text)
    if not result.scaling:  # a task study: its result is the phase diagram, not a law
        click.echo(summary_lines(result)[0])
    line = holdout_line(result)
    if line:
        click.echo(line)
    click.echo(str(path))
    if result.scaling and not result.any_ok:
        _fail(f"nothing could be fitted; the report at {path} lists the runs")


@click.group()
def _main() -> None:
    """gammaray analysis commands (standalone entry point)."""


_main.add_command(fit_command)
_main.add_command(report_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``fit``/``report`` commands as a small standalone group."""
    _main.main(args=list(argv) if argv is not None else None, prog_name="gammaray")


if __name__ == "__main__":
    main()
