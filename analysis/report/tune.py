"""The self-contained HTML report of a tuning call: best values, the size rule, Optuna's figures.

Like the scaling report (``analysis.report.scaling``), one file: plotly.js is inlined once in the head
and every figure shares it, so the report opens offline. Sections: best values per study, the
size rule (when studies at two or more sizes allow one), then per study Optuna's optimization
history, slice plot, parameter importances (with two or more parameters and enough complete
trials; else a note) and intermediate values (the curves the pruner judged), then the method.
Imports neither torch nor ray.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from analysis.report import page
from analysis.report.figures import PALETTE, apply_layout
from analysis.tune_rule import SizeRule

# Parameter importances need a few complete trials to mean anything (PED-ANOVA compares the
# best quantile of trials with the rest).
MIN_TRIALS_FOR_IMPORTANCE = 6


@dataclass(frozen=True)
class StudyPanel:
    """One study of the report."""

    name: str  # <grid>/<group key>
    group_key: str
    n_params_non_embedding: int
    study: Any  # optuna.Study, read as is


def render_tune_report(
    grid: str,
    metric: str,
    storage: str,
    studies: Sequence[StudyPanel],
    rules: Sequence[SizeRule],
    space: Mapping[str, str],
) -> str:
    """The report as one HTML string."""
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Tuning report: {grid}"
    sections = [
        page.section(
            "best", "Best values", _best_table(studies, metric), f"{metric}, minimized; one study per group."
        ),
        page.section("rule", "Size rule", _rule_body(rules)),
    ]
    nav = [("best", "Best values"), ("rule", "Size rule")]
    for i, panel in enumerate(studies):
        anchor = f"study-{i}"
        sections.append(page.section(anchor, f"Study {panel.name}", _study_body(panel, anchor, metric)))
        nav.append((anchor, panel.group_key))
    sections.append(page.section("method", "Method", _method(metric, space)))
    nav.append(("method", "Method"))
    searched = ", ".join(f"{k} {v}" for k, v in space.items())
    links = "\n".join(f'<a href="#{a}">{page.escape(t)}</a>' for a, t in nav)
    meta = f"Storage: {page.escape(storage)} · generated {created} · searched: {page.escape(searched)}"
    footer = f"gammaray tuning report. The best values as a grid snippet: <code>tune/{page.escape(grid)}/best.yaml</code> in the workspace."
    return page.document(title, meta, links, sections, footer)


def write_tune_report(path: str | Path, **parts: Any) -> Path:
    """Write the report (``render_tune_report``'s arguments) to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_tune_report(**parts), encoding="utf-8")
    return path


# ---- sections ------------------------------------------------------------------------------


def _best_table(studies: Sequence[StudyPanel], metric: str) -> str:
    header = [
        "study",
        "N (non-emb.)",
        "complete",
        "pruned",
        "failed",
        "stopped",
        "best params",
        metric,
        "trial",
        "run",
    ]
    rows = []
    for panel in studies:
        counts = trial_counts(panel.study)
        best = best_trial(panel.study)
        if best is None:
            cells = ["—", "—", "", ""]
        else:
            params = "<br>".join(
                f"{page.escape(k)} = {page.escape(_short(v))}" for k, v in best.params.items()
            )
            diverged = " <small>(diverged)</small>" if best.user_attrs.get("status") == "diverged" else ""
            cells = [
                params,
                f"{best.value:.4f}{diverged}",
                str(best.number),
                page.escape(best.user_attrs.get("run_id", "")),
            ]
        head = [page.escape(panel.group_key), f"{panel.n_params_non_embedding:,}"]
        head += [str(counts[state]) for state in ("COMPLETE", "PRUNED", "FAIL", "STOPPED")]
        rows.append(([*head, *cells], "" if best is not None else "partial"))
    return page.table(header, rows, left=(0, 6, 9))


def _rule_body(rules: Sequence[SizeRule]) -> str:
    if not rules:
        return page.empty(
            "No rule: it needs studies at two or more model sizes that differ in nothing else (a --per key such as "
            "model.preset with several values)."
        )
    lines = "".join(f"<p><code>{page.escape(rule.formula())}</code></p>" for rule in rules)
    lead = (
        '<p class="lead">log θ* = a + k·log N by least squares over the studies\' best values, N the non-embedding '
        "parameter count; ± is the standard error of k (three sizes or more).</p>"
    )
    return lead + lines + page.figure(_rule_figure(rules), "fig-rule")


def _rule_figure(rules: Sequence[SizeRule]) -> go.Figure:
    fig = go.Figure()
    for i, rule in enumerate(rules):
        color = PALETTE[i % len(PALETTE)]
        label = rule.param + "".join(f" {k}={v}" for k, v in rule.where.items())
        fig.add_trace(
            go.Scatter(
                x=list(rule.n_params),
                y=list(rule.best),
                mode="markers",
                name=f"{label}: best",
                marker={"color": color, "size": 9},
            )
        )
        low, high = min(rule.n_params) / 1.3, max(rule.n_params) * 1.3
        xs = [low * (high / low) ** (j / 49) for j in range(50)]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[rule.predict(x) for x in xs],
                mode="lines",
                name=f"{label}: N^{rule.k:.3f}",
                line={"color": color},
            )
        )
    return apply_layout(fig, "Best value against model size", "non-embedding parameters N", "best value")


