"""Machine-readable results: the ``--json`` document, ``fit.json`` and ``fits.csv``.

The JSON document is ``{"verdict": {...}, "fits": [...], "comparison": {...}, "gap": [...],
"holdout": [...], "competence": [...], "phase": {...} (task studies), ...}``; every fit carries
``group``, ``form``, ``slice``, ``params`` (``E, A, alpha, B, beta`` for power laws, ``a, b,
N_coef, D_coef`` for iso-FLOP fits; null where absent), ``ci`` (``[low, high]`` per fitted
parameter), ``ci_level``, ``n_points``, ``n_bootstrap``, ``ok``, ``messages``, ``e_mode``
(``shared``, ``per-group`` or ``known``), ``rms_residual``, ``ci_relative`` (each exponent's
interval as its larger distance from the estimate, relative to it) and ``at_bound`` (fitted
parameters at a bound of the fit's box). Non-finite
numbers are written as null (or the string ``"inf"`` for an unreachable multiplier).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from analysis.analyze import Analysis
from analysis.fitting.compare import Comparison
from analysis.fitting.fit import FitResult, params_at_bound
from analysis.fitting.gap import GapComparison
from analysis.fitting.holdout import HoldoutPrediction
from analysis.labels import group_label
from analysis.measures.phase_diagram import (
    COMPETENT_SEEN_ACCURACY,
    PHASE_METRICS,
    PhaseDiagram,
    table_phase_diagram,
)
from analysis.select import Selection
from analysis.summary import summary_lines

SCHEMA_VERSION = 2


def _num(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    return _num(obj)


def fit_to_dict(fit: FitResult) -> dict[str, Any]:
    """One fit as a JSON-ready dict."""
    finite = lambda a: a[np.isfinite(a)] if a.size else a  # noqa: E731
    n, d = finite(fit.n_params), finite(fit.tokens)
    out = {
        "group": fit.group,
        "label": group_label(fit.group),
        "form": fit.form,
        "slice": fit.slice,
        "params": fit.params,
        "ci": {k: list(v) for k, v in fit.ci.items()},
        "ci_level": fit.ci_level,
        "n_points": fit.n_points,
        "n_bootstrap": fit.n_bootstrap,
        "ok": fit.ok,
        "fixed": list(fit.fixed),
        "messages": list(fit.messages),
        "objective": fit.objective,
        "e_mode": fit.e_mode,
        "shared_with": fit.extra.get("shared_with", []),
        "resampled": fit.extra.get("resampled", "runs of this group" if fit.n_bootstrap else None),
        "rms_residual": fit.rms_residual,
        "ci_relative": {
            p: max(abs(lo - fit.params[p]), abs(hi - fit.params[p])) / abs(fit.params[p])
            for p, (lo, hi) in fit.ci.items()
            if p in ("alpha", "beta") and fit.params[p]
        },
        "at_bound": params_at_bound(fit),
        "range": {
            "N": [float(n.min()), float(n.max())] if n.size else None,
            "D": [float(d.min()), float(d.max())] if d.size else None,
        },
    }
    if fit.form == "isoflop":
        out["slices"] = [
            {
                "FLOPs": s.train_flops,
                "n_points": s.n_points,
                "N_opt": s.n_opt,
                "D_opt": s.tokens_opt,
                "loss_opt": s.loss_opt,
                "ok": s.ok,
                "extrapolated": s.extrapolated,
                "message": s.message,
            }
            for s in fit.extra.get("slices", ())
        ]
    return _clean(out)


def comparison_to_dict(c: Comparison) -> dict[str, Any]:
    """One pairwise comparison as a JSON-ready dict."""
    return _clean(
        {
            "form": c.form,
            "slice": c.slice,
            "exponent": c.exponent,
            "axis": c.axis,
            "first": c.first,
            "second": c.second,
            "first_value": c.first_value,
            "second_value": c.second_value,
            "first_ci": c.first_ci,
            "second_ci": c.second_ci,
            "difference": c.difference,
            "difference_ci": c.difference_ci,
            "excludes_zero": c.excludes_zero,
            "faster": c.faster,
            "multipliers": [
                {
                    "axis": m.axis,
                    "at": m.at,
                    "fixed": m.fixed,
                    "target_loss": m.target_loss,
                    "value": m.value,
                    "ci": m.ci,
                    "message": m.message,
                }
                for m in c.multipliers
            ],
            "crossovers": [
                {"axis": x.axis, "at": x.at, "loss": x.loss, "within_range": x.within_range, "fixed": x.fixed}
                for x in c.crossovers
            ],
            "verdict": c.verdict,
        }
    )


def gap_to_dict(g: GapComparison) -> dict[str, Any]:
    """One pairwise gap comparison as a JSON-ready dict (gap = loss(second) − loss(first))."""
    return _clean(
        {
            "first": g.first,
            "second": g.second,
            "cells": [
                {
                    "N": c.n_params,
                    "D": c.tokens,
                    "FLOPs": c.train_flops,
                    "first_loss": c.first_loss,
                    "second_loss": c.second_loss,
                    "gap": c.gap,
                    "ci": c.ci,
                    "n_seeds": c.n_seeds,
                }
                for c in g.cells
            ],
            "first_lower": g.first_lower,
            "second_lower": g.second_lower,
            "mean_gap": g.mean_gap,
            "mean_ci": g.mean_ci,
            "trends": [
                {
                    "axis": t.axis,
                    "slope_per_decade": t.slope,
                    "ci": t.ci,
                    "n_cells": t.n_cells,
                    "controls": list(t.controls),
                    "significant": t.significant,
                }
                for t in g.trends
            ],
            "faster": g.faster,
            "text": g.text,
        }
    )


def holdout_to_dict(p: HoldoutPrediction) -> dict[str, Any]:
    """One held-out cell's prediction as a JSON-ready dict."""
    return _clean(
        {
            "group": group_label(p.group),
            "form": p.form,
            "slice": p.slice,
            "N": p.n_params,
            "D": p.tokens,
            "n_held_out": p.n_held_out,
            "n_fitted": p.n_fitted,
            "predicted": p.predicted,
            "actual": p.actual,
            "relative_error": p.relative_error,
            "interval": p.interval,
            "inside": p.inside,
            "e_mode": p.e_mode,
        }
    )


