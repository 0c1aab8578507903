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
import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis.analyze import Analysis, plain_value
from analysis.errors import AnalysisError
from analysis.fitting.fit import FORM_PARAMS, HUBER_DELTA
from analysis.labels import (
    FORM_TITLES,
    PARAM_SYMBOLS,
    format_axis_value,
    format_ci,
    format_number,
    group_label,
    slice_label,
)
from analysis.report import figures, measurements, page
from analysis.summary import headline_predictions, holdout_line, summary_lines


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
    if table.selection is not None:
        facts += (
            f" Each point is at its best {', '.join(table.selection.keys)}: {len(runs)} of "
            f"{table.selection.runs_before} runs kept (the notes say which value each point kept)."
        )
    lines = summary_lines(analysis)
    significant = analysis.verdict is not None and analysis.verdict.significant
    paragraphs = [
        f'<p class="{"sig" if i == 0 and significant else ""}">{page.escape(line)}</p>'
        for i, line in enumerate(lines)
    ]
    return f'<div class="verdict">{"".join(paragraphs)}</div><p class="lead">{page.escape(facts)}</p>'


def _gap_section(analysis: Analysis, colors: dict[str, str]) -> str:
    if not analysis.gaps:
        return page.empty("No two groups ran the same (N, D) cells: nothing to compare cell by cell.")
    body = []
    for i, gap in enumerate(analysis.gaps):
        one, two = group_label(gap.first), group_label(gap.second)
        body.append(f"<p>{page.escape(gap.text)}</p>")
        if i < 3:  # beyond three pairs the figures repeat what the table says
            body.append(page.figure(figures.gap_figure(gap, colors), f"fig-gap-{i}"))
        rows = [
            (
                [
                    page.escape(format_axis_value("N", c.n_params)),
                    page.escape(format_axis_value("D", c.tokens)),
                    page.escape(f"{c.first_loss:.4f}"),
                    page.escape(f"{c.second_loss:.4f}"),
                    page.escape(f"{c.gap:+.4f}")
                    + (f"<br><small>{page.escape(format_ci(c.ci))}</small>" if c.ci else ""),
                    str(c.n_seeds),
                ],
                "",
            )
            for c in gap.cells
        ]
        trends = "".join(
            f"<li>trend with {page.escape(TREND_NOUNS[t.axis])}: {page.escape(format_number(t.slope))} nats per decade "
            f"{page.escape(format_ci(t.ci)) or '(no interval)'}{' at fixed ' + page.escape(', '.join(t.controls)) if t.controls else ''}</li>"
            for t in gap.trends
        )
        body.append(
            f"<details><summary>{len(gap.cells)} cells of {page.escape(one)} vs {page.escape(two)}; trends</summary>"
            + page.table(
                ["N", "D", f"loss {page.escape(one)}", f"loss {page.escape(two)}", "gap", "seeds"], rows
            )
            + (f'<ul class="notes">{trends}</ul>' if trends else "")
            + "</details>"
        )
    return "".join(body)


