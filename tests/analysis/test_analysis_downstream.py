"""The downstream statistics and report section on constructed scores: the sigmoid link from loss to
accuracy, gaps whose interval counts the documents, the one-line notes where there is no signal."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.analyze import analyze
from analysis.load import runs_from_records
from analysis.measures.downstream import downstream_tasks, loss_link, task_gains, task_scores
from analysis.report.downstream import downstream_section
from analysis.report.sections import Absent

SIZES = (2e4, 4e4, 8e4, 1.6e5, 3.2e5, 6.4e5)
CHANCE = 0.25


def _table(
    scored: bool = True, k: float = 3.0, loss_mid: float = 3.5, gap: float = 0.1, stderr: float = 0.01
):
    """Two γ groups over six sizes; accuracy a sigmoid of the loss (plus ``gap`` for γ = 1.0)."""
    records, histories = [], []
    for gamma in (0.5, 1.0):
        for n in SIZES:
            run_id = f"g{gamma}-n{n:.0e}"
            loss = 2.5 + 1e3 / n**0.5
            acc = CHANCE + (1 - CHANCE) / (1 + np.exp(k * (loss - loss_mid))) + (gap if gamma == 1.0 else 0)
            records.append(
                {"run_id": run_id, "state": "finished", "init.gamma": gamma, "N": n, "D": 1e6, "loss": loss}
            )
            histories.append((run_id, "eval/loss", 100, loss))
            if scored:
                histories += [
                    (run_id, "eval/facts/acc", 100, acc),
                    (run_id, "eval/facts/acc_stderr", 100, stderr),
                    (run_id, "eval/facts/chance", 100, CHANCE),
                ]
    return runs_from_records(records, histories, name="scored", source="test")


def test_the_link_recovers_the_sigmoid_of_the_loss():
    table = _table(gap=0.0)
    [task] = downstream_tasks(table.histories)
    link = loss_link(task_scores(table.runs, table.histories, ("init.gamma",), task))
    assert link is not None and link.n_runs == 12
    assert link.k == pytest.approx(3.0, rel=1e-3) and link.loss_mid == pytest.approx(3.5, rel=1e-3)
    assert link.rms < 1e-6


def test_too_few_runs_get_no_link():
    table = _table()
    scores = task_scores(table.runs, table.histories, ("init.gamma",), "facts")
    few = scores.runs[scores.runs["N"] <= SIZES[1]]
    assert loss_link(type(scores)(scores.task, scores.chance, few, scores.groups)) is None


def test_a_gap_interval_holds_the_documents_variance_when_each_cell_has_one_run():
    table = _table(gap=0.1, stderr=0.02)
    scores = task_scores(table.runs, table.histories, ("init.gamma",), "facts")
    [gain] = task_gains(scores, n_boot=200)
    assert gain.group == "γ=1.0" and gain.reference == "γ=0.5" and gain.n_cells == 6
    assert gain.value == pytest.approx(0.1)
    # One run per cell: the bootstrap alone would give a zero-width interval. The documents give
    # a standard error of sqrt(2 · 0.02² / 6) on the mean gap.
    half = 1.959964 * np.sqrt(2 * 0.02**2 / 6)
    assert gain.ci == pytest.approx((0.1 - half, 0.1 + half), rel=1e-3)


def test_the_section_says_when_no_group_beats_chance():
    table = _table(k=3.0, loss_mid=1.0, gap=0.0, stderr=0.05)  # losses far above L₀: accuracy at chance
    section = downstream_section(analyze(table, n_bootstrap=0), {})
    assert section.lines == (
        "facts: no group scores above chance (0.25) by 2 standard errors: no signal at these sizes, and no "
        "link to the loss.",
    )
    assert len(section.figures) == 1 and len(section.tables) == 1  # accuracy against N, no link


def test_a_task_with_signal_gets_its_link_in_the_section():
    section = downstream_section(analyze(_table(), n_bootstrap=0), {})
    [line] = section.lines
    assert line.startswith("facts: γ=1.0 scores highest above chance (") and line.endswith(
        " standard errors)."
    )
    assert len(section.figures) == 2 and section.tables[1].rows[0][0] == "facts"


def test_the_section_is_absent_in_one_line_without_scores():
    section = downstream_section(analyze(_table(scored=False), n_bootstrap=0), {})
    assert isinstance(section, Absent) and "gammaray eval --grid NAME --tasks" in section.note