def _study_body(panel: StudyPanel, anchor: str, metric: str) -> str:
    import optuna.visualization as vis

    study = panel.study
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return page.empty("No complete trial yet.")
    parts = [
        page.figure(
            _titled(vis.plot_optimization_history(study, target_name=metric), "Optimization history"),
            f"{anchor}-history",
        )
    ]
    parts.append(
        page.figure(
            _titled(vis.plot_slice(study, target_name=metric), "Slice: each trial's value by parameter"),
            f"{anchor}-slice",
        )
    )
    n_params = len({key for t in complete for key in t.params})
    if n_params < 2:
        parts.append(page.empty("Parameter importances: skipped, one parameter searched."))
    elif len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        parts.append(
            page.empty(
                f"Parameter importances: skipped, {len(complete)} complete trials "
                f"(at least {MIN_TRIALS_FOR_IMPORTANCE} needed)."
            )
        )
    else:
        try:
            figure = vis.plot_param_importances(study, target_name=metric)
            parts.append(page.figure(_titled(figure, "Parameter importances"), f"{anchor}-importances"))
        except (RuntimeError, ValueError, ZeroDivisionError) as error:  # degenerate trials (all values equal)
            parts.append(page.empty(f"Parameter importances: skipped ({error})."))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        figure = _titled(
            vis.plot_intermediate_values(study), f"{metric} while training (pruned trials stop early)"
        )
        figure.update_yaxes(title_text=metric)
        figure.update_xaxes(title_text="step")
        parts.append(page.figure(figure, f"{anchor}-intermediate"))
    return "".join(parts)


def _method(metric: str, space: Mapping[str, str]) -> str:
    return (
        "<p>Each study searches "
        + ", ".join(
            f"<code>{page.escape(k)}</code> over <code>{page.escape(v)}</code>" for k, v in space.items()
        )
        + f" with Optuna's TPE sampler (seeded; random for its first trials), minimizing the final {page.escape(metric)} of a "
        "full training run per trial. While a trial trains, every eval is reported to Optuna, and the median rule "
        "(Optuna's MedianPruner, after a warm-up share of the steps) stops trials that trail the completed ones. "
        "A diverged run (loss NaN or inf) is told the untrained model's value, so the sampler moves away from it; a "
        "run that raised counts as failed and is not part of the figures.</p>"
    )


# ---- helpers -------------------------------------------------------------------------------


def _titled(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        template="plotly_white",
        height=420,
        margin={"l": 70, "r": 20, "t": 50, "b": 60},
    )
    return fig


def trial_counts(study: Any) -> dict[str, int]:
    """Trials of an Optuna study: COMPLETE, PRUNED, FAIL (training failed) and STOPPED (failed
    because their driver stopped: marked ``stopped``, or asked again by a later trial)."""
    trials = study.get_trials(deepcopy=False)
    resumed = {t.user_attrs.get("resumes_trial") for t in trials}
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "STOPPED": 0}
    for trial in trials:
        state = trial.state.name
        if state == "FAIL" and ("stopped" in trial.user_attrs or trial.number in resumed):
            state = "STOPPED"
        if state in counts:
            counts[state] += 1
    return counts


def best_trial(study: Any) -> Any:
    """The complete trial of lowest value (the earliest of equals: trials that shared a run), or None."""
    trials = study.get_trials(deepcopy=False)
    complete = [
        t for t in trials if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)
    ]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
