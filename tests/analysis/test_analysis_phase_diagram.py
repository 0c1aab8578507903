"""The composite task's phase diagram over γ × depth, over competent runs only."""

import numpy as np
import pandas as pd

from analysis.measures.phase_diagram import COMPETENT_SEEN_ACCURACY, phase_cells
from analysis.report.measurements import phase_figure

RATES = ["probe/heldout_compositional", "probe/heldout_mirrored"]
SEEN = "probe/seen_accuracy"


def grid(gammas=(0.5, 1.0), depths=(2, 4), seeds=3, seen=lambda g, d, s: 1.0):
    """Runs whose compositional rate is γ/2 + depth/10 + seed/100 (so the means are known)."""
    rows, finals = [], []
    for g in gammas:
        for d in depths:
            for s in range(seeds):
                run_id = f"g{g}-d{d}-s{s}"
                rows.append({"run_id": run_id, "init.gamma": g, "model.n_layers": d, "seed": s})
                compositional = g / 2 + d / 10 + s / 100
                finals.append(
                    {
                        "run_id": run_id,
                        RATES[0]: compositional,
                        RATES[1]: 1 - compositional,
                        SEEN: seen(g, d, s),
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(finals).set_index("run_id")


def test_cells_average_over_seeds_per_gamma_and_depth():
    runs, finals = grid()
    cells = phase_cells(runs, finals).cells
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


def test_runs_below_competence_are_left_out_and_counted():
    # Seed 2 never learns the trained pairs; (γ 1.0, depth 4) learns them in no seed.
    def seen(g, d, s):
        return 0.3 if s == 2 or (g, d) == (1.0, 4) else COMPETENT_SEEN_ACCURACY

    diagram = phase_cells(*grid(seen=seen))
    assert diagram.runs == 12 and diagram.not_competent == 4 + 2  # seed 2 in four cells, two more
    assert diagram.empty_cells == ((4, 1.0),)
    assert (4, 1.0) not in diagram.cells.index
    assert diagram.cells.loc[(2, 0.5), (RATES[0], "count")] == 2
    assert np.isclose(diagram.cells.loc[(2, 0.5), (RATES[0], "mean")], 0.25 + 0.2 + 0.005)
    assert phase_cells(*grid(seen=lambda g, d, s: 0.5)) is None  # no competent run at all


def test_summary_names_each_cell_solution_and_what_was_left_out():
    # Compositional rate γ/2 + depth/10 + seed/100: above 0.5 only at γ 1.0 (both depths) and
    # (0.5, 4); the mirrored rate is 1 − that, so the other cells are mirrored.
    diagram = phase_cells(*grid(seen=lambda g, d, s: 0.2 if s == 0 else 1.0))
    assert list(diagram.solutions()) == ["mirrored", "compositional", "compositional", "compositional"]
    text = diagram.summary()
    assert "3 compositional, 1 mirrored, 0 neither" in text
    assert "depth 2: γ 0.5 M γ 1 C; depth 4: γ 0.5 C γ 1 C" in text
    assert "4 of 12 runs below 90% trained-pair accuracy left out" in text


def test_runs_are_counted_by_solution_per_gamma_and_seed_agreement_per_cell():
    # Compositional rate γ/2 + depth/10 + seed/100, mirrored 1 − that: γ 0.5 at depth 2 is
    # mirrored (0.45, 0.46), at depth 4 compositional (0.65, 0.66) until seed 0 is made to give
    # neither answer a majority; γ 1 composes everywhere.
    runs, finals = grid(gammas=(0.5, 1.0), depths=(2, 4), seeds=2)
    finals.loc["g0.5-d4-s0", RATES[0]] = 0.44  # seed 0 answers neither; seed 1 composes
    finals.loc["g0.5-d4-s0", RATES[1]] = 0.3
    diagram = phase_cells(runs, finals)
    counts = diagram.by_gamma()
    assert counts.loc[0.5].to_dict() == {"compositional": 1, "mirrored": 2, "neither": 1}
    assert counts.loc[1.0].to_dict() == {"compositional": 4, "mirrored": 0, "neither": 0}
    assert diagram.cells_agreeing() == (3, 4)
    assert "γ 0.5: 1 C 2 M 1 –; γ 1: 4 C 0 M 0 –; the seeds of 3 of 4 cells agree" in diagram.summary()
