"""The sentences a reader sees first, shared by ``fit``, ``report`` and ``fit.json``.

In order: the verdict; what the data show cell by cell; the exponents; whether the law
predicted its held-out runs; where E came from. Each line states what its data support, with
the interval; a line without signal says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.analyze import Analysis
from analysis.fitting.compare import headline
from analysis.fitting.fit import FitResult
from analysis.fitting.holdout import HoldoutPrediction
from analysis.labels import FORM_TITLES, format_ci, format_number, group_label, slice_label
from analysis.measures.phase_diagram import COMPETENT_SEEN_ACCURACY, table_phase_diagram

_HOLDOUT_NOUN = {"largest-n": "largest N", "largest-d": "largest D", "largest-c": "largest compute"}


# Beyond this many pairs of groups (three groups make three), the summary counts the gap lines.
MAX_GAP_LINES = 3


def summary_lines(analysis: Analysis) -> list[str]:
    """The summary, one sentence per line, verdict first."""
    groups = analysis.groups
    if not analysis.scaling:
        diagram = table_phase_diagram(analysis.table)
        if diagram is None:
            return [
                "A task study (train.loss_on=answers) with no phase diagram: it needs runs over both γ and depth "
                f"that reach {COMPETENT_SEEN_ACCURACY:.0%} trained-pair accuracy."
            ]
        return [diagram.summary()]
    lines = []
    if analysis.verdict is not None and len(groups) >= 2:
        lines.append("Verdict: " + analysis.verdict.text)
    if len(analysis.gaps) > MAX_GAP_LINES:  # many groups: one line each would bury the rest
        lines.append(
            f"{len(analysis.gaps)} pairs of groups compared cell by cell: the report's gap section and "
            "fit.json list them."
        )
    elif len(analysis.gaps) > 1:
        lines += [g.text for g in analysis.gaps]
    lines += [c.verdict for c in headline(analysis.comparisons)]
    if not lines:
        if len(groups) < 2:
            lines.append(
                f"One group ({group_label(groups[0]) if groups else 'none'}): nothing to compare; the fits below describe its scaling."
            )
        else:
            lines.append("No two groups could be fitted with the same form: nothing to compare.")
    if analysis.inversions:
        groups_hit = sorted({group_label(i.group) for i in analysis.inversions})
        lines.append(
            f"Caution: in {len(analysis.inversions)} pair(s) of cells a larger model or budget ends at a higher loss "
            f"({', '.join(groups_hit)}); the fits and the verdict rest on runs that do not descend with scale "
            "(see the notes)."
        )
    holdout = holdout_line(analysis)
    if holdout:
        lines.append(holdout)
    e_line = e_known_line(analysis)
    if e_line:
        lines.append(e_line)
    return lines


def holdout_line(analysis: Analysis) -> str | None:
    """``Hold-out (largest N): predicted within 1.2% ...`` or None when no hold-out was made."""
    predictions = analysis.holdout
    if analysis.holdout_mode == "none":
        return None
    noun = _HOLDOUT_NOUN[analysis.holdout_mode]
    if not predictions:
        return f"Hold-out ({noun}): no fit had enough runs left to refit without its held-out ones, so nothing was predicted."
    parts = [
        f"{group_label(p.group)} {format_percent(p.relative_error)}" for p in headline_predictions(analysis)
    ]
    with_interval = [p for p in predictions if p.inside is not None]
    inside = sum(bool(p.inside) for p in with_interval)
    worst = max(abs(p.relative_error) for p in predictions)
    text = (
        f"Hold-out ({noun}, refitted without it): the law predicts the held-out runs' loss to within "
        f"{worst:.1%} over {len(predictions)} prediction(s)"
    )
    if parts:
        text += f" ({', '.join(parts)} for {_where(headline_predictions(analysis)[0])})"
    if with_interval:
        text += f"; {inside} of {len(with_interval)} measured losses lie inside their {analysis.ci_level:.0%} prediction intervals"
    return text + "."


def headline_predictions(analysis: Analysis) -> list[HoldoutPrediction]:
    """The hold-out predictions of the headline form (joint if fitted, else L(N) at the largest D)."""
    predictions = list(analysis.holdout)
    if not predictions:
        return []
    forms = [p.form for p in predictions]
    form = "joint" if "joint" in forms else forms[0]
    chosen = [p for p in predictions if p.form == form]
    if form != "joint" and any(p.slice for p in chosen):
        top = max(next(iter(p.slice.values()), 0.0) for p in chosen)
        chosen = [p for p in chosen if next(iter(p.slice.values()), 0.0) == top]
    if form == "joint":  # one cell per group: the largest D of the held-out size
        chosen = [
            max((p for p in chosen if p.group == g), key=lambda p: p.tokens) for g in _unique_groups(chosen)
        ]
    return chosen


def _unique_groups(predictions: Sequence[HoldoutPrediction]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for p in predictions:
        if p.group not in seen:
            seen.append(p.group)
    return seen


def _where(p: HoldoutPrediction) -> str:
    title = FORM_TITLES[p.form].split(" = ")[0]
    at = slice_label(p.slice) if p.slice else f"N={format_number(p.n_params)}, D={format_number(p.tokens)}"
    return f"{title} at {at}"


def format_percent(value: float) -> str:
    """``+1.2%`` for a relative error."""
    return f"{value:+.1%}" if math.isfinite(value) else "n/a"


def e_known_line(analysis: Analysis) -> str | None:
    """How far the fitted E lands from the data's known entropy rate, when the runs record it."""
    if analysis.e_known is None:
        return None
    known = analysis.e_known
    if analysis.e_mode == "known":
        return f"E is held at the data's entropy rate, {known:.4g} nats per token (--e known)."
    fits = [f for f in analysis.fits if f.ok and f.form in ("n", "d", "joint") and "E" not in f.fixed]
    joint = [f for f in fits if f.form == "joint"]
    chosen = _distinct_e(joint or fits)
    if not chosen:
        return None
    mode = "shared" if analysis.e_mode == "shared" else "per group"
    parts = []
    for fit in chosen[:4]:
        ci = format_ci(fit.ci.get("E"))
        who = "" if fit.e_mode == "shared" else f" for {group_label(fit.group)}"
        parts.append(
            f"{FORM_TITLES[fit.form].split(' = ')[0]}{' at ' + slice_label(fit.slice) if fit.slice else ''}{who}: "
            f"E = {format_number(fit.params['E'])}{' ' + ci if ci else ''} ({fit.params['E'] - known:+.3g})"
        )
    caveat = (
        ""
        if joint or not any(f.slice for f in chosen)
        else (
            " A one-variable law at a fixed D (or N) also holds what that D (or N) leaves, so its E lies above the entropy "
            "rate by construction."
        )
    )
    return (
        f"The data's entropy rate is {known:.4g} nats per token; the fitted E ({mode}): "
        + "; ".join(parts)
        + "."
        + caveat
    )


def _distinct_e(fits: Sequence[FitResult]) -> list[FitResult]:
    """One fit per distinct E (a shared E once per joint fit), largest slice first."""
    out, seen = [], set()
    for fit in sorted(fits, key=lambda f: -next(iter(f.slice.values()), 0.0)):
        key = (
            fit.form,
            tuple(sorted(fit.slice.items())),
            None if fit.e_mode == "shared" else repr(fit.group),
        )
        if key not in seen and np.isfinite(fit.params.get("E", np.nan)):
            seen.add(key)
            out.append(fit)
    return out