def _holdout_section(analysis: Analysis, colors: dict[str, str]) -> str:
    if analysis.holdout_mode == "none":
        return page.empty(
            "No hold-out check: it needs at least four distinct N per group (or --holdout largest-d|largest-c)."
        )
    line = holdout_line(analysis)
    body = f"<p>{page.escape(line)}</p>" if line else ""
    if not analysis.holdout:
        return body
    body += page.figure(figures.holdout_figure(headline_predictions(analysis), colors), "fig-holdout")
    rows = []
    for p in analysis.holdout:
        inside = "" if p.inside is None else ("yes" if p.inside else "no")
        rows.append(
            (
                [
                    page.swatch(group_label(p.group), colors),
                    page.escape(p.form),
                    page.escape(slice_label(p.slice) or "all"),
                    page.escape(format_axis_value("N", p.n_params)),
                    page.escape(format_axis_value("D", p.tokens)),
                    str(p.n_fitted),
                    page.escape(f"{p.predicted:.4f}"),
                    page.escape(f"{p.actual:.4f}"),
                    page.escape(f"{p.relative_error:+.2%}"),
                    page.escape(format_ci(p.interval, 4)),
                    page.escape(inside),
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
    return body + page.table(header, rows, left=(0, 1, 2))


TREND_NOUNS = {"N": "N", "D": "D", "FLOPs": "compute"}


def _fit_table(analysis: Analysis, colors: dict[str, str]) -> str:
    if not analysis.fits:
        return page.empty("No fits.")
    names = ["E", "A", "alpha", "B", "beta", "a", "b"]
    names = [p for p in names if any(p in FORM_PARAMS[f.form] for f in analysis.fits)]
    header = ["group", "form", "slice", "n"] + [PARAM_SYMBOLS[p] for p in names] + ["status"]
    rows = []
    for f in analysis.fits:
        form = f.form + ("" if f.e_mode == "per-group" or f.form == "isoflop" else f" (E {f.e_mode})")
        cells = [
            page.swatch(group_label(f.group), colors),
            page.escape(form),
            page.escape(slice_label(f.slice) or "all"),
            str(f.n_points),
        ]
        for p in names:
            value = f.params.get(p, math.nan)
            if value is None or not math.isfinite(value):
                cells.append("")
                continue
            ci = format_ci(f.ci.get(p))
            cells.append(
                page.escape(format_number(value)) + (f"<br><small>{page.escape(ci)}</small>" if ci else "")
            )
        status = (
            "ok"
            if f.ok
            else (
                "partial" if any(np.isfinite(v) for v in f.params.values() if v is not None) else "not fitted"
            )
        )
        note = "; ".join(f.messages)
        cells.append(page.escape(status) + (f"<br><small>{page.escape(note)}</small>" if note else ""))
        rows.append((cells, "" if f.ok else "partial"))
    return page.table(header, rows, left=(0, 1, 2, len(header) - 1))


def _comparison_table(analysis: Analysis, colors: dict[str, str]) -> str:
    if not analysis.comparisons:
        return page.empty("Fewer than two groups were fitted with the same form: nothing to compare.")
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
            + (f" <small>{page.escape(format_ci(m.ci))}</small>" if m.ci else "")
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
                    page.escape(c.form),
                    page.escape(slice_label(c.slice) or "all"),
                    page.escape(PARAM_SYMBOLS[c.exponent]),
                    page.swatch(group_label(c.first), colors),
                    page.escape(format_number(c.first_value))
                    + f"<br><small>{page.escape(format_ci(c.first_ci))}</small>",
                    page.swatch(group_label(c.second), colors),
                    page.escape(format_number(c.second_value))
                    + f"<br><small>{page.escape(format_ci(c.second_ci))}</small>",
                    page.escape(format_number(c.difference))
                    + f"<br><small>{page.escape(format_ci(c.difference_ci))}</small>",
                    f"<b>{page.escape(verdict)}</b>" if c.faster is not None else page.escape(verdict),
                    mult or "",
                    cross,
                ],
                "",
            )
        )
    return page.table(header, rows, left=(0, 1, 2, 3, 5, 8, 10))


