"""The composite task's phase diagram: held-out answers over γ × depth, mean over seeds.

Zhang et al. (NeurIPS 2024) claim that small initialization (large γ) makes a transformer solve
the held-out anchor pair by composing (answer x − 10) and large initialization by memorizing the
trained mirror pair (answer x − 6). Two heatmaps show both rates per (γ, depth) cell, so a reader
sees where, if anywhere, the solution changes; each cell also gives the spread over seeds.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures import _layout
from analysis.load import GAMMA_KEYS

DEPTH_KEY = "model.n_layers"
PHASE_METRICS = {
    "probe/heldout_compositional": "compositional answer (x − 10)",
    "probe/heldout_mirrored": "mirrored answer (x − 6)",
}


def phase_cells(runs: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame | None:
    """Per (depth, γ) cell: mean, sd and count over runs of each held-out rate.

    ``runs``: one row per finished run (``run_id``, the γ column, ``model.n_layers``);
    ``final``: run_id × metric final values. None unless the runs vary both γ and depth.
    """
    gamma_key = next((key for key in GAMMA_KEYS if key in runs.columns), None)
    metrics = [m for m in PHASE_METRICS if m in final.columns]
    if gamma_key is None or DEPTH_KEY not in runs.columns or len(metrics) < len(PHASE_METRICS):
        return None
    axes = runs.set_index("run_id")[[gamma_key, DEPTH_KEY]].apply(pd.to_numeric, errors="coerce")
    frame = axes.join(final[metrics], how="inner").dropna()
    if frame[gamma_key].nunique() < 2 or frame[DEPTH_KEY].nunique() < 2:
        return None
    cells = frame.groupby([DEPTH_KEY, gamma_key])[metrics].agg(["mean", "std", "count"])
    cells.index = cells.index.set_names(["depth", "gamma"])
    return cells


def phase_figure(cells: pd.DataFrame) -> go.Figure:
    """Two heatmaps over γ (x) × depth (y), colour = mean rate, text = mean ± sd (n seeds)."""
    fig = make_subplots(rows=1, cols=len(PHASE_METRICS), subplot_titles=list(PHASE_METRICS.values()),
                        horizontal_spacing=0.12)
    for column, metric in enumerate(PHASE_METRICS, start=1):
        mean = cells[(metric, "mean")].unstack("gamma")
        spread = cells[(metric, "std")].unstack("gamma").fillna(0.0)
        count = cells[(metric, "count")].unstack("gamma")
        text = [[f"{m:.2f} ± {s:.2f} ({int(n)})" if pd.notna(m) else "" for m, s, n in zip(mr, sr, nr)]
                for mr, sr, nr in zip(mean.to_numpy(), spread.to_numpy(), count.fillna(0).to_numpy())]
        fig.add_trace(go.Heatmap(
            x=[f"{g:g}" for g in mean.columns], y=[f"{int(d)}" for d in mean.index], z=mean.to_numpy(),
            text=text, texttemplate="%{text}", zmin=0.0, zmax=1.0, colorscale="Viridis",
            showscale=column == len(PHASE_METRICS), colorbar={"title": "rate"},
            hovertemplate="γ=%{x}, depth=%{y}: %{text}<extra></extra>",
        ), row=1, col=column)
    _layout(fig, "Held-out pair over γ × depth (mean ± sd over seeds, n in brackets)", "γ", "depth (layers)",
            log_x=False, log_y=False, height=440)
    return fig.update_xaxes(type="category").update_yaxes(type="category")
