"""Report sections of the trainer's eval-time measurements: mechanism, tokens, probe, critical γ,
and the downstream scores of ``gammaray eval`` (``analysis.report.downstream``).

Each section is built only when the grid logged what it needs; otherwise an :class:`Absent`
says in one line why it is not there. Sections hold plotly figures and plain-text tables;
``analysis.report.scaling`` renders them like its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.analyze import Analysis
from analysis.fitting.bootstrap import percentile_ci
from analysis.labels import format_ci, format_number
from analysis.load import GAMMA_KEYS
from analysis.measures.critical_gamma import SPIKE_FACTOR, SPIKE_WINDOW, Best, critical_gamma
from analysis.measures.mechanism import (
    LEARNED_SEEN_ACCURACY,
    PROBE_METRICS,
    TOKEN_BUCKETS,
    Gain,
    condensation_summary,
    final_values,
    group_axis_title,
    metric_names,
    run_groups,
    token_gains,
    tokens_per_step,
)
from analysis.measures.phase_diagram import PHASE_METRICS, PhaseDiagram, phase_cells
from analysis.report.downstream import downstream_section
from analysis.report.figures import PALETTE, RunLines, apply_layout
from analysis.report.sections import Absent, Section, Table

MECHANISM_PANELS = (
    ("diag/condensation/all", "condensation (pairs with |cos| > threshold)"),
    ("diag/abs_cosine/all", "mean |cos| of neuron pairs"),
    ("diag/effective_rank_frac/all", "effective rank / min(m, n)"),
    ("diag/stable_rank/all", "stable rank"),
    ("diag/spectrum_top1/embed", "embedding: variance share of the top eigenvalue"),
    ("diag/attn_sink/all", "attention probability on the first token"),
    ("diag/norm_eps_share/all", "RMSNorm: share of the normalizer that ε takes"),
)
LOG_PANEL_SPAN = 1e3  # a history panel whose positive values span more than this gets a log axis
PROBE_TITLES = {
    "probe/seen_accuracy": "trained pairs: accuracy",
    "probe/heldout_compositional": "held-out pair: compositional answer",
    "probe/heldout_mirrored": "held-out pair: mirrored (memorized) answer",
}


def sections(analysis: Analysis, colors: dict[str, str]) -> list[Section | Absent]:
    """The measurement sections, in report order."""
    return [
        condensation(analysis, colors),
        token_level(analysis, colors),
        reasoning(analysis, colors),
        critical(analysis),
        downstream_section(analysis, colors),
    ]


# ---- mechanism ----------------------------------------------------------------------------------


def condensation(analysis: Analysis, colors: dict[str, str]) -> Section | Absent:
    title = "Mechanism: condensation"
    table, hist, by = analysis.table, analysis.table.histories, analysis.by
    panels = [(m, t) for m, t in MECHANISM_PANELS if m in set(metric_names(hist, "diag/"))]
    if not panels:
        return Absent(
            title, "no run logged diag/ metrics (the trainer logs them unless diag.enabled is false)"
        )
    figure = history_figure(analysis, colors, panels, "Weights over training (one line per run)")
    summary = condensation_summary(table.runs, hist, by, "diag/condensation/all")
    rows = tuple(
        (r.group, str(r.runs), format_number(r.peak), _percent(r.peak_at), format_number(r.final))
        for r in summary.itertuples()
    )
    tables = (
        (
            Table(
                ("group", "runs", "peak condensation", "peak at (share of training)", "final condensation"),
                rows,
            ),
        )
        if rows
        else ()
    )
    lead = (
        "Condensation: neurons (rows of a weight matrix) align. Each panel averages over the selected matrices; a peak "
        "above the final value that comes before the end is the condense-then-expand pattern. Definitions: docs/diagnostics.md."
    )
    return Section("mechanism", title, lead, (figure,), tables)


def history_figure(
    analysis: Analysis, colors: dict[str, str], panels: Sequence[tuple[str, str]], title: str
) -> go.Figure:
    """One panel per metric: its history for every run, colored by group, against tokens seen."""
    hist, runs = analysis.table.histories, analysis.table.runs
    groups, _, _ = run_groups(runs, analysis.by)
    state = runs.set_index("run_id")["state"]
    per_step = tokens_per_step(hist)
    columns = min(3, len(panels))
    n_rows = math.ceil(len(panels) / columns)
    fig = make_subplots(
        rows=n_rows,
        cols=columns,
        subplot_titles=[t for _, t in panels],
        horizontal_spacing=0.07,
        vertical_spacing=0.16,
    )
    shown: set[str] = set()
    log_panels: list[int] = []
    for i, (metric, _) in enumerate(panels):
        rows = hist[hist["metric"] == metric].sort_values(["run_id", "step"], kind="stable")
        lines: dict[tuple[str, bool], RunLines] = {}
        for run_id, points in rows.groupby("run_id", sort=True):
            label = groups.get(run_id, "")
            scale = per_step.get(run_id)
            run_lines = lines.setdefault((label, state.get(run_id) == "finished"), RunLines())
            run_lines.add(points["step"].to_numpy(float) * (scale if scale else 1.0), points["value"], run_id)
        for (label, finished), run_lines in lines.items():
            fig.add_trace(
                run_lines.trace(
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=label not in shown,
                    line={
                        "color": colors.get(label, PALETTE[0]),
                        "width": 1.4,
                        "dash": "solid" if finished else "dot",
                    },
                    marker={"size": 4},
                    opacity=0.85,
                    hovertemplate="%{text}<br>%{x:.3s}: %{y:.4g}<extra></extra>",
                ),
                row=i // columns + 1,
                col=i % columns + 1,
            )
            shown.add(label)
        values = rows["value"].to_numpy(float)
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() > LOG_PANEL_SPAN * values.min():
            log_panels.append(i)  # e.g. ε's share of the normalizer: 1e-12 and 0.4 in one panel
    x_title = "tokens seen" if per_step else "step"
    legend_rows = math.ceil(len(shown) / 2)
    apply_layout(fig, title, "", "", log_x=False, log_y=False, height=300 * n_rows + 80 + 22 * legend_rows)
    for i in log_panels:
        fig.update_yaxes(type="log", exponentformat="power", row=i // columns + 1, col=i % columns + 1)
    # Below the panels, not beside them: long group labels would squeeze the panels to slivers.
    fig.update_layout(legend={"orientation": "h", "x": 0, "y": -0.06, "yanchor": "top"})
    fig.update_layout(margin={"b": 60 + 22 * legend_rows})
    fig.update_xaxes(title_text=x_title)
    fig.update_annotations(font_size=12)
    return fig


# ---- token level --------------------------------------------------------------------------------


def token_level(analysis: Analysis, colors: dict[str, str]) -> Section | Absent:
    title = "Token-level"
    result = token_gains(
        analysis.table.runs,
        analysis.table.histories,
        analysis.by,
        analysis.n_bootstrap,
        seed=analysis.seed,
        level=analysis.ci_level,
    )
    if result is None:
        return Absent(
            title,
            "no finished run logged tokens/ metrics (the trainer logs them at its final eval unless diag.tokens is off)",
        )
    names = [c.removeprefix("tokens/loss/") for c in result.means.columns]
    mean_rows = tuple(
        (g, *(format_number(v) for v in row)) for g, row in zip(result.means.index, result.means.to_numpy())
    )
    means = Table(
        ("group", *names), mean_rows, "Mean final loss (nats) per bucket and role, over finished runs."
    )
    lines: tuple[str, ...] = ()
    figures: tuple[go.Figure, ...] = ()
    tables = [means]
    if result.gains:
        level = f"{analysis.ci_level:.0%} CI" if analysis.n_bootstrap else "no CI"
        tables.insert(
            0,
            Table(
                ("bucket or role", "group", "gain over " + result.reference, level, "(N, D) cells", "runs"),
                tuple(
                    (
                        g.metric.removeprefix("tokens/loss/"),
                        g.group,
                        format_number(g.value),
                        format_ci(g.ci),
                        str(g.n_cells),
                        str(g.n_runs),
                    )
                    for g in result.gains
                ),
                "Gain: the reference group's loss minus this group's, averaged over shared (N, D) cells (positive: lower loss).",
            ),
        )
        figures = (gain_figure(result.gains, colors, level),)
        context = [g for g in result.gains if g.metric == "tokens/loss/context"]
        lines = tuple(_gain_sentence(g) for g in context)
    else:
        lines = ("One group, or no (N, D) cell shared by two groups: no gains to compare.",)
    lead = (
        "Targets of the fixed eval set in buckets: trivial (a bigram baseline predicts them with p ≥ 0.5), "
        "context (not trivial; only wider context constrains them) and other; definitions in docs/diagnostics.md."
    )
    return Section("tokens", title, lead, figures, tuple(tables), lines)


def gain_figure(gains: Sequence[Gain], colors: dict[str, str], level: str) -> go.Figure:
    """Bars of each group's gain per bucket, with CI error bars."""
    fig = go.Figure()
    for group in dict.fromkeys(g.group for g in gains):
        bars = [
            next((g for g in gains if g.group == group and g.metric == f"tokens/loss/{b}"), None)
            for b in TOKEN_BUCKETS
        ]
        keep = [(b, g) for b, g in zip(TOKEN_BUCKETS, bars) if g is not None]
        if not keep:
            continue
        fig.add_trace(
            go.Bar(
                x=[b for b, _ in keep],
                y=[g.value for _, g in keep],
                name=f"{group} vs {keep[0][1].reference}",
                marker_color=colors.get(group, PALETTE[1]),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [max(g.ci[1] - g.value, 0) if math.isfinite(g.ci[1]) else 0 for _, g in keep],
                    "arrayminus": [
                        max(g.value - g.ci[0], 0) if math.isfinite(g.ci[0]) else 0 for _, g in keep
                    ],
                },
            )
        )
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    apply_layout(
        fig,
        f"Loss gain per token bucket (error bars: {level})",
        "bucket",
        "gain (nats)",
        log_x=False,
        log_y=False,
        height=400,
    )
    return fig.update_xaxes(type="category")


