"""Markdown for a suite's results, and its place in BENCHMARKS.md.

Each suite (quick, cpu, gpu) owns one block of BENCHMARKS.md between
``<!-- generated:NAME:begin -->`` and ``<!-- generated:NAME:end -->``; rewriting it leaves the
rest of the file, the prose that explains the figures, as it is. Results are rendered
generically (scalars as a list, lists of rows as tables), so a benchmark that grows a field
shows it without a change here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from targets import TARGETS


def rewrite_generated(path: Path, suite: str, document: dict) -> None:
    begin, end = f"<!-- generated:{suite}:begin -->", f"<!-- generated:{suite}:end -->"
    block = f"{begin}\n{render(document)}\n{end}"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## Results: {suite} suite\n\n{block}\n"
    path.write_text(text)


def render(document: dict) -> str:
    machine = document["machine"]
    lines = [
        f"Command: `{document['command']}` (full results: `benchmarks/results/{document['suite']}.json`)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"torch {machine['torch']}; {machine['date']}; load average {_number(machine['load_before'])} before, "
        f"{_number(machine['load_after'])} after.",
        "",
    ]
    if document["figures"]:
        lines += ["| figure | value | target | met |", "| --- | --- | --- | --- |"]
        for key, value in document["figures"].items():
            target, sense = TARGETS[key]
            bound = "≤" if sense == "max" else "≥"
            met = "yes" if document["targets_met"][key] else "**no**"
            lines.append(f"| `{key}` | {_number(value)} | {bound} {_number(target)} | {met} |")
        lines.append("")
    for bench, result in document["results"].items():
        lines += [f"**{bench}**", ""]
        lines += _render_result(result)
    return "\n".join(lines).rstrip()


def _render_result(result: dict) -> list[str]:
    scalars = {k: v for k, v in result.items() if not _is_rows(v)}
    lines = []
    if scalars:
        lines.append("; ".join(f"{k} {_value(v)}" for k, v in scalars.items()))
        lines.append("")
    for rows in result.values():
        if _is_rows(rows):
            columns = list(dict.fromkeys(c for row in rows for c in row))
            lines += [f"| {' | '.join(columns)} |", f"| {' | '.join('---' for _ in columns)} |"]
            lines += [f"| {' | '.join(_value(row.get(c)) for c in columns)} |" for row in rows]
            lines.append("")
    return lines


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.3g}"
