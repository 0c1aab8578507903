"""Plotly figures of a finished analysis. Every figure takes results and runs, never fitter state.

Colors are fixed per group across all figures; axes of losses, sizes and tokens are log-log;
bootstrap bands are shaded fills between the pointwise percentile curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.analyze import Analysis, plain_value
from analysis.fitting.fit import FitResult
from analysis.fitting.gap import GapComparison
from analysis.fitting.holdout import HoldoutPrediction
from analysis.labels import (
    AXIS_SYMBOLS,
    FORM_TITLES,
    PARAM_SYMBOLS,
    format_axis_value,
    group_label,
    slice_label,
)

# Okabe & Ito's colour-blind-safe palette (yellow dropped: unreadable on white).
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#882255",
    "#44AA99",
    "#999933",
)
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
AXIS_TITLES = {
    "N": "parameters N",
    "D": "training tokens D",
    "FLOPs": "training compute C (FLOPs)",
    "step": "step",
    "tokens": "tokens seen",
}


def group_colors(groups: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A color per group label, in the order the groups are given."""
    return {group_label(g): PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}


class RunLines:
    """Many runs' lines as one trace: each run's points followed by a gap (NaN breaks the line).

    A group's runs in one trace rather than a trace per run: a large grid would otherwise
    make thousands of traces, slow to build and to draw. The hover text names each point's run.
    """

    def __init__(self) -> None:
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._text: list[str] = []

    def add(self, x: np.ndarray, y: np.ndarray, text: str) -> None:
        """One run's line, its points hovering as ``text``."""
        self._x += [np.asarray(x, float), np.array([np.nan])]
        self._y += [np.asarray(y, float), np.array([np.nan])]
        self._text += [text] * (len(x) + 1)

    def trace(self, **style: Any) -> go.Scatter:
        """The lines as one scatter trace; ``%{text}`` in a hover template is the run's text."""
        return go.Scatter(x=np.concatenate(self._x), y=np.concatenate(self._y), text=self._text, **style)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def apply_layout(
    fig: go.Figure,
    title: str,
    x_title: str,
    y_title: str,
    log_x: bool = True,
    log_y: bool = True,
    height: int = 460,
) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        font={"family": FONT, "size": 12, "color": "#222"},
        height=height,
        margin={"l": 70, "r": 20, "t": 50, "b": 60},
        legend={"bgcolor": "rgba(255,255,255,0.8)", "bordercolor": "#ddd", "borderwidth": 1},
        hoverlabel={"font": {"family": FONT}},
    )
    axis = {
        "showline": True,
        "linecolor": "#444",
        "mirror": True,
        "ticks": "outside",
        "gridcolor": "#eee",
        "zeroline": False,
    }
    fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear", **axis)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", **axis)
    return fig


def _span(values: np.ndarray, pad: float = 1.3, count: int = 120) -> np.ndarray:
    values = values[np.isfinite(values) & (values > 0)]
    return np.geomspace(values.min() / pad, values.max() * pad, count)


def _group_of(row: pd.Series, by: Sequence[str]) -> dict[str, Any]:
    return {c: plain_value(row[c]) for c in by}


def _add_curve(
    fig: go.Figure,
    fit: FitResult,
    x: np.ndarray,
    y: np.ndarray,
    band: tuple | None,
    color: str,
    name: str,
    legendgroup: str,
    opacity: float,
    show_legend: bool,
    **position: Any,
) -> None:
    if band is not None:
        lo, hi = band
        fig.add_trace(
            go.Scatter(
                x=x,
                y=hi,
                mode="lines",
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=legendgroup,
            ),
            **position,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=lo,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_rgba(color, 0.14 * opacity + 0.04),
                hoverinfo="skip",
                showlegend=False,
                legendgroup=legendgroup,
            ),
            **position,
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name=name,
            legendgroup=legendgroup,
            showlegend=show_legend,
            line={"color": color, "width": 2},
            opacity=max(opacity, 0.35),
            hovertemplate=f"{name}<br>%{{x:.3s}}: loss %{{y:.4f}}<extra>fit</extra>",
        ),
        **position,
    )