def _gain_sentence(gain: Gain) -> str:
    direction = "lower" if gain.value >= 0 else "higher"
    ci = format_ci(gain.ci)
    return (
        f"Context-constrained tokens: {gain.group} ends with a {direction} loss than {gain.reference} by "
        f"{format_number(abs(gain.value))} nats (gain {format_number(gain.value)}{' ' + ci if ci else ''}, "
        f"over {gain.n_cells} shared (N, D) cell(s))."
    )


# ---- reasoning probe ----------------------------------------------------------------------------


def reasoning(analysis: Analysis, colors: dict[str, str]) -> Section | Absent:
    title = "Reasoning probe"
    hist, runs, by = analysis.table.histories, analysis.table.runs, analysis.by
    present = [m for m in PROBE_METRICS if m in set(metric_names(hist, "probe/"))]
    if not present:
        return Absent(
            title,
            "no run logged probe/ metrics (they need the composite task in the data: "
            "data.source=composite or data.composite_fraction > 0)",
        )
    finished = runs[runs["state"] == "finished"]
    values = final_values(hist, present).reindex(finished["run_id"])
    groups, order, numeric = run_groups(finished, by)
    if "probe/seen_accuracy" in values:
        learned = values["probe/seen_accuracy"].groupby(groups).mean().max()
        if not learned >= LEARNED_SEEN_ACCURACY:
            return Absent(
                title,
                f"the models did not learn the composite task (trained-pair accuracy at most {learned:.2f} "
                f"in every group, below {LEARNED_SEEN_ACCURACY:.0%}): their held-out answers say nothing about "
                "reasoning against memorizing",
            )
    rng = np.random.default_rng(analysis.seed)
    rows = []
    for label in order:
        members = values.loc[groups.index[groups == label]]
        cells = [label, str(int(members.notna().any(axis=1).sum()))]
        for metric in present:
            cells.append(
                _mean_with_ci(
                    members[metric].dropna().to_numpy(), analysis.n_bootstrap, rng, analysis.ci_level
                )
            )
        rows.append(tuple(cells))
    table = Table(
        ("group", "runs", *(PROBE_TITLES[m] for m in present)),
        tuple(rows),
        f"Final values: mean over runs, {analysis.ci_level:.0%} bootstrap interval over runs below.",
    )
    figures = [probe_figure(values, groups, order, numeric, present, group_axis_title(by))]
    diagram = phase_cells(finished, values)
    lines = (diagram.summary(),) if diagram is not None else ()
    if diagram is not None:
        figures.append(phase_figure(diagram))
    if hist[hist["metric"].isin(present)].groupby("run_id")["step"].nunique().max() > 1:
        figures.append(
            history_figure(
                analysis,
                colors,
                [(m, PROBE_TITLES[m]) for m in present],
                "Probe over training (one line per run)",
            )
        )
    lead = (
        "Composite anchor task (Zhang et al., NeurIPS 2024): on the held-out pair, a model that composes the anchors answers "
        "the composition; one that memorized pairs as unordered answers the mirror pair's label."
    )
    return Section("probe", title, lead, tuple(figures), (table,), lines)


