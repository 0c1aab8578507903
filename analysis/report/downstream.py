"""The report's downstream section: ``gammaray eval`` scores against scale and loss, per setting."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.analyze import Analysis
from analysis.labels import format_ci, format_number
from analysis.measures.downstream import (
    SCORE,
    SIGNAL_STDERRS,
    LossLink,
    TaskScores,
    best_above_chance,
    downstream_tasks,
    has_signal,
    loss_link,
    task_gains,
    task_scores,
)
from analysis.report.figures import PALETTE, apply_layout
from analysis.report.sections import Absent, Section, Table

TITLE = "Downstream evaluation"


def downstream_section(analysis: Analysis, colors: dict[str, str]) -> Section | Absent:
    table = analysis.table
    tasks = downstream_tasks(table.histories)
    if not tasks:
        return Absent(
            TITLE, "no run has downstream scores (`gammaray eval --grid NAME --tasks ...` adds them)"
        )
    scores = [task_scores(table.runs, table.histories, analysis.by, task) for task in tasks]
    rows, lines = [], []
    for task_score in scores:
        gains = {
            g.group: g for g in task_gains(task_score, analysis.n_bootstrap, analysis.seed, analysis.ci_level)
        }
        for group in task_score.groups:
            members = task_score.runs[task_score.runs["group"] == group]
            gain = gains.get(group)
            rows.append(
                (
                    task_score.task,
                    str(group),
                    str(len(members)),
                    _mean_and_stderr(members),
                    format_number(task_score.chance) if task_score.chance is not None else "n/a",
                    f"{format_number(gain.value)} {format_ci(gain.ci)} ({gain.n_cells} cells)"
                    if gain
                    else "",
                )
            )
        lines.append(_signal_line(task_score))
    # A link from loss to accuracy says something only where accuracy rises above chance.
    links = [link for link in map(loss_link, filter(has_signal, scores)) if link is not None]
    tables = [
        Table(
            (
                "task",
                "group",
                "runs",
                f"mean {SCORE} ± s.e.",
                "chance",
                f"gain over the first group ({analysis.ci_level:.0%})",
            ),
            tuple(rows),
            "Mean over the runs scored; s.e. combines the harness's per-run standard errors. Gains are "
            "at matched (N, D) cells; their interval adds the documents' variance to a bootstrap's over "
            "cells and runs.",
        )
    ]
    if links:
        tables.append(
            Table(
                ("task", "k (per nat)", "L₀ (nats)", "RMS residual", "runs"),
                tuple(
                    (
                        lk.task,
                        format_number(lk.k),
                        format_number(lk.loss_mid),
                        format_number(lk.rms),
                        str(lk.n_runs),
                    )
                    for lk in links
                ),
                "acc = chance + (1 − chance) / (1 + exp(k (L − L₀))): accuracy as a sigmoid of the eval loss.",
            )
        )
    figures = [_scale_figure(scores, colors)]
    if links:
        figures.append(_link_figure(scores, links, colors))
    lead = (
        "Scores of lm-evaluation-harness on each finished run's final checkpoint (`gammaray eval`), "
        "log-likelihood multiple choice; the dashed line is chance."
    )
    return Section("downstream", TITLE, lead, tuple(figures), tuple(tables), tuple(lines))


def _mean_and_stderr(members) -> str:
    acc = members[SCORE].to_numpy(float)
    stderr = members[f"{SCORE}_stderr"].to_numpy(float)
    text = format_number(float(acc.mean()))
    if np.isfinite(stderr).all():
        text += f" ± {format_number(float(np.sqrt((stderr**2).sum()) / len(stderr)))}"
    return text


def _signal_line(scores: TaskScores) -> str:
    """Whether any group scores clearly above chance, in one sentence."""
    if scores.chance is None:
        return f"{scores.task}: no chance level logged; compare the groups only with each other."
    best = best_above_chance(scores)
    if best is None or best[1] < SIGNAL_STDERRS:
        return (
            f"{scores.task}: no group scores above chance ({format_number(scores.chance)}) by "
            f"{SIGNAL_STDERRS:g} standard errors: no signal at these sizes, and no link to the loss."
        )
    return f"{scores.task}: {best[0]} scores highest above chance ({best[1]:.1f} standard errors)."


def _group_trace(group: str, index: int, x, y, shown: set[str], colors: dict[str, str]) -> go.Scatter:
    """One group's markers, in its colour, named in the legend the first time it appears."""
    trace = go.Scatter(
        x=x,
        y=y,
        mode="markers",
        name=str(group),
        legendgroup=str(group),
        showlegend=group not in shown,
        marker_color=colors.get(group, PALETTE[index % len(PALETTE)]),
    )
    shown.add(group)
    return trace


def _scale_figure(scores: list[TaskScores], colors: dict[str, str]) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(scores), subplot_titles=[s.task for s in scores])
    shown: set[str] = set()
    for col, task_score in enumerate(scores, start=1):
        for i, group in enumerate(task_score.groups):
            members = task_score.runs[task_score.runs["group"] == group].sort_values("N")
            error_y = {"type": "data", "array": members[f"{SCORE}_stderr"].fillna(0)}
            trace = _group_trace(group, i, members["N"], members[SCORE], shown, colors)
            fig.add_trace(trace.update(error_y=error_y, mode="markers+lines"), row=1, col=col)
        if task_score.chance is not None:
            fig.add_hline(y=task_score.chance, line={"dash": "dash", "color": "#888"}, row=1, col=col)
    apply_layout(
        fig, f"{SCORE} against N (error bars: the harness's standard error)", "N", SCORE, log_y=False
    )
    return fig.update_xaxes(type="log")


def _link_figure(scores: list[TaskScores], links: list[LossLink], colors: dict[str, str]) -> go.Figure:
    by_task = {s.task: s for s in scores}
    fig = make_subplots(rows=1, cols=len(links), subplot_titles=[lk.task for lk in links])
    shown: set[str] = set()
    for col, link in enumerate(links, start=1):
        task_score = by_task[link.task]
        for i, group in enumerate(task_score.groups):
            members = task_score.runs[task_score.runs["group"] == group]
            trace = _group_trace(group, i, members["loss"], members[SCORE], shown, colors)
            fig.add_trace(trace, row=1, col=col)
        losses = task_score.runs["loss"].dropna()
        grid = np.linspace(losses.min(), losses.max(), 100)
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=link.predict(grid),
                mode="lines",
                line={"color": "#444"},
                name="sigmoid link",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
    return apply_layout(
        fig, f"{SCORE} against the final eval loss", "eval loss (nats)", SCORE, log_x=False, log_y=False
    )