def loss_figure(analysis: Analysis, axis: str, colors: dict[str, str]) -> go.Figure | None:
    """Final loss vs N (or D) per group: runs as points, fitted curves with CI bands."""
    form = "n" if axis == "N" else "d"
    other = "D" if axis == "N" else "N"
    finished = analysis.table.finished
    finished = finished[np.isfinite(finished[axis].astype(float)) & (finished["loss"].astype(float) > 0)]
    if finished.empty:
        return None
    fig = go.Figure()
    fits = [f for f in analysis.fits if f.form == form and f.ok]
    fallback = not fits
    if fallback:
        fits = [f for f in analysis.fits if f.form == "joint" and f.ok]
    seen: set[str] = set()
    for fit in fits:
        label = group_label(fit.group)
        color = colors.get(label, PALETTE[0])
        xs = fit.n_params if axis == "N" else fit.tokens
        if not np.isfinite(xs).any():
            continue
        x = _span(xs)
        if fit.form == "joint":
            ref = float(np.nanmax(fit.tokens if axis == "N" else fit.n_params))
            kwargs = (
                {"n_params": x, "tokens": np.full_like(x, ref)}
                if axis == "N"
                else {"n_params": np.full_like(x, ref), "tokens": x}
            )
            name = f"{label}: joint fit at {other}={format_axis_value(other, ref)}"
        else:
            kwargs = {"n_params": x} if axis == "N" else {"tokens": x}
            name = label + (f", {slice_label(fit.slice)}" if fit.slice else "")
        slices = sorted({v for f in fits if f.group == fit.group for v in f.slice.values()})
        rank = slices.index(next(iter(fit.slice.values()))) if fit.slice else len(slices) - 1
        opacity = 1.0 if len(slices) <= 1 else 0.35 + 0.65 * rank / (len(slices) - 1)
        # With many slices, overlapping bands turn to mud: shade only the largest slice.
        band = fit.band(**kwargs) if len(slices) <= 2 or rank == len(slices) - 1 else None
        _add_curve(fig, fit, x, fit.predict(**kwargs), band, color, name, label, opacity, True)
        seen.add(label)
    for group, rows in _group_rows(finished, analysis.by):
        label = group_label(group)
        color = colors.get(label, PALETTE[0])
        hover = [
            f"{r.run_id}<br>N={format_axis_value('N', r.N)}, D={format_axis_value('D', r.D)}<br>loss {r.loss:.4f}"
            for r in rows.itertuples()
        ]
        fig.add_trace(
            go.Scatter(
                x=rows[axis],
                y=rows["loss"],
                mode="markers",
                name=f"{label} runs",
                legendgroup=label,
                showlegend=label not in seen,
                marker={"color": color, "size": 8, "line": {"color": "white", "width": 1}},
                text=hover,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    title = f"Final loss vs {axis}: {FORM_TITLES[form]}" + (" (joint fit shown)" if fallback and fits else "")
    apply_layout(fig, title, AXIS_TITLES[axis], "final eval loss (nats)")
    # The axes follow the runs, not the bands: a wide band at an extrapolated end would
    # otherwise squash every point into a sliver.
    losses = finished["loss"].to_numpy(float)
    fig.update_yaxes(range=[math.log10(losses.min() / 1.12), math.log10(losses.max() * 1.12)])
    return fig


def _group_rows(frame: pd.DataFrame, by: Sequence[str]):
    if not by:
        yield {}, frame
        return
    for key, rows in frame.groupby(list(by), dropna=False, sort=True):
        values = key if isinstance(key, tuple) else (key,)
        yield {c: plain_value(v) for c, v in zip(by, values)}, rows


def _group_x(groups: Sequence[dict[str, Any]]) -> tuple[list, str, bool]:
    """x positions for groups: the numeric value of a single numeric grouping column, else labels."""
    if len(groups) and all(len(g) == 1 for g in groups):
        key = next(iter(groups[0]))
        values = [g[key] for g in groups]
        if all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v)
            for v in values
        ):
            return values, AXIS_SYMBOLS.get(key, key), True
    return [group_label(g) for g in groups], "group", False


