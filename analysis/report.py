"""The self-contained HTML report: verdict first, then figures and tables.

One file: plotly.js is inlined once in the head (every figure shares it), no fonts, images
or scripts are fetched, so the report opens offline and can be mailed or archived as is.
Sections: summary, loss vs N, loss vs D, exponents by group, IsoFLOP (when fitted),
training curves, residuals, comparisons, the trainer's eval-time measurements (mechanism,
token-level, reasoning probe, critical γ: each when the grid logged them, else a one-line
note), fit table, run table, notes and method.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analysis import figures, mechanism_report
from analysis.analyze import Analysis, plain_value
from analysis.errors import AnalysisError
from analysis.fit import FORM_PARAMS, HUBER_DELTA
from analysis.labels import (
    FORM_TITLES,
    PARAM_SYMBOLS,
    format_axis_value,
    format_ci,
    format_number,
    group_label,
    slice_label,
)
from analysis.summary import headline_predictions, holdout_line, summary_lines

CSS = """
:root { --ink:#1d1d1f; --muted:#5f6368; --rule:#e3e3e3; --accent:#0072B2; --bad:#b3261e; --soft:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.55 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif; color:var(--ink); background:#fff; }
main { max-width: 1100px; margin: 0 auto; padding: 32px 28px 64px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
header .meta { color: var(--muted); font-size: 13px; }
nav { margin: 18px 0 8px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
h2 { font-size: 19px; margin: 40px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--rule); }
p.lead { color: var(--muted); margin: 4px 0 12px; font-size: 14px; }
.verdict { background: var(--soft); border-left: 4px solid var(--accent); padding: 14px 18px; margin: 10px 0; border-radius: 4px; }
.verdict p { margin: 6px 0; }
.verdict .sig { font-weight: 600; }
.figure { margin: 8px 0 4px; border: 1px solid var(--rule); border-radius: 6px; padding: 6px; }
.empty { color: var(--muted); font-style: italic; padding: 8px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; margin: 6px 0 4px; }
th, td { padding: 5px 8px; text-align: right; border-bottom: 1px solid var(--rule); vertical-align: top; }
th { background: var(--soft); font-weight: 600; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
tr.failed td { background: #fdecea; }
tr.failed td.state { color: var(--bad); font-weight: 600; }
tr.partial td { color: var(--muted); }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align: baseline; }
.scroll { max-height: 520px; overflow: auto; border: 1px solid var(--rule); border-radius: 6px; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--muted); }
ul.notes { font-size: 13px; color: var(--muted); }
code { font-size: 12.5px; background: var(--soft); padding: 1px 4px; border-radius: 3px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}


def _e(text: Any) -> str:
    return html.escape(str(text))


def _figure_html(fig, div_id: str) -> str:
    if fig is None:
        return ""
    return (
        '<div class="figure">'
        + pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
        + "</div>"
    )


def _section(anchor: str, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{lead_html}{body}</section>'


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _table(header: list[str], rows: Iterable[tuple[list[str], str]], left: Iterable[int] = (0,)) -> str:
    """An HTML table; each row is (escaped cell HTML, CSS class)."""
    left = set(left)
    head = "".join(f'<th class="{"l" if i in left else ""}">{h}</th>' for i, h in enumerate(header))
    body = []
    for cells, css in rows:
        tds = "".join(
            f'<td class="{"l" if i in left else ""}{" state" if header[i] == "state" else ""}">{c}</td>'
            for i, c in enumerate(cells)
        )
        body.append(f'<tr class="{css}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _swatch(label: str, colors: dict[str, str]) -> str:
    color = colors.get(label)
    return (f'<span class="swatch" style="background:{color}"></span>' if color else "") + _e(label)


# ----------------------------------------------------------------------------------------


def _summary(analysis: Analysis) -> str:
    table = analysis.table
    runs = table.runs
    n_fin = int((runs["state"] == "finished").sum())
    other = runs.loc[runs["state"] != "finished", "state"].value_counts().to_dict()
    other_text = "".join(f", {v} {k}" for k, v in other.items())
    groups = analysis.groups
    by_text = ", ".join(analysis.by) if analysis.by else "no grouping"
    e_text = {
        "shared": "E shared by the groups of each fit",
        "known": "E held at the data's entropy rate",
        "per-group": "E fitted per group",
    }[analysis.e_mode]
    facts = (
        f"{len(runs)} runs ({n_fin} finished{other_text}) in {len(groups)} group(s) by {by_text}; "
        f"forms fitted: {', '.join(FORM_TITLES[f].split(':')[0] for f in analysis.forms) or 'none'}; {e_text}."
    )
    lines = summary_lines(analysis)
    significant = analysis.verdict is not None and analysis.verdict.significant
    paragraphs = [
        f'<p class="{"sig" if i == 0 and significant else ""}">{_e(line)}</p>' for i, line in enumerate(lines)
    ]
    return f'<div class="verdict">{"".join(paragraphs)}</div><p class="lead">{_e(facts)}</p>'


def _gap_section(analysis: Analysis, colors: dict[str, str]) -> str:
    if not analysis.gaps:
        return _empty("No two groups ran the same (N, D) cells: nothing to compare cell by cell.")
    body = []
    for i, gap in enumerate(analysis.gaps):
        one, two = group_label(gap.first), group_label(gap.second)
        body.append(f"<p>{_e(gap.text)}</p>")
        if i < 3:  # beyond three pairs the figures repeat what the table says
            body.append(_figure_html(figures.gap_figure(gap, colors), f"fig-gap-{i}"))
        rows = [
            (
                [
                    _e(format_axis_value("N", c.n_params)),
                    _e(format_axis_value("D", c.tokens)),
                    _e(f"{c.first_loss:.4f}"),
                    _e(f"{c.second_loss:.4f}"),
                    _e(f"{c.gap:+.4f}") + (f"<br><small>{_e(format_ci(c.ci))}</small>" if c.ci else ""),
                    str(c.n_seeds),
                ],
                "",
            )
            for c in gap.cells
        ]
        trends = "".join(
            f"<li>trend with {_e(TREND_NOUNS[t.axis])}: {_e(format_number(t.slope))} nats per decade "
            f"{_e(format_ci(t.ci)) or '(no interval)'}{' at fixed ' + _e(', '.join(t.controls)) if t.controls else ''}</li>"
            for t in gap.trends
        )
        body.append(
            f"<details><summary>{len(gap.cells)} cells of {_e(one)} vs {_e(two)}; trends</summary>"
            + _table(["N", "D", f"loss {_e(one)}", f"loss {_e(two)}", "gap", "seeds"], rows)
            + (f'<ul class="notes">{trends}</ul>' if trends else "")
            + "</details>"
        )
    return "".join(body)


def _holdout_section(analysis: Analysis, colors: dict[str, str]) -> str:
    if analysis.holdout_mode == "none":
        return _empty(
            "No hold-out check: it needs at least four distinct N per group (or --holdout largest-d|largest-c)."
        )
    line = holdout_line(analysis)
    body = f"<p>{_e(line)}</p>" if line else ""
    if not analysis.holdout:
        return body
    body += _figure_html(figures.holdout_figure(headline_predictions(analysis), colors), "fig-holdout")
    rows = []
    for p in analysis.holdout:
        inside = "" if p.inside is None else ("yes" if p.inside else "no")
        rows.append(
            (
                [
                    _swatch(group_label(p.group), colors),
                    _e(p.form),
                    _e(slice_label(p.slice) or "all"),
                    _e(format_axis_value("N", p.n_params)),
                    _e(format_axis_value("D", p.tokens)),
                    str(p.n_fitted),
                    _e(f"{p.predicted:.4f}"),
                    _e(f"{p.actual:.4f}"),
                    _e(f"{p.relative_error:+.2%}"),
                    _e(format_ci(p.interval, 4)),
                    _e(inside),
                ],
                "" if p.inside is not False else "failed",
            )
        )
    header = [
        "group",
        "form",
        "slice",
        "N",
        "D",
        "runs fitted",
        "predicted",
        "measured",
        "error",
        f"{analysis.ci_level:.0%} interval",
        "inside",
    ]
    return body + _table(header, rows, left=(0, 1, 2))


TREND_NOUNS = {"N": "N", "D": "D", "FLOPs": "compute"}


def _fit_table(analysis: Analysis, colors: dict[str, str]) -> str:
    if not analysis.fits:
        return _empty("No fits.")
    names = ["E", "A", "alpha", "B", "beta", "a", "b"]
    names = [p for p in names if any(p in FORM_PARAMS[f.form] for f in analysis.fits)]
    header = ["group", "form", "slice", "n"] + [PARAM_SYMBOLS[p] for p in names] + ["status"]
    rows = []
    for f in analysis.fits:
        form = f.form + ("" if f.e_mode == "per-group" or f.form == "isoflop" else f" (E {f.e_mode})")
        cells = [
            _swatch(group_label(f.group), colors),
            _e(form),
            _e(slice_label(f.slice) or "all"),
            str(f.n_points),
        ]
        for p in names:
            value = f.params.get(p, math.nan)
            if value is None or not math.isfinite(value):
                cells.append("")
                continue
            ci = format_ci(f.ci.get(p))
            cells.append(_e(format_number(value)) + (f"<br><small>{_e(ci)}</small>" if ci else ""))
        status = (
            "ok"
            if f.ok
            else (
                "partial" if any(np.isfinite(v) for v in f.params.values() if v is not None) else "not fitted"
            )
        )
        note = "; ".join(f.messages)
        cells.append(_e(status) + (f"<br><small>{_e(note)}</small>" if note else ""))
        rows.append((cells, "" if f.ok else "partial"))
    return _table(header, rows, left=(0, 1, 2, len(header) - 1))


def _comparison_table(analysis: Analysis, colors: dict[str, str]) -> str:
    if not analysis.comparisons:
        return _empty("Fewer than two groups were fitted with the same form: nothing to compare.")
    header = [
        "form",
        "slice",
        "exp.",
        "faster (point est.)",
        "value",
        "other",
        "value",
        "difference",
        "verdict",
        "multiplier",
        "crossovers",
    ]
    rows = []
    for c in analysis.comparisons:
        mult = "<br>".join(
            f"{m.axis}: {'∞' if m.value == math.inf else (format_number(m.value) + '×' if m.value is not None else 'n/a')}"
            + (f" <small>{_e(format_ci(m.ci))}</small>" if m.ci else "")
            for m in c.multipliers
        )
        cross = (
            "<br>".join(
                f"{x.axis}={format_axis_value(x.axis, x.at)}"
                + ("" if x.within_range else " <small>(outside data)</small>")
                for x in c.crossovers
            )
            or "none"
        )
        verdict = (
            "faster: " + group_label(c.faster)
            if c.faster is not None
            else ("n.s." if c.difference_ci else "no CI")
        )
        rows.append(
            (
                [
                    _e(c.form),
                    _e(slice_label(c.slice) or "all"),
                    _e(PARAM_SYMBOLS[c.exponent]),
                    _swatch(group_label(c.first), colors),
                    _e(format_number(c.first_value)) + f"<br><small>{_e(format_ci(c.first_ci))}</small>",
                    _swatch(group_label(c.second), colors),
                    _e(format_number(c.second_value)) + f"<br><small>{_e(format_ci(c.second_ci))}</small>",
                    _e(format_number(c.difference)) + f"<br><small>{_e(format_ci(c.difference_ci))}</small>",
                    f"<b>{_e(verdict)}</b>" if c.faster is not None else _e(verdict),
                    mult or "",
                    cross,
                ],
                "",
            )
        )
    return _table(header, rows, left=(0, 1, 2, 3, 5, 8, 10))


def _run_table(analysis: Analysis, colors: dict[str, str]) -> str:
    runs = analysis.table.runs
    extra = [a for a in analysis.table.axes if a not in analysis.by and a not in ("N", "D", "FLOPs")][:6]
    header = ["run", "state", *analysis.by, "N", "D", "FLOPs", "final loss", *extra, "reason"]
    rows = []
    order = runs.sort_values(
        ["state", *analysis.by, "N", "D"],
        key=lambda s: s.map(lambda v: v != "finished") if s.name == "state" else s,
    )
    for r in order.itertuples(index=False):
        row = r._asdict()
        group = {c: plain_value(runs.loc[runs["run_id"] == r.run_id, c].iloc[0]) for c in analysis.by}
        state = row["state"]
        loss = row["loss"]
        reason = row["reason"] if isinstance(row["reason"], str) else ""
        cells = [_e(r.run_id), _e(state)]
        cells += [_e(group_label({c: group[c]}).split("=", 1)[-1]) for c in analysis.by]
        cells += [
            _e(format_axis_value("N", row["N"])),
            _e(format_axis_value("D", row["D"])),
            _e(format_axis_value("FLOPs", row["FLOPs"])),
            _e(f"{loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else "—"),
        ]
        cells += [_e(plain_value(runs.loc[runs["run_id"] == r.run_id, a].iloc[0])) for a in extra]
        cells.append(_e(reason))
        rows.append((cells, "" if state == "finished" else "failed"))
    table = _table(header, rows, left=(0, 1, len(header) - 1))
    return f'<div class="scroll">{table}</div>'


def _notes(analysis: Analysis) -> str:
    notes = list(analysis.messages)
    for f in analysis.fits:
        where = f"{group_label(f.group)}, {f.form}" + (f" at {slice_label(f.slice)}" if f.slice else "")
        notes += [f"{where}: {m}" for m in f.messages]
    if not notes:
        return _empty("No warnings.")
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return f'<details><summary>{len(notes)} note(s) from loading and fitting</summary><ul class="notes">{items}</ul></details>'


def _method(analysis: Analysis) -> str:
    e_text = {
        "shared": "The groups of each comparison (one form, one slice) are fitted jointly with one E and their own "
        "coefficients and exponents: settings that share their data share the irreducible loss, and a per-group E "
        "would trade off against the exponent.",
        "known": "E is held at the data's entropy rate (the loss of a model that knows every table), recorded by each run; "
        "each group's coefficients and exponents are fitted.",
        "per-group": "Each group is fitted on its own, E included.",
    }[analysis.e_mode]
    boot = (
        f"Uncertainty: {analysis.n_bootstrap} bootstrap resamples; a joint fit resamples the runs of all its groups "
        "together (whole cells, or seeds within each cell when every cell has several), so draws of different groups are "
        f"paired; a fit alone resamples its own runs. {analysis.ci_level:.0%} percentile intervals."
        if analysis.n_bootstrap
        else "No bootstrap was run: no confidence intervals and no verdicts."
    )
    return (
        "<p>Each group's runs are fitted with the parametric forms "
        "L(N) = E + A·N<sup>−α</sup> (at fixed D, or along the grid's D schedule), L(D) = E + B·D<sup>−β</sup> (at fixed N) and "
        "L(N, D) = E + A·N<sup>−α</sup> + B·D<sup>−β</sup>, N being the number of parameters and D the number of training tokens. "
        f"{_e(e_text)} Following Hoffmann et al. (2022) and the replication of Besiroglu et al. (2024), each fit minimizes the Huber loss "
        f"(δ = {HUBER_DELTA:g}) of log-space residuals, with the prediction written as a log-sum-exp of log-parameterized terms, "
        "by L-BFGS-B with analytic gradients from a grid of starting points; the best optimum is kept. "
        "IsoFLOP fits (approach 2) take the minimum of a parabola in log N per compute budget and regress log N* on log C. "
        f"{boot} A setting <em>descends faster</em> when its exponent is larger and the interval of the difference excludes 0, "
        "or, failing that, when the paired loss gap moves toward it as scale grows (a least-squares slope over the cells with a "
        "t-interval). The hold-out check refits each law without its largest runs and predicts them; its interval combines the "
        "refit's bootstrap with the scatter of its residuals. "
        "The effective-compute multiplier is how many times more parameters (tokens, compute) the slower setting needs to reach the "
        "faster setting's fitted loss at the largest scale the faster setting measured.</p>"
    )


def _measurement_sections(
    analysis: Analysis, colors: dict[str, str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """HTML of the mechanism, token-level, probe and critical-γ sections, and their nav entries."""
    html_parts, nav = [], []
    for item in mechanism_report.sections(analysis, colors):
        if isinstance(item, mechanism_report.Absent):
            html_parts.append(_empty(item.note))
            continue
        body = "".join(f"<p>{_e(line)}</p>" for line in item.lines)
        body += "".join(_figure_html(fig, f"fig-{item.anchor}-{i}") for i, fig in enumerate(item.figures))
        for table in item.tables:
            caption = f'<p class="lead">{_e(table.caption)}</p>' if table.caption else ""
            rows = [([_e(cell) for cell in row], "") for row in table.rows]
            body += caption + f'<div class="scroll">{_table(list(table.header), rows)}</div>'
        html_parts.append(_section(item.anchor, item.title, body, _e(item.lead)))
        nav.append((item.anchor, item.title))
    return html_parts, nav


def render_report(analysis: Analysis) -> str:
    """The report as one HTML string."""
    colors = figures.group_colors(analysis.groups)
    table = analysis.table
    title = f"{'Scaling' if analysis.scaling else 'Task'} report: {table.name}"
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    scaling = analysis.scaling  # a task study (train.loss_on=answers) has no law to show
    sections, nav_items = [_section("summary", "Summary", _summary(analysis))], [("summary", "Summary")]

    def add(anchor: str, nav_title: str, title: str, body: str, lead: str = "") -> None:
        sections.append(_section(anchor, title, body, lead))
        nav_items.append((anchor, nav_title))

    if scaling:
        fig_n = figures.loss_figure(analysis, "N", colors)
        add(
            "loss-n",
            "Loss vs N",
            "Loss vs parameters",
            _figure_html(fig_n, "fig-loss-n") or _empty("No finished run with a usable N and loss."),
            "Points are runs; lines are fits of L(N) per group (darker: more tokens); bands are bootstrap intervals (largest D only when there are several slices).",
        )
        fig_d = figures.loss_figure(analysis, "D", colors)
        add(
            "loss-d",
            "Loss vs D",
            "Loss vs training tokens",
            _figure_html(fig_d, "fig-loss-d") or _empty("No finished run with a usable D and loss."),
            "Points are runs; lines are fits of L(D) per group (darker: larger models); bands are bootstrap intervals (largest N only when there are several slices).",
        )
        add(
            "gap",
            "Cell by cell",
            "Cell by cell",
            _gap_section(analysis, colors),
            "The paired loss gap in every (N, D) cell both settings ran, and its trend with scale: a comparison "
            "that needs no fitted law.",
        )
        add(
            "holdout",
            "Hold-out",
            "Hold-out prediction",
            _holdout_section(analysis, colors),
            "Each law refitted without its largest runs, extrapolated to them: does it predict the next scale?",
        )
        fig_x = figures.exponent_figure(analysis, colors)
        add(
            "exponents",
            "Exponents",
            "Exponents by group",
            _figure_html(fig_x, "fig-exponents") or _empty("No exponent was fitted."),
        )
        fig_iso = figures.isoflop_figure(analysis, colors)
        if fig_iso is not None:
            add("isoflop", "IsoFLOP", "IsoFLOP profiles", _figure_html(fig_iso, "fig-isoflop"))
    fig_t = figures.training_curves_figure(analysis, colors)
    add(
        "curves",
        "Training curves",
        "Training curves",
        _figure_html(fig_t, "fig-curves")
        or _empty("No loss histories in this input (a CSV carries final losses only)."),
    )
    if scaling:
        fig_r = figures.residuals_figure(analysis, colors)
        add(
            "residuals",
            "Residuals",
            "Residuals",
            _figure_html(fig_r, "fig-residuals") or _empty("No successful fit."),
            "A good fit leaves residuals scattered around 0 without a trend in N or D.",
        )
        add(
            "comparisons",
            "Comparisons",
            "Comparisons",
            _comparison_table(analysis, colors),
            "Every pair of groups for every exponent, form and slice. Multipliers are relative to the faster setting's largest measured scale.",
        )
    measured, measured_nav = _measurement_sections(analysis, colors)
    sections += measured
    nav_items += measured_nav
    if scaling:
        add(
            "fits",
            "Fits",
            "Fit table",
            _fit_table(analysis, colors),
            f"Point estimates with {analysis.ci_level:.0%} bootstrap intervals below them."
            if analysis.n_bootstrap
            else "",
        )
    add(
        "runs",
        "Runs",
        "Runs",
        _run_table(analysis, colors),
        "Failed, diverged and unfinished runs are listed (highlighted) and never fitted.",
    )
    add("method", "Method", "Method and notes", (_method(analysis) if scaling else "") + _notes(analysis))
    nav = "\n".join(f'<a href="#{a}">{t}</a>' for a, t in nav_items)
    meta = f"Source: {_e(table.source)} · generated {created} · bootstrap {analysis.n_bootstrap} resamples, seed {analysis.seed}"
    footer = "gammaray scaling report. Machine-readable results: <code>fit.json</code> and <code>fits.csv</code> beside this file."
    return html_page(title, meta, nav, sections, footer)


def html_page(title: str, meta: str, nav: str, sections: Sequence[str], footer: str) -> str:
    """A whole report page: plotly.js inlined once in the head (every figure shares it), the
    CSS, a header with ``meta``, the ``nav`` links, the sections and the footer. ``title`` is
    text; ``meta``, ``nav``, ``sections`` and ``footer`` are HTML, escaped by the caller."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<main>
<header><h1>{_e(title)}</h1>
<div class="meta">{meta}</div></header>
<nav>{nav}</nav>
{"".join(sections)}
<footer>{footer}</footer>
</main>
</body>
</html>
"""


def key_figures(analysis: Analysis) -> list[tuple[str, Any]]:
    """The report's main figures as (file stem, plotly figure), for export as images."""
    colors = figures.group_colors(analysis.groups)
    found = []
    if analysis.scaling:
        found += [
            ("loss-n", figures.loss_figure(analysis, "N", colors)),
            ("loss-d", figures.loss_figure(analysis, "D", colors)),
        ]
        found += [(f"gap-{i}", figures.gap_figure(gap, colors)) for i, gap in enumerate(analysis.gaps[:3])]
        found.append(("holdout", figures.holdout_figure(headline_predictions(analysis), colors)))
    found.append(("curves", figures.training_curves_figure(analysis, colors)))
    for item in mechanism_report.sections(analysis, colors):
        if not isinstance(item, mechanism_report.Absent):
            found += [(f"{item.anchor}-{i}", fig) for i, fig in enumerate(item.figures)]
    return [(name, fig) for name, fig in found if fig is not None]


def write_figures(
    analysis: Analysis, directory: str | Path, width: int = 900, height: int = 520
) -> list[Path]:
    """Write :func:`key_figures` as PNG files into ``directory`` (plotly's static export: it needs
    the kaleido package and a Chromium); return their paths."""
    try:
        import kaleido  # noqa: F401  (plotly's exporter; checked here for a clear error)
    except ImportError:
        raise AnalysisError(
            "--png: the static export needs the kaleido package (pip install kaleido) and a Chromium"
        ) from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in key_figures(analysis):
        path = directory / f"{name}.png"
        fig.write_image(path, width=width, height=max(height, int(fig.layout.height or 0)), scale=1)
        paths.append(path)
    return paths


def write_report(analysis: Analysis, path: str | Path) -> Path:
    """Write the report to ``path`` (directories created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(analysis), encoding="utf-8")
    return path