def probe_figure(
    values: pd.DataFrame,
    groups: pd.Series,
    order: Sequence[str],
    numeric: dict[str, float],
    present: Sequence[str],
    x_title: str,
) -> go.Figure:
    """Final probe rates against the grouping: runs as points, group means joined by lines."""
    fig = go.Figure()
    x_of = (lambda label: numeric[label]) if numeric else (lambda label: label)
    for i, metric in enumerate(present):
        color = PALETTE[i % len(PALETTE)]
        run_x = [x_of(groups[r]) for r in values.index]
        fig.add_trace(
            go.Scatter(
                x=run_x,
                y=values[metric],
                mode="markers",
                name=PROBE_TITLES[metric],
                legendgroup=metric,
                showlegend=False,
                marker={"color": color, "size": 6, "opacity": 0.45},
                hovertext=list(values.index),
            )
        )
        means = [values.loc[groups.index[groups == g], metric].mean() for g in order]
        fig.add_trace(
            go.Scatter(
                x=[x_of(g) for g in order],
                y=means,
                mode="lines+markers",
                name=PROBE_TITLES[metric],
                legendgroup=metric,
                line={"color": color, "width": 2},
                marker={"size": 9},
            )
        )
    apply_layout(
        fig,
        "Probe rates at the end of training (points: runs; lines: group means)",
        x_title,
        "share of prompts",
        log_x=False,
        log_y=False,
        height=420,
    )
    fig.update_yaxes(range=[-0.03, 1.03])
    return fig if numeric else fig.update_xaxes(type="category")


