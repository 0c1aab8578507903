"""The composite task's phase diagram over γ × depth."""

import numpy as np
import pandas as pd

from analysis.phase_diagram import phase_cells, phase_figure

RATES = ["probe/heldout_compositional", "probe/heldout_mirrored"]


def grid(gammas=(0.5, 1.0), depths=(2, 4), seeds=3):
    """Runs whose compositional rate is γ/2 + depth/10 + seed/100 (so the means are known)."""
    rows, finals = [], []
    for g in gammas:
        for d in depths:
            for s in range(seeds):
                run_id = f"g{g}-d{d}-s{s}"
                rows.append({"run_id": run_id, "init.gamma": g, "model.n_layers": d, "seed": s})
                compositional = g / 2 + d / 10 + s / 100
                finals.append({"run_id": run_id, RATES[0]: compositional, RATES[1]: 1 - compositional})
    return pd.DataFrame(rows), pd.DataFrame(finals).set_index("run_id")


def test_cells_average_over_seeds_per_gamma_and_depth():
    runs, finals = grid()
    cells = phase_cells(runs, finals)
    assert len(cells) == 4
    mean = cells.loc[(4, 1.0), (RATES[0], "mean")]
    assert np.isclose(mean, 0.5 + 0.4 + 0.01)  # seeds 0, 1, 2 add 0.00, 0.01, 0.02
    assert cells.loc[(4, 1.0), (RATES[0], "count")] == 3
    assert np.isclose(cells.loc[(2, 0.5), (RATES[1], "std")], 0.01)


def test_no_diagram_unless_both_gamma_and_depth_vary():
    runs, finals = grid(depths=(2,))
    assert phase_cells(runs, finals) is None
    runs, finals = grid(gammas=(1.0,))
    assert phase_cells(runs, finals) is None
    runs, finals = grid()
    assert phase_cells(runs.drop(columns="model.n_layers"), finals) is None
    assert phase_cells(runs, finals[[RATES[0]]]) is None


def test_figure_has_one_heatmap_per_rate_with_the_cell_means():
    runs, finals = grid(gammas=(0.3, 0.7, 1.2), depths=(2, 3))
    figure = phase_figure(phase_cells(runs, finals))
    heatmaps = [t for t in figure.data if t.type == "heatmap"]
    assert len(heatmaps) == 2
    z = np.asarray(heatmaps[0].z)
    assert z.shape == (2, 3)  # depth rows × γ columns
    assert np.isclose(z[1, 2], 1.2 / 2 + 3 / 10 + 0.01)
    assert list(heatmaps[0].x) == ["0.3", "0.7", "1.2"] and list(heatmaps[0].y) == ["2", "3"]
    assert "±" in heatmaps[0].text[0][0]
