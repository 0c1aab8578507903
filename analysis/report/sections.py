"""What a report section of measurements is: figures, tables and lines, or a one-line absence."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    lead: str
    figures: tuple[go.Figure, ...] = ()
    tables: tuple[Table, ...] = ()
    lines: tuple[str, ...] = ()  # sentences shown above the figures (findings, notes)


@dataclass(frozen=True)
class Absent:
    title: str
    reason: str

    @property
    def note(self) -> str:
        return f"{self.title}: not shown — {self.reason}."