def competence(analysis: Analysis) -> dict[str, Any]:
    """Per group: the untrained eval loss (each run's first eval, at step 0), the final losses and
    the smallest drop between them: whether the models learned at all."""
    runs, hist = analysis.table.finished, analysis.table.histories
    evals = hist[(hist["metric"] == "eval/loss") & (hist["step"] == 0)] if not hist.empty else hist
    first = dict(zip(evals["run_id"], evals["value"])) if not evals.empty else {}
    out = []
    groups = runs.groupby(list(analysis.by), dropna=False, sort=True) if analysis.by else [((), runs)]
    for key, rows in groups:
        values = key if isinstance(key, tuple) else (key,)
        final = rows["loss"].to_numpy(float)
        start = np.array([first.get(r, np.nan) for r in rows["run_id"]])
        drop = start - final
        out.append(
            {
                "group": group_label(dict(zip(analysis.by, values))),
                "untrained_loss": float(np.nanmedian(start)) if np.isfinite(start).any() else None,
                "final_loss": [float(np.nanmin(final)), float(np.nanmax(final))] if final.size else None,
                "min_drop": float(np.nanmin(drop)) if np.isfinite(drop).any() else None,
            }
        )
    return _clean(out)


def phase_to_dict(diagram: PhaseDiagram | None) -> dict[str, Any] | None:
    """A task study's phase diagram: one row per (depth, γ) cell of competent runs."""
    if diagram is None:
        return None
    solutions = diagram.solutions()
    cells = []
    for (depth, gamma), row in diagram.cells.iterrows():
        cell = {"depth": int(depth), "gamma": float(gamma), "solution": solutions[(depth, gamma)]}
        for metric in PHASE_METRICS:
            name = metric.removeprefix("probe/")
            cell[name] = {
                "mean": row[(metric, "mean")],
                "sd": row[(metric, "std")],
                "runs": int(row[(metric, "count")]),
            }
        cells.append(cell)
    return {
        "competent_seen_accuracy": COMPETENT_SEEN_ACCURACY,
        "runs": diagram.runs,
        "not_competent": diagram.not_competent,
        "empty_cells": [{"depth": int(d), "gamma": float(g)} for d, g in diagram.empty_cells],
        "summary": diagram.summary(),
        "cells": cells,
        "runs_by_gamma": [
            {"gamma": float(gamma), **{k: int(v) for k, v in row.items()}}
            for gamma, row in diagram.by_gamma().iterrows()
        ],
        "cells_agreeing": dict(zip(("agree", "with_several_runs"), diagram.cells_agreeing(), strict=True)),
    }


