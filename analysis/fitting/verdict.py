"""The conclusion a report leads with, and the summary sentences that carry it.

The verdict names the setting whose scaling curve descends faster, and on what basis:

1. ``"exponent"``: the headline exponent comparisons (:func:`analysis.fitting.compare.headline`) that
   are significant all name the same group. When the data's gap moves the other way, a sentence
   says why that is no contradiction: the other curve drops more nats per decade because it
   lies further above the shared floor, while the exponent measures the approach to it;
2. ``"gap_trend"``: otherwise, the paired loss gap (:mod:`analysis.fitting.gap`) moves significantly
   toward one group as scale grows (along N when N varies, else D, else compute) and that group
   is lower at the largest scale: the gap widens in its favour, or the curves cross. A higher
   curve that only closes in is no verdict: a curve further above the floor both approach
   closes in like that even with an equal or smaller exponent;
3. no verdict: neither separates the settings, or they disagree (the text says which way each
   points). A grid of more than two groups gets no single verdict; its pairs are compared.

The summary never states a verdict that its plotted points contradict without one sentence on
why (exponents whose intervals overlap while one setting is lower in every cell, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analysis.fitting.compare import Comparison, headline
from analysis.fitting.gap import GapComparison, trend_text
from analysis.labels import AXIS_NOUNS, format_ci, format_number, group_label


@dataclass(frozen=True)
class Verdict:
    """``faster``: the label of the group that descends faster, or None; ``basis``: ``"exponent"``,
    ``"gap_trend"`` or None; ``significant``: whether the basis's interval excludes 0."""

    faster: str | None
    basis: str | None
    significant: bool
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "faster": self.faster,
            "basis": self.basis,
            "significant": self.significant,
            "text": self.text,
        }


def decide(
    groups: Sequence[dict[str, Any]], comparisons: Sequence[Comparison], gaps: Sequence[GapComparison]
) -> Verdict:
    """The verdict for the groups of one analysis (see the module docstring for the rules)."""
    if len(groups) < 2:
        return Verdict(None, None, False, "One group: nothing to compare.")
    if len(groups) > 2:
        return Verdict(
            None, None, False, f"{len(groups)} groups: no single verdict; see the pairwise comparisons."
        )
    lead = [c for c in headline(comparisons) if c.form != "isoflop"]
    gap = gaps[0] if gaps else None
    winners = {group_label(c.faster) for c in lead if c.faster is not None}
    trend = gap.headline_trend if gap is not None else None
    gap_winner = group_label(gap.faster) if gap is not None and gap.faster is not None else None
    exponents = _exponent_clause(lead)
    on_data = _gap_clause(gap)
    if len(winners) > 1:
        return Verdict(None, None, False, f"No verdict: the exponents disagree ({exponents}).")
    if winners:
        winner = winners.pop()
        text = f"{winner} descends faster: {exponents}."
        if gap_winner is not None and gap_winner != winner:
            text += (
                f" On the data, {on_data}: {gap_winner}'s loss falls by more nats per decade here because it lies "
                f"further above the floor both approach; the exponent measures that approach, and it favours {winner}."
            )
        elif on_data:
            text += f" On the data themselves, {on_data}."
        return Verdict(winner, "exponent", True, text)
    if gap_winner is not None:
        noun = AXIS_NOUNS.get(trend.axis, trend.axis)
        why = f" ({exponents}; the exponents do not separate the settings)" if exponents else ""
        if _lower_at_largest(gap) == gap_winner:
            return Verdict(
                gap_winner,
                "gap_trend",
                True,
                f"{gap_winner} descends faster with {noun} on the data: {on_data}{why}.",
            )
        return Verdict(
            None,
            None,
            False,
            f"No verdict: {on_data}, but {gap_winner} is still the higher curve at the largest scale: it closes in, as a "
            f"curve further above the floor both approach does even with an equal or smaller exponent{why}.",
        )
    if (
        gap is not None
        and (gap.first_lower == len(gap.cells) or gap.second_lower == len(gap.cells))
        and len(gap.cells) >= 2
    ):
        lower = group_label(gap.first if gap.first_lower else gap.second)
        text = (
            f"No verdict on the slope: {lower} is lower in every cell, but neither the exponents"
            f"{' (' + exponents + ')' if exponents else ''} nor the gap's trend with scale separate the settings: "
            f"{lower} is better at these scales, not shown to descend faster."
        )
        return Verdict(None, None, False, text)
    parts = [p for p in (exponents, on_data) if p]
    return Verdict(
        None,
        None,
        False,
        "No verdict: " + ("; ".join(parts) if parts else "nothing separates the settings") + ".",
    )


def _lower_at_largest(gap: GapComparison) -> str | None:
    """The group with the lower loss in the cell(s) at the largest scale along the headline trend."""
    trend = gap.headline_trend
    scale = {"N": lambda c: c.n_params, "D": lambda c: c.tokens, "FLOPs": lambda c: c.train_flops}[trend.axis]
    top = max(scale(c) for c in gap.cells)
    gaps = [c.gap for c in gap.cells if scale(c) >= top / 1.05]
    mean = sum(gaps) / len(gaps)
    return group_label(gap.first) if mean > 0 else group_label(gap.second) if mean < 0 else None


def _exponent_clause(lead: Sequence[Comparison]) -> str:
    """``α = 0.41 [0.35, 0.47] for γ=1.0 vs 0.33 [0.28, 0.38] for γ=0.5, difference 0.08 [0.03, 0.13]``."""
    out = []
    for c in lead:
        if c.difference_ci is None:
            continue
        sym = {"alpha": "α", "beta": "β"}.get(c.exponent, c.exponent)
        first, second = group_label(c.first), group_label(c.second)
        out.append(
            f"{sym} = {format_number(c.first_value)} {format_ci(c.first_ci)} for {first} vs "
            f"{format_number(c.second_value)} {format_ci(c.second_ci)} for {second}, difference "
            f"{format_number(c.difference)} {format_ci(c.difference_ci)}"
            + ("" if c.excludes_zero else " (includes 0)")
        )
    return "; ".join(out)


def _gap_clause(gap: GapComparison | None) -> str:
    if gap is None:
        return ""
    one, two = group_label(gap.first), group_label(gap.second)
    lower, count = (one, gap.first_lower) if gap.first_lower >= gap.second_lower else (two, gap.second_lower)
    text = f"{lower} is lower in {count} of {len(gap.cells)} cells"
    trend = gap.headline_trend
    if trend is not None:
        text += " and " + trend_text(trend, one, two)
    return text