# ---- critical γ ---------------------------------------------------------------------------------

# A best γ between two values is only the better of the two: a sweep needs three.
MIN_GAMMAS_FOR_CRITICAL = 3


def critical(analysis: Analysis) -> Section | Absent:
    title = "Critical γ"
    hist, runs, by = analysis.table.histories, analysis.table.runs, analysis.by
    if not any(key in by for key in GAMMA_KEYS):
        return Absent(title, "the runs are not grouped by γ (init.gamma)")
    n_gamma = runs[list(by)].drop_duplicates().shape[0]
    if n_gamma < MIN_GAMMAS_FOR_CRITICAL:
        return Absent(
            title,
            f"a critical γ needs a sweep of at least {MIN_GAMMAS_FOR_CRITICAL} γ values; the grid holds {n_gamma}",
        )
    if hist.empty or not (hist["metric"] == "train/loss").any():
        return Absent(title, "no train/loss histories to judge stability by")
    result = critical_gamma(runs, hist, by, analysis.n_bootstrap, seed=analysis.seed, level=analysis.ci_level)
    t = result.table
    has_probe = t["probe/heldout_compositional"].notna().any()  # the table shows what was measured
    learned = result.probe_learned  # the figure draws it only where it means something
    header = [
        "group",
        "runs",
        "finished",
        "diverged",
        "runs with spikes",
        "spikes per run",
        "mean final loss",
    ]
    if has_probe:
        header += ["held-out compositional", "trained-pair accuracy"]
    rows = []
    for r in t.to_dict("records"):
        cells = [
            r["group"],
            str(r["runs"]),
            str(r["finished"]),
            str(r["diverged"]),
            str(r["spiky_runs"]),
            format_number(r["spikes"]),
            format_number(r["loss"]),
        ]
        if has_probe:
            cells += [
                format_number(r["probe/heldout_compositional"]),
                format_number(r["probe/seen_accuracy"]),
            ]
        rows.append(tuple(cells))
    lines = [
        s
        for s in (
            _best_sentence(result.best_loss, "lowest final loss", analysis.ci_level),
            _best_sentence(result.best_probe, "highest held-out compositional rate", analysis.ci_level),
        )
        if s
    ]
    lines += [f"Note: {n}." for n in result.notes]
    lead = (
        f"Final loss, reasoning and stability per γ. A run is unstable when it diverged (non-finite loss) or its train loss "
        f"spiked (a record above {SPIKE_FACTOR:g}× the median of the {SPIKE_WINDOW} before it). Best γ: compared over the "
        "(N, D) cells every candidate finished; by loss, only γ without diverged runs are candidates."
    )
    figure = critical_figure(t, by, learned, result.best_loss)
    return Section(
        "critical-gamma", title, lead, (figure,), (Table(tuple(header), tuple(rows)),), tuple(lines)
    )