def _run_table(analysis: Analysis, colors: dict[str, str]) -> str:
    runs = analysis.table.runs
    extra = [a for a in analysis.table.axes if a not in analysis.by and a not in ("N", "D", "FLOPs")][:6]
    header = ["run", "state", *analysis.by, "N", "D", "FLOPs", "final loss", *extra, "reason"]
    rows = []
    order = runs.sort_values(
        ["state", *analysis.by, "N", "D"],
        key=lambda s: s.map(lambda v: v != "finished") if s.name == "state" else s,
    )
    for row in order.to_dict("records"):
        group = {c: plain_value(row[c]) for c in analysis.by}
        state = row["state"]
        loss = row["loss"]
        reason = row["reason"] if isinstance(row["reason"], str) else ""
        cells = [page.escape(row["run_id"]), page.escape(state)]
        cells += [page.escape(group_label({c: group[c]}).split("=", 1)[-1]) for c in analysis.by]
        cells += [
            page.escape(format_axis_value("N", row["N"])),
            page.escape(format_axis_value("D", row["D"])),
            page.escape(format_axis_value("FLOPs", row["FLOPs"])),
            page.escape(f"{loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else "—"),
        ]
        cells += [page.escape(plain_value(row[a])) for a in extra]
        cells.append(page.escape(reason))
        rows.append((cells, "" if state == "finished" else "failed"))
    table = page.table(header, rows, left=(0, 1, len(header) - 1))
    return f'<div class="scroll">{table}</div>'


def _notes(analysis: Analysis) -> str:
    notes = list(analysis.messages)
    for f in analysis.fits:
        where = f"{group_label(f.group)}, {f.form}" + (f" at {slice_label(f.slice)}" if f.slice else "")
        notes += [f"{where}: {m}" for m in f.messages]
    if not notes:
        return page.empty("No warnings.")
    items = "".join(f"<li>{page.escape(n)}</li>" for n in notes)
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
    runs = analysis.table.runs
    n_branches = int(runs["_branch"].notna().sum()) if "_branch" in runs.columns else 0
    branches = (
        f" {n_branches} of the {len(runs)} runs were WSD branches: each resumed from its trunk's checkpoint at "
        "its own decay start and trained only its decay, which gives the losses it has trained alone "
        "(docs/orchestrator.md, WSD branching)."
        if n_branches
        else ""
    )
    return (
        "<p>Each group's runs are fitted with the parametric forms "
        "L(N) = E + A·N<sup>−α</sup> (at fixed D, or along the grid's D schedule), L(D) = E + B·D<sup>−β</sup> (at fixed N) and "
        "L(N, D) = E + A·N<sup>−α</sup> + B·D<sup>−β</sup>, N being the number of parameters and D the number of training tokens. "
        f"{page.escape(e_text)} Following Hoffmann et al. (2022) and the replication of Besiroglu et al. (2024), each fit minimizes the Huber loss "
        f"(δ = {HUBER_DELTA:g}) of log-space residuals, with the prediction written as a log-sum-exp of log-parameterized terms, "
        "by L-BFGS-B with analytic gradients from a grid of starting points; the best optimum is kept. "
        "IsoFLOP fits (approach 2) take the minimum of a parabola in log N per compute budget and regress log N* on log C. "
        f"{boot} A setting <em>descends faster</em> when its exponent is larger and the interval of the difference excludes 0, "
        "or, failing that, when the paired loss gap moves toward it as scale grows (a least-squares slope over the cells with a "
        "t-interval). The hold-out check refits each law without its largest runs and predicts them; its interval combines the "
        "refit's bootstrap with the scatter of its residuals. "
        "The effective-compute multiplier is how many times more parameters (tokens, compute) the slower setting needs to reach the "
        "faster setting's fitted loss at the largest scale the faster setting measured."
        f"{page.escape(branches)}</p>"
    )


def _measurement_sections(
    analysis: Analysis, colors: dict[str, str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """HTML of the mechanism, token-level, probe and critical-γ sections, and their nav entries."""
    html_parts, nav = [], []
    for item in measurements.sections(analysis, colors):
        if isinstance(item, measurements.Absent):
            html_parts.append(page.empty(item.note))
            continue
        body = "".join(f"<p>{page.escape(line)}</p>" for line in item.lines)
        body += "".join(page.figure(fig, f"fig-{item.anchor}-{i}") for i, fig in enumerate(item.figures))
        for table in item.tables:
            caption = f'<p class="lead">{page.escape(table.caption)}</p>' if table.caption else ""
            rows = [([page.escape(cell) for cell in row], "") for row in table.rows]
            body += caption + f'<div class="scroll">{page.table(list(table.header), rows)}</div>'
        html_parts.append(page.section(item.anchor, item.title, body, page.escape(item.lead)))
        nav.append((item.anchor, item.title))
    return html_parts, nav


def render_report(analysis: Analysis) -> str:
    """The report as one HTML string."""
    colors = figures.group_colors(analysis.groups)
    table = analysis.table
    title = f"{'Scaling' if analysis.scaling else 'Task'} report: {table.name}"
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    scaling = analysis.scaling  # a task study (train.loss_on=answers) has no law to show
    sections, nav_items = [page.section("summary", "Summary", _summary(analysis))], [("summary", "Summary")]

    def add(anchor: str, nav_title: str, title: str, body: str, lead: str = "") -> None:
        sections.append(page.section(anchor, title, body, lead))
        nav_items.append((anchor, nav_title))

    if scaling:
        fig_n = figures.loss_figure(analysis, "N", colors)
        add(
            "loss-n",
            "Loss vs N",
            "Loss vs parameters",
            page.figure(fig_n, "fig-loss-n") or page.empty("No finished run with a usable N and loss."),
            "Points are runs; lines are fits of L(N) per group (darker: more tokens); bands are bootstrap intervals (largest D only when there are several slices).",
        )
        fig_d = figures.loss_figure(analysis, "D", colors)
        add(
            "loss-d",
            "Loss vs D",
            "Loss vs training tokens",
            page.figure(fig_d, "fig-loss-d") or page.empty("No finished run with a usable D and loss."),
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
            page.figure(fig_x, "fig-exponents") or page.empty("No exponent was fitted."),
        )
        fig_iso = figures.isoflop_figure(analysis, colors)
        if fig_iso is not None:
            add("isoflop", "IsoFLOP", "IsoFLOP profiles", page.figure(fig_iso, "fig-isoflop"))
    fig_t = figures.training_curves_figure(analysis, colors)
    add(
        "curves",
        "Training curves",
        "Training curves",
        page.figure(fig_t, "fig-curves")
        or page.empty("No loss histories in this input (a CSV carries final losses only)."),
    )
    if scaling:
        fig_r = figures.residuals_figure(analysis, colors)
        add(
            "residuals",
            "Residuals",
            "Residuals",
            page.figure(fig_r, "fig-residuals") or page.empty("No successful fit."),
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
    meta = f"Source: {page.escape(table.source)} · generated {created} · bootstrap {analysis.n_bootstrap} resamples, seed {analysis.seed}"
    footer = "gammaray scaling report. Machine-readable results: <code>fit.json</code> and <code>fits.csv</code> beside this file."
    return page.document(title, meta, nav, sections, footer)


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
    for item in measurements.sections(analysis, colors):
        if not isinstance(item, measurements.Absent):
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
