"""The composite task's phase diagram: held-out answers over γ × depth, mean over seeds.

Zhang et al. (NeurIPS 2024) claim that small initialization (large γ) makes a transformer solve
the held-out anchor pair by composing (answer x − 10) and large initialization by memorizing the
trained mirror pair (answer x − 6). Two heatmaps show both rates per (γ, depth) cell, so a reader
sees where, if anywhere, the solution changes; each cell also gives the spread over seeds.
Only competent runs count: a model that has not fitted the trained pairs has no solution to
choose, so its held-out answers are noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.load import GAMMA_KEYS, RunTable
from analysis.measures.mechanism import final_values

DEPTH_KEY = "model.n_layers"
SEEN_METRIC = "probe/seen_accuracy"
# The mechanism papers' bar: a run counts once it answers at least 90% of the trained pairs.
COMPETENT_SEEN_ACCURACY = 0.9
# A cell's solution: the held-out answer a majority of its competent runs give.
MAJORITY = 0.5
PHASE_METRICS = {
    "probe/heldout_compositional": "compositional answer (x − 10)",
    "probe/heldout_mirrored": "mirrored answer (x − 6)",
}


@dataclass(frozen=True)
class PhaseDiagram:
    """The held-out rates per (depth, γ) cell over the competent runs, and what was left out."""

    cells: pd.DataFrame  # index (depth, gamma); columns (metric, mean|std|count)
    competent: pd.DataFrame  # one row per competent run: depth, gamma and both rates
    runs: int  # runs with both rates and both axes
    not_competent: int  # of those, runs below COMPETENT_SEEN_ACCURACY (left out of the cells)
    empty_cells: tuple[tuple[float, float], ...]  # (depth, γ) cells with no competent run

    def solutions(self) -> pd.Series:
        """Per cell: ``compositional``, ``mirrored`` or ``neither`` (no majority answer)."""
        comp = self.cells[("probe/heldout_compositional", "mean")]
        mirr = self.cells[("probe/heldout_mirrored", "mean")]
        return pd.Series(
            [_solution(c, m) for c, m in zip(comp, mirr)],
            index=self.cells.index,
        )

    def run_solutions(self) -> pd.Series:
        """Per competent run (by run id): the answer it gives on most held-out prompts."""
        return pd.Series(
            [_solution(c, m) for c, m in zip(self.competent[_COMP], self.competent[_MIRR])],
            index=self.competent.index,
        )

    def by_gamma(self) -> pd.DataFrame:
        """Competent runs per γ (over every depth) that gave each solution: γ × solution counts."""
        counts = pd.crosstab(self.competent["gamma"], self.run_solutions())
        return counts.reindex(columns=list(_MARK), fill_value=0)

    def cells_agreeing(self) -> tuple[int, int]:
        """(cells whose competent runs all gave one solution, cells with two or more runs)."""
        keyed = pd.DataFrame(
            {
                "cell": list(zip(self.competent["depth"], self.competent["gamma"])),
                "solution": self.run_solutions(),
            }
        )
        per_cell = keyed.groupby("cell")["solution"].agg(["nunique", "size"])
        several = per_cell[per_cell["size"] >= 2]
        return int((several["nunique"] == 1).sum()), len(several)

    def summary(self) -> str:
        """One line: how many cells took each solution, where, and what was left out."""
        solutions = self.solutions()
        counts = solutions.value_counts()
        parts = [f"{counts.get(k, 0)} {k}" for k in ("compositional", "mirrored", "neither")]
        by_depth = []
        for depth, row in solutions.groupby(level="depth"):
            marks = " ".join(f"γ {g:g} {_MARK[v]}" for (_, g), v in row.items())
            by_depth.append(f"depth {int(depth)}: {marks}")
        text = (
            f"Phase diagram over {len(solutions)} (γ, depth) cell(s) of competent runs: {', '.join(parts)} "
            f"(C compositional, M mirrored, – neither; {'; '.join(by_depth)})"
        )
        by_gamma = "; ".join(
            f"γ {g:g}: " + " ".join(f"{int(row[k])} {_MARK[k]}" for k in _MARK)
            for g, row in self.by_gamma().iterrows()
        )
        text += f". Runs by γ over all depths: {by_gamma}"
        agree, several = self.cells_agreeing()
        if several:
            text += f"; the seeds of {agree} of {several} cells agree"
        if self.not_competent:
            text += (
                f"; {self.not_competent} of {self.runs} runs below {COMPETENT_SEEN_ACCURACY:.0%} trained-pair "
                f"accuracy left out"
            )
        if self.empty_cells:
            where = ", ".join(f"(γ {g:g}, depth {int(d)})" for d, g in self.empty_cells)
            text += f", leaving no competent run at {where}"
        return text + "."


_MARK = {"compositional": "C", "mirrored": "M", "neither": "–"}
_COMP, _MIRR = PHASE_METRICS


def _solution(compositional: float, mirrored: float) -> str:
    """The answer given on a majority of held-out prompts, if either is."""
    if compositional >= MAJORITY:
        return "compositional"
    return "mirrored" if mirrored >= MAJORITY else "neither"


def phase_cells(runs: pd.DataFrame, final: pd.DataFrame) -> PhaseDiagram | None:
    """The phase diagram of ``runs`` (one row per finished run: ``run_id``, the γ column,
    ``model.n_layers``) from ``final`` (run_id × metric final values). Runs whose final
    ``probe/seen_accuracy`` is below :data:`COMPETENT_SEEN_ACCURACY` are left out. None unless
    the runs vary both γ and depth and some run is competent."""
    gamma_key = next((key for key in GAMMA_KEYS if key in runs.columns), None)
    metrics = [m for m in PHASE_METRICS if m in final.columns]
    if gamma_key is None or DEPTH_KEY not in runs.columns or len(metrics) < len(PHASE_METRICS):
        return None
    axes = runs.set_index("run_id")[[gamma_key, DEPTH_KEY]].apply(pd.to_numeric, errors="coerce")
    frame = axes.join(final[metrics], how="inner").dropna()
    if frame[gamma_key].nunique() < 2 or frame[DEPTH_KEY].nunique() < 2:
        return None
    seen = final[SEEN_METRIC].reindex(frame.index) if SEEN_METRIC in final.columns else None
    competent = frame[seen >= COMPETENT_SEEN_ACCURACY] if seen is not None else frame
    if competent.empty:
        return None
    cells = competent.groupby([DEPTH_KEY, gamma_key])[metrics].agg(["mean", "std", "count"])
    cells.index = cells.index.set_names(["depth", "gamma"])
    every_cell = set(frame.groupby([DEPTH_KEY, gamma_key]).groups)
    runs_frame = competent.rename(columns={gamma_key: "gamma", DEPTH_KEY: "depth"})
    return PhaseDiagram(
        cells=cells,
        competent=runs_frame,
        runs=len(frame),
        not_competent=len(frame) - len(competent),
        empty_cells=tuple(sorted(every_cell - set(cells.index))),
    )


def table_phase_diagram(table: RunTable) -> PhaseDiagram | None:
    """The phase diagram of a grid's finished runs, from their last logged probe values."""
    finished = table.finished
    final = final_values(table.histories, [*PHASE_METRICS, SEEN_METRIC]).reindex(finished["run_id"])
    return phase_cells(finished, final)