def critical_figure(t: pd.DataFrame, by: Sequence[str], has_probe: bool, best: Best | None) -> go.Figure:
    """Final loss, held-out compositional rate and the share of unstable runs against γ."""
    numeric = t["gamma"].notna().all()
    x = t["gamma"].tolist() if numeric else t["group"].tolist()
    titles = [
        "mean final loss",
        *(["held-out compositional rate"] if has_probe else []),
        "unstable runs (share)",
    ]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.08)
    fig.add_trace(
        go.Scatter(x=x, y=t["loss"], mode="lines+markers", name="final loss", line={"color": PALETTE[0]}),
        row=1,
        col=1,
    )
    if has_probe:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=t["probe/heldout_compositional"],
                mode="lines+markers",
                name="held-out compositional",
                line={"color": PALETTE[2]},
            ),
            row=1,
            col=2,
        )
    runs = t["runs"].where(t["runs"] > 0)
    fig.add_trace(
        go.Bar(x=x, y=t["diverged"] / runs, name="diverged", marker_color=PALETTE[1]), row=1, col=len(titles)
    )
    fig.add_trace(
        go.Bar(x=x, y=t["spiky_runs"] / runs, name="with loss spikes", marker_color=PALETTE[4]),
        row=1,
        col=len(titles),
    )
    marked = best is not None and numeric and len(best.tied) == 1
    if marked:
        for col in range(1, len(titles) + 1):
            fig.add_vline(
                x=t.loc[t["group"] == best.label, "gamma"].iloc[0],
                line={"dash": "dash", "color": "#888"},
                row=1,
                col=col,
            )
    apply_layout(
        fig,
        "Critical γ" + (" (dashed: best γ by final loss)" if marked else ""),
        "",
        "",
        log_x=False,
        log_y=False,
        height=380,
    )
    fig.update_xaxes(title_text=group_axis_title(by), **({} if numeric else {"type": "category"}))
    fig.update_yaxes(range=[0, 1.05], row=1, col=len(titles))
    return fig


def _best_sentence(best: Best | None, what: str, level: float) -> str | None:
    if best is None:
        return None
    if len(best.tied) > 1:
        return f"Best by {what}: a tie between {', '.join(best.tied)}, over {best.n_cells} shared (N, D) cell(s)."
    text = f"Best by {what}: {best.label}, over {best.n_cells} shared (N, D) cell(s)"
    if best.frequency:
        draws = ", ".join(f"{g} {f:.0%}" for g, f in sorted(best.frequency.items(), key=lambda kv: -kv[1]))
        text += f"; best in bootstrap draws: {draws}"
    if best.value_ci is not None and all(math.isfinite(v) for v in best.value_ci):
        text += f"; {level:.0%} interval of the best γ: {format_ci(best.value_ci)}"
    return text + "."


def _mean_with_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float) -> str:
    if not len(values):
        return "n/a"
    text = format_number(float(values.mean()))
    if n_boot and len(values) > 1:
        draws = rng.choice(values, size=(n_boot, len(values))).mean(1)
        text += " " + format_ci(percentile_ci(draws, level))
    return text


def _percent(value: float) -> str:
    return f"{value:.0%}" if value == value else "n/a"


def phase_figure(diagram: PhaseDiagram) -> go.Figure:
    """Two heatmaps over γ (x) × depth (y), colour = mean rate, text = mean ± sd (n seeds)."""
    cells = diagram.cells
    fig = make_subplots(
        rows=1, cols=len(PHASE_METRICS), subplot_titles=list(PHASE_METRICS.values()), horizontal_spacing=0.12
    )
    for column, metric in enumerate(PHASE_METRICS, start=1):
        mean = cells[(metric, "mean")].unstack("gamma")
        spread = cells[(metric, "std")].unstack("gamma").fillna(0.0)
        count = cells[(metric, "count")].unstack("gamma")
        text = [
            [f"{m:.2f} ± {s:.2f} ({int(n)})" if pd.notna(m) else "" for m, s, n in zip(mr, sr, nr)]
            for mr, sr, nr in zip(mean.to_numpy(), spread.to_numpy(), count.fillna(0).to_numpy())
        ]
        fig.add_trace(
            go.Heatmap(
                x=[f"{g:g}" for g in mean.columns],
                y=[f"{int(d)}" for d in mean.index],
                z=mean.to_numpy(),
                text=text,
                texttemplate="%{text}",
                zmin=0.0,
                zmax=1.0,
                colorscale="Viridis",
                showscale=column == len(PHASE_METRICS),
                colorbar={"title": "rate"},
                hovertemplate="γ=%{x}, depth=%{y}: %{text}<extra></extra>",
            ),
            row=1,
            col=column,
        )
    apply_layout(
        fig,
        "Held-out pair over γ × depth (competent runs: mean ± sd over seeds, n in brackets)",
        "γ",
        "depth (layers)",
        log_x=False,
        log_y=False,
        height=440,
    )
    return fig.update_xaxes(type="category").update_yaxes(type="category")