def exponent_figure(analysis: Analysis, colors: dict[str, str]) -> go.Figure | None:
    """Each exponent against the grouping, with CI error bars."""
    series: dict[tuple[str, str], list[FitResult]] = {}
    for fit in analysis.fits:
        if not fit.ok:
            continue
        for p in ("alpha", "beta", "a"):
            if p in fit.fitted_names:
                series.setdefault((fit.form, p), []).append(fit)
    if not series:
        return None
    fig = go.Figure()
    styles = {
        ("joint", "alpha"): ("circle", "#0072B2"),
        ("joint", "beta"): ("square", "#D55E00"),
        ("n", "alpha"): ("circle-open", "#0072B2"),
        ("d", "beta"): ("square-open", "#D55E00"),
        ("isoflop", "a"): ("diamond", "#009E73"),
    }
    numeric = False
    x_title = "group"
    for (form, p), fits in series.items():
        # One slice per series: the largest, where the fit is closest to the regime that matters.
        if any(f.slice for f in fits):
            top = max(next(iter(f.slice.values())) for f in fits)
            fits = [f for f in fits if next(iter(f.slice.values())) == top]
            where = f" at {slice_label(fits[0].slice)}"
        else:
            where = ""
        groups = [f.group for f in fits]
        x, x_title, numeric = _group_x(groups)
        y = [f.params[p] for f in fits]
        lo = [y_i - f.ci[p][0] if p in f.ci and math.isfinite(f.ci[p][0]) else 0 for y_i, f in zip(y, fits)]
        hi = [f.ci[p][1] - y_i if p in f.ci and math.isfinite(f.ci[p][1]) else 0 for y_i, f in zip(y, fits)]
        symbol, color = styles.get((form, p), ("circle", "#444"))
        name = f"{PARAM_SYMBOLS[p]} ({form}{where})"
        order = np.argsort(x) if numeric else np.arange(len(x))
        fig.add_trace(
            go.Scatter(
                x=[x[i] for i in order],
                y=[y[i] for i in order],
                mode="markers+lines" if numeric else "markers",
                name=name,
                marker={"symbol": symbol, "size": 10, "color": color, "line": {"width": 1.5, "color": color}},
                line={"color": color, "width": 1, "dash": "dot"},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [hi[i] for i in order],
                    "arrayminus": [lo[i] for i in order],
                    "color": color,
                    "thickness": 1.5,
                    "width": 6,
                },
                hovertemplate=f"{name}<br>%{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )
    level = f"{analysis.ci_level:.0%} CI" if analysis.n_bootstrap else "no bootstrap"
    return apply_layout(
        fig,
        f"Exponents by group (error bars: {level})",
        x_title,
        "exponent",
        log_x=False,
        log_y=False,
        height=420,
    )


def training_curves_figure(analysis: Analysis, colors: dict[str, str]) -> go.Figure | None:
    """Loss histories of every run (eval loss where logged, else train loss), per group color."""
    hist = analysis.table.histories
    if hist is None or hist.empty:
        return None
    runs = analysis.table.runs.set_index("run_id")
    metric = "eval/loss" if (hist["metric"] == "eval/loss").any() else "train/loss"
    curves = hist[hist["metric"] == metric]
    tokens = hist[hist["metric"] == "tokens"]
    token_map = {(r.run_id, r.step): r.value for r in tokens.itertuples()}
    use_tokens = not tokens.empty
    fig = go.Figure()
    lines: dict[tuple[str, bool], RunLines] = {}
    for run_id, points in curves.groupby("run_id", sort=True):
        if run_id not in runs.index:
            continue
        row = runs.loc[run_id]
        label = group_label({c: plain_value(row[c]) for c in analysis.by})
        points = points.sort_values("step")
        x = (
            np.array([token_map.get((run_id, s), np.nan) for s in points["step"]], float)
            if use_tokens
            else points["step"].to_numpy(float)
        )
        good = np.isfinite(x) & (x > 0)
        if good.any():
            state = row["state"]
            text = f"{run_id} ({state})<br>N={format_axis_value('N', row['N'])}"
            run_lines = lines.setdefault((label, state == "finished"), RunLines())
            run_lines.add(x[good], points["value"].to_numpy(float)[good], text)
    shown: set[str] = set()
    # Finished runs first, so each group's legend entry shows a solid line.
    for (label, finished), run_lines in sorted(lines.items(), key=lambda item: not item[0][1]):
        fig.add_trace(
            run_lines.trace(
                mode="lines",
                name=label,
                legendgroup=label,
                showlegend=label not in shown,
                line={
                    "color": colors.get(label, PALETTE[0]),
                    "width": 1.4,
                    "dash": "solid" if finished else "dot",
                },
                opacity=0.85,
                hovertemplate="%{text}<br>%{x:.3s}: %{y:.4f}<extra></extra>",
            )
        )
        shown.add(label)
    if not fig.data:
        return None
    return apply_layout(
        fig,
        f"Training curves ({metric}; dotted: not finished)",
        AXIS_TITLES["tokens" if use_tokens else "step"],
        metric,
    )


def residuals_figure(analysis: Analysis, colors: dict[str, str]) -> go.Figure | None:
    """log(observed / fitted) for every point of every fit, one panel per form."""
    forms = [
        f
        for f in ("n", "d", "joint", "isoflop")
        if any(x.form == f and x.ok and x.residuals.size for x in analysis.fits)
    ]
    if not forms:
        return None
    fig = make_subplots(
        rows=1,
        cols=len(forms),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[FORM_TITLES[f].split(":")[0].split(" = ")[0] for f in forms],
    )
    shown: set[str] = set()
    for col, form in enumerate(forms, start=1):
        for fit in (f for f in analysis.fits if f.form == form and f.ok):
            label = group_label(fit.group)
            x = fit.tokens if form == "d" else fit.n_params
            good = np.isfinite(fit.residuals)
            if not good.any():
                continue
            hover = [f"{rid}<br>{slice_label(fit.slice)}" for rid in np.asarray(fit.run_ids)[good]]
            fig.add_trace(
                go.Scatter(
                    x=x[good],
                    y=fit.residuals[good],
                    mode="markers",
                    name=label,
                    legendgroup=label,
                    showlegend=label not in shown,
                    text=hover,
                    marker={"color": colors.get(label, PALETTE[0]), "size": 7, "opacity": 0.8},
                    hovertemplate="%{text}<br>%{x:.3s}: %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            shown.add(label)
        fig.add_hline(y=0, line={"color": "#888", "width": 1}, row=1, col=col)
        fig.update_xaxes(title_text=AXIS_TITLES["D" if form == "d" else "N"], row=1, col=col)
    apply_layout(fig, "Residuals: log(observed / fitted loss)", "", "", log_y=False, height=400)
    for col, form in enumerate(forms, start=1):
        fig.update_xaxes(title_text=AXIS_TITLES["D" if form == "d" else "N"], row=1, col=col)
    fig.update_yaxes(title_text="log residual", row=1, col=1)
    return fig


def isoflop_figure(analysis: Analysis, colors: dict[str, str]) -> go.Figure | None:
    """IsoFLOP profiles (loss vs N per budget, with parabolas) and N*(C) with its power law."""
    fits = [f for f in analysis.fits if f.form == "isoflop" and f.extra.get("slices")]
    if not fits:
        return None
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=["IsoFLOP profiles: loss vs N per budget", "Compute-optimal N*(C)"],
    )
    for fit in fits:
        label = group_label(fit.group)
        color = colors.get(label, PALETTE[0])
        slices = fit.extra["slices"]
        fig.add_trace(
            go.Scatter(
                x=fit.n_params,
                y=fit.loss,
                mode="markers",
                name=label,
                legendgroup=label,
                marker={"color": color, "size": 7, "opacity": 0.75},
                hovertemplate="N %{x:.3s}: loss %{y:.4f}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        for s in slices:
            if s.coef_n is None:
                continue
            x = np.geomspace(s.n_range[0] / 1.2, s.n_range[1] * 1.2, 60)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=np.polyval(s.coef_n, np.log(x)),
                    mode="lines",
                    legendgroup=label,
                    showlegend=False,
                    line={"color": color, "width": 1.5},
                    hovertemplate=f"C={s.train_flops:.2e}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        good = [s for s in slices if s.ok]
        if good:
            fig.add_trace(
                go.Scatter(
                    x=[s.train_flops for s in good],
                    y=[s.n_opt for s in good],
                    mode="markers",
                    legendgroup=label,
                    showlegend=False,
                    marker={"color": color, "size": 9, "symbol": "diamond"},
                    hovertemplate="C %{x:.2e}: N* %{y:.3s}<extra></extra>",
                ),
                row=1,
                col=2,
            )
        if fit.ok:
            c = np.geomspace(min(s.train_flops for s in good) / 2, max(s.train_flops for s in good) * 2, 50)
            fig.add_trace(
                go.Scatter(
                    x=c,
                    y=fit.params["N_coef"] * c ** fit.params["a"],
                    mode="lines",
                    legendgroup=label,
                    showlegend=False,
                    line={"color": color, "width": 2},
                    hovertemplate=f"{label}: a={fit.params['a']:.3f}<extra></extra>",
                ),
                row=1,
                col=2,
            )
    apply_layout(fig, "IsoFLOP analysis (Hoffmann et al. 2022, approach 2)", "", "")
    fig.update_xaxes(title_text=AXIS_TITLES["N"], row=1, col=1)
    fig.update_yaxes(title_text="final eval loss (nats)", type="linear", row=1, col=1)
    fig.update_xaxes(title_text=AXIS_TITLES["FLOPs"], row=1, col=2)
    fig.update_yaxes(title_text="N*", row=1, col=2)
    return fig


def gap_figure(gap: GapComparison, colors: dict[str, str]) -> go.Figure | None:
    """The paired loss gap per cell against N (or D), one series per D (or N), with seed intervals
    and the fitted trend: points above 0 favour the first group."""
    cells = list(gap.cells)
    if not cells:
        return None
    head = gap.headline_trend
    axis = head.axis if head is not None and head.axis in ("N", "D") else "N"
    other = "D" if axis == "N" else "N"
    one, two = group_label(gap.first), group_label(gap.second)
    fig = go.Figure()
    x_of = (lambda c: c.n_params) if axis == "N" else (lambda c: c.tokens)
    key_of = (lambda c: c.tokens) if axis == "N" else (lambda c: c.n_params)
    levels = sorted({round(math.log(key_of(c)), 2) for c in cells})
    if len(levels) == len(cells):  # D moves with N (or the reverse): one series, not one per cell
        key_of = lambda c: 1.0  # noqa: E731
        levels = [0.0]
    for rank, level in enumerate(levels):
        members = sorted((c for c in cells if round(math.log(key_of(c)), 2) == level), key=x_of)
        shade = PALETTE[rank % len(PALETTE)] if len(levels) > 1 else colors.get(one, PALETTE[0])
        lows = [c.gap - c.ci[0] if c.ci else 0 for c in members]
        highs = [c.ci[1] - c.gap if c.ci else 0 for c in members]
        name = f"{other}={format_axis_value(other, key_of(members[0]))}" if len(levels) > 1 else "cells"
        fig.add_trace(
            go.Scatter(
                x=[x_of(c) for c in members],
                y=[c.gap for c in members],
                mode="markers+lines",
                name=name,
                line={"color": shade, "width": 1, "dash": "dot"},
                marker={"color": shade, "size": 9},
                error_y={
                    "type": "data",
                    "array": highs,
                    "arrayminus": lows,
                    "visible": any(c.ci for c in members),
                },
                hovertemplate=f"{axis} %{{x:.3s}}: gap %{{y:.4f}} nats<extra>{name}</extra>",
            )
        )
    if head is not None and head.axis == axis and not head.controls:
        xs = np.array([x_of(c) for c in cells])
        gaps = np.array([c.gap for c in cells])
        line_x = np.geomspace(xs.min(), xs.max(), 20)
        intercept = gaps.mean() - head.slope * np.log10(xs).mean()
        fig.add_trace(
            go.Scatter(
                x=line_x,
                y=intercept + head.slope * np.log10(line_x),
                mode="lines",
                name="trend",
                line={"color": "#555", "width": 1.5},
                hoverinfo="skip",
            )
        )
    fig.add_hline(y=0, line={"color": "#888", "width": 1})
    title = f"Loss gap per cell: loss({two}) − loss({one}); above 0, {one} is lower"
    return apply_layout(fig, title, AXIS_TITLES[axis], "loss gap (nats)", log_y=False, height=420)


def holdout_figure(predictions: Sequence[HoldoutPrediction], colors: dict[str, str]) -> go.Figure | None:
    """Each group's refit (without the held-out runs) extrapolated to the held-out cells, with its
    band; the fitted runs as points and the held-out ones as stars with their prediction intervals."""
    predictions = [p for p in predictions if p.refit is not None and p.refit.form in ("n", "joint")]
    if not predictions:
        return None
    fig = go.Figure()
    for p in predictions:
        refit, label = p.refit, group_label(p.group)
        color = colors.get(label, PALETTE[0])
        x = np.geomspace(refit.n_params.min() / 1.2, p.n_params * 1.2, 100)
        kwargs = (
            {"n_params": x} if refit.form == "n" else {"n_params": x, "tokens": np.full_like(x, p.tokens)}
        )
        where = "" if refit.form == "n" else f" at D={format_axis_value('D', p.tokens)}"
        _add_curve(
            fig,
            refit,
            x,
            refit.predict(**kwargs),
            refit.band(**kwargs),
            color,
            f"{label}: fit without the held-out runs{where}",
            label,
            1.0,
            True,
        )
        on_curve = (
            np.isclose(refit.tokens, p.tokens, rtol=0.05)
            if refit.form == "joint"
            else np.ones(refit.n_points, dtype=bool)
        )
        fig.add_trace(
            go.Scatter(
                x=refit.n_params[on_curve],
                y=refit.loss[on_curve],
                mode="markers",
                name=f"{label}: fitted runs",
                legendgroup=label,
                showlegend=False,
                marker={"color": color, "size": 8},
                hovertemplate="N %{x:.3s}: loss %{y:.4f}<extra>fitted</extra>",
            )
        )
        if p.interval is not None:
            lo, hi = p.interval
            fig.add_trace(
                go.Scatter(
                    x=[p.n_params],
                    y=[p.predicted],
                    mode="markers",
                    name=f"{label}: prediction interval",
                    legendgroup=label,
                    showlegend=False,
                    marker={"color": color, "size": 9, "symbol": "line-ew-open"},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [hi - p.predicted],
                        "arrayminus": [p.predicted - lo],
                        "color": color,
                    },
                    hovertemplate=f"predicted {p.predicted:.4f} [{lo:.4f}, {hi:.4f}]<extra>{label}</extra>",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[p.n_params],
                y=[p.actual],
                mode="markers",
                name=f"{label}: held out, measured ({p.relative_error:+.1%} off)",
                legendgroup=label,
                marker={"color": color, "size": 14, "symbol": "star", "line": {"color": "black", "width": 1}},
                hovertemplate=f"measured %{{y:.4f}}, predicted {p.predicted:.4f}<extra>{label}</extra>",
            )
        )
    return apply_layout(
        fig,
        "Hold-out: the largest runs against the law fitted without them",
        AXIS_TITLES["N"],
        "final eval loss (nats)",
    )
