"""Each setting at its best value of a nuisance knob, such as the learning rate.

A comparison of γ at one shared learning rate is a comparison of how well that rate suits each
γ. Sweeping the rate as an axis and keeping, per point of the other axes (N, D, γ, …), the runs
at the rate with the lowest final loss compares the settings each at its own best rate, as the
γ-initialization papers and μP-style studies do.

The choice is made per *point*: every combination of the grid's other varying columns, the
seed excepted, so that the seeds of a point share one chosen value (the mean over seeds picks
it) rather than each seed picking its own luckiest one. A value with fewer finished runs loses
to one with more (a rate where a seed diverged is not chosen over one where none did). The
choice and the reported loss come from the same eval set: an optimistic bias of the order of
the seed noise, alike for every group. A chosen value at the edge of the values tried is
flagged: the optimum may lie beyond them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError, warning
from analysis.labels import group_label, plain_value
from analysis.load import CORE_COLUMNS, RunTable, varying_columns

SEED_COLUMN = "seed"
MISSING = "∅"  # a missing value in a point's key, so that groupby keeps it


@dataclass(frozen=True)
class Choice:
    """The value of the chosen-over columns kept at one point, and what each value scored."""

    point: dict[str, Any]  # the other varying columns (and N, D) of the point
    chosen: dict[str, Any]  # the kept value of each chosen-over column
    losses: tuple[tuple[dict[str, Any], float], ...]  # each value tried: mean final loss (nan: none finished)
    at_edge: tuple[str, ...]  # chosen-over columns whose kept value is the lowest or highest tried


@dataclass(frozen=True)
class Selection:
    """What :func:`best_over` kept: the columns chosen over and one choice per point."""

    keys: tuple[str, ...]
    choices: tuple[Choice, ...]
    runs_before: int


def best_over(table: RunTable, keys: Sequence[str]) -> RunTable:
    """``table`` with only the runs at the best value of ``keys`` at each point.

    Raises :class:`AnalysisError` for a column that is not a varying config column of the
    table. The returned table records the :class:`Selection` and a note on it (and a warning
    when a kept value is at the edge of the values tried).
    """
    keys = tuple(keys)
    if not keys:
        return table
    runs = table.runs
    for key in keys:
        if key in CORE_COLUMNS or key == SEED_COLUMN or key not in table.axes:
            axes = ", ".join(a for a in table.axes if a != SEED_COLUMN) or "none"
            raise AnalysisError(
                f"--best-over: '{key}' is not a varying config column of {table.name} (varying columns: {axes})"
            )
    point_keys = [c for c in ("N", "D", *table.axes) if c not in keys and c != SEED_COLUMN]
    frame = runs.assign(_done=(runs["state"] == "finished") & runs["loss"].notna())
    kept: list[str] = []
    choices: list[Choice] = []
    for _, rows in frame.groupby(_keyed(frame, point_keys), sort=True):
        scored = []
        for _, setting in rows.groupby(_keyed(rows, keys), sort=True):
            done = setting[setting["_done"]]
            mean = float(done["loss"].mean()) if len(done) else math.nan
            # Fewer runs not finished first, then the lower mean loss.
            rank = (len(setting) - len(done), mean if len(done) else math.inf)
            scored.append((rank, setting))
        scored.sort(key=lambda item: [_order(item[1].iloc[0][k]) for k in keys])  # values in order
        rank, best = min(scored, key=lambda item: item[0])
        if rank[1] == math.inf:  # no value finished a run: keep them all, to show how they ended
            kept += list(rows["run_id"])
            continue
        kept += list(best["run_id"])
        first = best.iloc[0]
        chosen = {k: plain_value(first[k]) for k in keys}
        losses = tuple(
            (
                {k: plain_value(s.iloc[0][k]) for k in keys},
                float(s.loc[s["_done"], "loss"].mean()) if s["_done"].any() else math.nan,
            )
            for _, s in scored
        )
        choices.append(
            Choice(
                point={k: plain_value(first[k]) for k in point_keys},
                chosen=chosen,
                losses=losses,
                at_edge=_at_edge(chosen, [values for values, _ in losses]),
            )
        )
    selection = Selection(keys, tuple(choices), len(runs))
    keep = runs["run_id"].isin(set(kept))
    selected = runs[keep].reset_index(drop=True)
    histories = table.histories[table.histories["run_id"].isin(set(selected["run_id"]))]
    return dataclasses.replace(
        table,
        runs=selected,
        histories=histories.reset_index(drop=True),
        axes=varying_columns(selected, exclude=CORE_COLUMNS),
        messages=table.messages + selection_notes(selection, len(selected)),
        selection=selection,
    )


def selection_notes(selection: Selection, n_kept: int) -> tuple[str, ...]:
    """One note on what was kept, and a warning naming the points whose choice is at an edge."""
    names = ", ".join(selection.keys)
    counts: dict[str, int] = {}
    for choice in selection.choices:
        label = group_label(choice.chosen)
        counts[label] = counts.get(label, 0) + 1
    kept = "; ".join(f"{label} at {n}" for label, n in counts.items())
    notes = [
        f"each point at its best {names} (lowest mean final loss over seeds): {n_kept} of "
        f"{selection.runs_before} runs kept; {kept} of {len(selection.choices)} points"
    ]
    edges = [c for c in selection.choices if c.at_edge]
    if edges:
        where = "; ".join(point_label(c.point) for c in edges[:4]) + ("; …" if len(edges) > 4 else "")
        notes.append(
            warning(
                f"the best {names} is at the edge of the values tried at {len(edges)} of "
                f"{len(selection.choices)} points ({where}): the optimum may lie beyond them"
            )
        )
    return tuple(notes)


def point_label(point: dict[str, Any]) -> str:
    """A point by its swept values (``model.preset=100k, γ=0.3``); by N and D only when nothing
    else varies, since they follow from the swept values."""
    swept = {k: v for k, v in point.items() if k not in ("N", "D")}
    return group_label(swept or point)


def _keyed(frame: pd.DataFrame, columns: Sequence[str]) -> list[pd.Series]:
    """``columns`` of ``frame`` as groupby keys, a missing value standing for itself."""
    return [frame[c].map(lambda v: MISSING if _missing(v) else repr(v)) for c in columns]


def _at_edge(chosen: dict[str, Any], tried: list[dict[str, Any]]) -> tuple[str, ...]:
    """The numeric columns whose chosen value is the lowest or highest among at least two tried."""
    edge = []
    for key, value in chosen.items():
        values = {t[key] for t in tried if _number(t[key])}
        if _number(value) and len(values) >= 2 and value in (min(values), max(values)):
            edge.append(key)
    return tuple(edge)


def _order(value: Any) -> tuple[int, Any]:
    """A sort key that puts numbers in numeric order, then anything else by its text."""
    return (0, value) if _number(value) else (1, repr(value))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not _missing(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
