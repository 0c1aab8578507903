"""Report sections of the eval-time measurements: present with the metrics, a one-line note without,
and the statistics behind them (paired gains, loss spikes, best γ) on constructed runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.analyze import analyze
from analysis.export import analysis_to_dict
from analysis.load import runs_from_records
from analysis.measures.critical_gamma import best_group, count_spikes, critical_gamma
from analysis.measures.mechanism import cells, final_values, token_gains
from analysis.report.measurements import Absent, Section, sections
from analysis.report.scaling import render_report
from analysis.summary import summary_lines

GAMMAS = (0.5, 1.0)
SIZES = (2e4, 6e4, 1.8e5)
TOKENS = (1e6, 3e6)
STEPS = tuple(range(0, 1001, 100))


def _grid(measured: bool = True, diverge: bool = False, gammas: tuple[float, ...] = GAMMAS):
    """2 γ × 3 N × 2 D runs; γ = 1.0 has 0.2 nats lower loss on context tokens, 0.01 elsewhere,
    condenses (peak at step 400) and answers the held-out pair compositionally."""
    rng = np.random.default_rng(0)
    records, histories = [], []
    for gamma in gammas:
        small = gamma == 1.0
        for n in SIZES:
            for d in TOKENS:
                run_id = f"g{gamma}-n{n:.0e}-d{d:.0e}"
                loss = 3.0 + 1e3 / n**0.5 - (0.05 if small else 0.0) + rng.normal(0, 0.002)
                state = "diverged" if diverge and gamma == 0.5 and n == SIZES[-1] else "finished"
                records.append(
                    {
                        "run_id": run_id,
                        "state": state,
                        "init.gamma": gamma,
                        "N": n,
                        "D": d,
                        "N_non_embedding": n,
                        "FLOPs": 6 * n * d,
                        "loss": loss if state == "finished" else np.nan,
                    }
                )
                for step in STEPS:
                    train_loss = loss + 2.0 / (1 + step)
                    if diverge and gamma == 0.5 and step == 700:
                        train_loss *= 2  # a spike
                    histories += [
                        (run_id, "train/loss", step, train_loss),
                        (run_id, "tokens", step, step * 4096.0),
                        (run_id, "eval/loss", step, train_loss),
                    ]
                    if not measured:
                        continue
                    peak = 0.6 if small else 0.05
                    condensation = peak * np.exp(-(((step - 400) / 250) ** 2))
                    histories += [
                        (run_id, "diag/condensation/all", step, condensation),
                        (run_id, "diag/effective_rank_frac/all", step, 1 - condensation),
                        (run_id, "diag/attn_sink/all", step, 0.1 if small else 0.3),
                        (run_id, "probe/seen_accuracy", step, min(1.0, step / 600)),
                        (run_id, "probe/heldout_compositional", step, (0.8 if small else 0.1) * step / 1000),
                        (run_id, "probe/heldout_mirrored", step, (0.1 if small else 0.7) * step / 1000),
                    ]
                if measured:
                    context = 4.0 - (0.2 if small else 0.0) + rng.normal(0, 0.01)
                    histories += [
                        (run_id, "tokens/loss/trivial", 1000, 1.0 - (0.01 if small else 0.0)),
                        (run_id, "tokens/loss/context", 1000, context),
                        (run_id, "tokens/loss/other", 1000, 5.0 - (0.01 if small else 0.0)),
                        (run_id, "tokens/loss/copy_repeat", 1000, context + 0.1),
                        (run_id, "tokens/count/context", 1000, 500.0),
                    ]
    return runs_from_records(records, histories, name="measured" if measured else "plain", source="test")


@pytest.fixture(scope="module")
def measured():
    return analyze(_grid(), n_bootstrap=200)


def test_every_section_appears_when_the_grid_logged_its_metrics():
    analysis = analyze(_grid(gammas=(0.5, 0.75, 1.0)), n_bootstrap=50)
    built = sections(analysis, {})
    assert [type(s) for s in built] == [Section] * 4 + [Absent]
    assert [s.title for s in built] == [
        "Mechanism: condensation",
        "Token-level",
        "Reasoning probe",
        "Critical γ",
        "Downstream evaluation",  # no `gammaray eval` scores in this grid
    ]
    html = render_report(analysis)
    for anchor in ("mechanism", "tokens", "probe", "critical-gamma"):
        assert f'<section id="{anchor}">' in html
        assert f'href="#{anchor}"' in html
    assert (
        html.count(": not shown — ") == 1
        and "Downstream evaluation: not shown — no run has downstream" in html
    )


def test_two_gammas_get_no_critical_gamma_section(measured):
    built = sections(measured, {})
    assert [type(s) for s in built] == [Section] * 3 + [Absent] * 2
    assert "at least 3 γ values; the grid holds 2" in built[3].note


def test_a_probe_that_was_not_learned_is_one_line_not_a_finding():
    table = _grid()
    hist = table.histories.copy()
    hist.loc[hist["metric"] == "probe/seen_accuracy", "value"] = 0.0006
    built = sections(analyze(dataclasses.replace(table, histories=hist), n_bootstrap=0), {})
    assert isinstance(built[2], Absent) and "did not learn the composite task" in built[2].note


def test_sections_are_absent_with_a_one_line_note_without_the_metrics():
    plain = analyze(_grid(measured=False, gammas=(0.5, 0.75, 1.0)), n_bootstrap=0)
    built = sections(plain, {})
    assert [type(s) for s in built[:3]] == [Absent] * 3
    html = render_report(plain)
    for anchor in ("mechanism", "tokens", "probe"):
        assert f'<section id="{anchor}">' not in html
    assert html.count(": not shown — ") == 4  # and the downstream section's
    assert "no run logged diag/ metrics" in html
    # The γ sweep with train-loss histories still gets its critical-γ section (loss and stability).
    assert '<section id="critical-gamma">' in html


def test_a_csv_grid_without_histories_notes_all_four():
    table = runs_from_records(
        [
            {"run_id": "a", "state": "finished", "N": 1e6, "D": 1e9, "loss": 3.0, "gamma": 1.0},
            {"run_id": "b", "state": "finished", "N": 2e6, "D": 1e9, "loss": 2.9, "gamma": 1.0},
        ],
        name="csv",
        source="test",
    )
    built = sections(analyze(table, n_bootstrap=0), {})
    assert all(isinstance(s, Absent) for s in built)
    assert all("\n" not in s.note for s in built)


def test_token_gain_recovers_the_constructed_context_gain_with_a_ci(measured):
    result = token_gains(measured.table.runs, measured.table.histories, measured.by, n_boot=500)
    assert result.reference == "γ=0.5"
    gains = {g.metric: g for g in result.gains}
    context = gains["tokens/loss/context"]
    assert context.group == "γ=1.0" and context.n_cells == 6 and context.n_runs == 12
    assert context.value == pytest.approx(0.2, abs=0.02)
    assert context.ci[0] < context.value < context.ci[1] and context.ci[0] > 0.15
    assert gains["tokens/loss/trivial"].value == pytest.approx(0.01, abs=1e-9)
    assert "tokens/loss/copy_repeat" in gains  # roles are compared too


def test_cells_match_runs_by_n_and_d_within_five_percent():
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "N": [1e6, 1.02e6, 2e6], "D": [1e9, 1e9, 1e9]})
    keys = cells(runs)
    assert keys["a"] == keys["b"] != keys["c"]


def test_final_values_take_the_last_step():
    hist = pd.DataFrame(
        [("a", "m", 2, 5.0), ("a", "m", 1, 4.0), ("b", "m", 1, 3.0)],
        columns=["run_id", "metric", "step", "value"],
    )
    assert final_values(hist, ["m"])["m"].to_dict() == {"a": 5.0, "b": 3.0}


def test_loss_spikes_are_counted_against_the_recent_median():
    assert count_spikes([3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4]) == 0
    assert count_spikes([3.0, 2.9, 2.8, 2.7, 2.6, 4.0, 2.5]) == 1
    assert count_spikes([3.0, 1.0]) == 0  # too short to judge


def test_critical_gamma_leaves_diverged_groups_out_of_the_best_loss_choice():
    table = _grid(diverge=True)
    result = critical_gamma(table.runs, table.histories, ["init.gamma"], n_boot=200)
    rows = result.table.set_index("group")
    assert rows.loc["γ=0.5", "diverged"] == 2 and rows.loc["γ=0.5", "spiky_runs"] == 6
    assert rows.loc["γ=1.0", "diverged"] == 0 and rows.loc["γ=1.0", "spiky_runs"] == 0
    assert result.best_loss is None  # one stable group: nothing to choose between
    assert result.best_probe.label == "γ=1.0"
    assert any("diverged" in note for note in result.notes)


def test_best_gamma_by_loss_with_bootstrap_frequency(measured):
    result = critical_gamma(measured.table.runs, measured.table.histories, ["init.gamma"], n_boot=300)
    best = result.best_loss
    assert best.label == "γ=1.0" and best.n_cells == 6
    assert best.frequency["γ=1.0"] > 0.95
    assert best.value_ci == (1.0, 1.0)


def test_analysis_still_imports_without_torch_and_ray():
    code = (
        "import sys; import analysis.report.scaling, analysis.report.measurements, analysis.measures.critical_gamma; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_a_tie_for_best_is_reported_as_a_tie_and_shares_the_bootstrap_credit():
    samples = {"γ=0.5": {"c": np.array([0.0, 0.0])}, "γ=1.0": {"c": np.array([0.0])}}
    best = best_group(
        "probe",
        samples,
        ["γ=0.5", "γ=1.0"],
        {"γ=0.5": 0.5, "γ=1.0": 1.0},
        False,
        100,
        np.random.default_rng(0),
    )
    assert best.tied == ("γ=0.5", "γ=1.0")
    assert best.frequency == {"γ=0.5": 0.5, "γ=1.0": 0.5}


def _task_study(seen_accuracy: float = 1.0):
    """A composite task study (train.loss_on=answers) over γ × depth: deep or small-init runs
    compose, shallow large-init runs answer the mirror."""
    records, histories = [], []
    for gamma in (0.3, 1.0):
        for depth in (2, 6):
            for seed in (0, 1):
                run_id = f"g{gamma}-L{depth}-s{seed}"
                composes = gamma == 1.0 or depth == 6
                n = 1e4 * depth
                records.append(
                    {
                        "run_id": run_id,
                        "state": "finished",
                        "init.gamma": gamma,
                        "model.n_layers": depth,
                        "seed": seed,
                        "train.loss_on": "answers",
                        "N": n,
                        "D": 4e6,
                        "N_non_embedding": n,
                        "FLOPs": 6 * n * 4e6,
                        "loss": 0.14 + 0.01 * seed,
                    }
                )
                for step in (0, 500, 1000):
                    histories += [
                        (run_id, "eval/loss", step, 4.6 / (1 + step / 100)),
                        (run_id, "probe/seen_accuracy", step, seen_accuracy * step / 1000),
                        (
                            run_id,
                            "probe/heldout_compositional",
                            step,
                            (0.95 if composes else 0.01) * step / 1000,
                        ),
                        (run_id, "probe/heldout_mirrored", step, (0.0 if composes else 0.98) * step / 1000),
                    ]
    return runs_from_records(records, histories, name="task", source="test")


def test_a_task_study_fits_no_law_and_its_report_is_the_phase_diagram():
    analysis = analyze(_task_study(), n_bootstrap=50)
    assert not analysis.scaling and analysis.fits == () and analysis.gaps == () and analysis.verdict is None
    assert any("no law is fitted" in m for m in analysis.messages)
    assert summary_lines(analysis) == [
        "Phase diagram over 4 (γ, depth) cell(s) of competent runs: 3 compositional, 1 mirrored, 0 neither "
        "(C compositional, M mirrored, – neither; depth 2: γ 0.3 M γ 1 C; depth 6: γ 0.3 C γ 1 C). "
        "Runs by γ over all depths: γ 0.3: 2 C 2 M 0 –; γ 1: 4 C 0 M 0 –; the seeds of 4 of 4 cells agree."
    ]
    phase = analysis_to_dict(analysis)["phase"]
    assert phase["not_competent"] == 0 and len(phase["cells"]) == 4
    assert {(c["depth"], c["gamma"]): c["solution"] for c in phase["cells"]}[(2, 0.3)] == "mirrored"
    html = render_report(analysis)
    assert "Task report: task" in html and '<section id="probe">' in html
    for anchor in ("loss-n", "loss-d", "gap", "holdout", "exponents", "residuals", "comparisons", "fits"):
        assert f'<section id="{anchor}">' not in html and f'href="#{anchor}"' not in html


def test_a_task_study_whose_runs_never_became_competent_says_so():
    (line,) = summary_lines(analyze(_task_study(seen_accuracy=0.6), n_bootstrap=0))
    assert "no phase diagram" in line and "90% trained-pair accuracy" in line


def test_no_best_gamma_by_reasoning_when_no_group_learned_the_probe():
    table = _grid(gammas=(0.5, 0.75, 1.0))
    hist = table.histories.copy()
    hist.loc[hist["metric"] == "probe/seen_accuracy", "value"] = 0.02
    result = critical_gamma(table.runs, hist, ["init.gamma"], n_boot=100)
    assert result.best_probe is None and not result.probe_learned
    assert result.best_loss is not None  # the loss still answers
    assert any(
        n.startswith("no best γ by reasoning: no group learned the probe's trained pairs")
        for n in result.notes
    )
    html = render_report(analyze(dataclasses.replace(table, histories=hist), n_bootstrap=20))
    assert (
        "held-out compositional rate"
        not in html.split('<section id="critical-gamma">')[1].split("</section>")[0]
    )