def selection_to_dict(selection: Selection | None) -> dict[str, Any] | None:
    """The runs' narrowing to each point's best value of some columns (``--best-over``), or None."""
    if selection is None:
        return None
    return {
        "keys": list(selection.keys),
        "runs_before": selection.runs_before,
        "points": [
            {
                "point": choice.point,
                "chosen": choice.chosen,
                "at_edge": list(choice.at_edge),
                "tried": [{"values": values, "loss": _num(loss)} for values, loss in choice.losses],
            }
            for choice in selection.choices
        ],
    }


def analysis_to_dict(analysis: Analysis) -> dict[str, Any]:
    """The whole analysis: the ``--json`` document and the content of ``fit.json``."""
    runs = analysis.table.runs
    not_fitted = analysis.table.not_finished
    return _clean(
        {
            "schema": SCHEMA_VERSION,
            "source": analysis.table.source,
            "name": analysis.table.name,
            "by": list(analysis.by),
            "forms": list(analysis.forms),
            "n_bootstrap": analysis.n_bootstrap,
            "ci_level": analysis.ci_level,
            "seed": analysis.seed,
            "e_mode": analysis.e_mode,
            "e_known": analysis.e_known,
            "verdict": analysis.verdict.to_dict() if analysis.verdict else None,
            "best_over": selection_to_dict(analysis.table.selection),
            "runs": {
                "total": len(runs),
                "finished": int((runs["state"] == "finished").sum()),
                "not_fitted": [
                    {
                        "run_id": r.run_id,
                        "state": r.state,
                        "reason": r.reason if isinstance(r.reason, str) else None,
                    }
                    for r in not_fitted.itertuples()
                ],
            },
            "fits": [fit_to_dict(f) for f in analysis.fits],
            "comparison": {
                "by": list(analysis.by),
                "summary": summary_lines(analysis),
                "pairs": [comparison_to_dict(c) for c in analysis.comparisons],
            },
            "gap": [gap_to_dict(g) for g in analysis.gaps],
            "holdout_mode": analysis.holdout_mode,
            "holdout": [holdout_to_dict(p) for p in analysis.holdout],
            "competence": competence(analysis),
            "inversions": [
                {
                    "group": group_label(i.group),
                    "smaller": dict(zip(("N", "D", "loss"), i.smaller)),
                    "larger": dict(zip(("N", "D", "loss"), i.larger)),
                    "rise": i.rise,
                }
                for i in analysis.inversions
            ],
            "phase": None if analysis.scaling else phase_to_dict(table_phase_diagram(analysis.table)),
            "messages": list(analysis.messages),
        }
    )


def to_json(analysis: Analysis) -> str:
    """The analysis as one line of JSON."""
    return json.dumps(analysis_to_dict(analysis), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


FIT_CSV_PARAMS = ("E", "A", "alpha", "B", "beta", "a", "b", "N_coef", "D_coef")


def fits_rows(analysis: Analysis) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of ``fits.csv``: one row per fit, each parameter with its CI bounds."""
    group_cols = list(analysis.by)
    columns = group_cols + ["form", "slice", "ok", "n_points", "n_bootstrap", "ci_level"]
    present = [p for p in FIT_CSV_PARAMS if any(p in f.params for f in analysis.fits)]
    for p in present:
        columns += [p, f"{p}_low", f"{p}_high"]
    columns.append("messages")
    rows = []
    for f in analysis.fits:
        row: dict[str, Any] = {c: f.group.get(c) for c in group_cols}
        row.update(
            form=f.form,
            slice=";".join(f"{k}={v:.6g}" for k, v in f.slice.items()),
            ok=f.ok,
            n_points=f.n_points,
            n_bootstrap=f.n_bootstrap,
            ci_level=f.ci_level,
        )
        for p in present:
            lo, hi = f.ci.get(p, (None, None))
            row.update({p: _num(f.params.get(p)), f"{p}_low": _num(lo), f"{p}_high": _num(hi)})
        row["messages"] = " | ".join(f.messages)
        rows.append(row)
    return columns, rows


def write_outputs(analysis: Analysis, directory: Path) -> tuple[Path, Path]:
    """Write ``fit.json`` and ``fits.csv`` into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "fit.json"
    json_path.write_text(
        json.dumps(analysis_to_dict(analysis), ensure_ascii=False, allow_nan=False, indent=2) + "\n",
        encoding="utf-8",
    )
    csv_path = directory / "fits.csv"
    columns, rows = fits_rows(analysis)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return json_path, csv_path
