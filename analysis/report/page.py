"""The HTML toolkit every report page is built from: one style sheet, escaping, sections,
tables, figures and the page around them.

A page is one self-contained file: plotly.js is inlined once in the head (every figure shares
it), no fonts, images or scripts are fetched, so it opens offline and can be mailed or archived
as is. Functions take text where they say so and escape it; anything called ``body`` or ``html``
is HTML the caller built (and escaped).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs

CSS = """
:root { --ink:#1d1d1f; --muted:#5f6368; --rule:#e3e3e3; --accent:#0072B2; --bad:#b3261e; --soft:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.55 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif; color:var(--ink); background:#fff; }
main { max-width: 1100px; margin: 0 auto; padding: 32px 28px 64px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
header .meta { color: var(--muted); font-size: 13px; }
nav { margin: 18px 0 8px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
h2 { font-size: 19px; margin: 40px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--rule); }
p.lead { color: var(--muted); margin: 4px 0 12px; font-size: 14px; }
.verdict { background: var(--soft); border-left: 4px solid var(--accent); padding: 14px 18px; margin: 10px 0; border-radius: 4px; }
.verdict p { margin: 6px 0; }
.verdict .sig { font-weight: 600; }
.figure { margin: 8px 0 4px; border: 1px solid var(--rule); border-radius: 6px; padding: 6px; }
.empty { color: var(--muted); font-style: italic; padding: 8px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; margin: 6px 0 4px; }
th, td { padding: 5px 8px; text-align: right; border-bottom: 1px solid var(--rule); vertical-align: top; }
th { background: var(--soft); font-weight: 600; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
tr.failed td { background: #fdecea; }
tr.failed td.state { color: var(--bad); font-weight: 600; }
tr.partial td { color: var(--muted); }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align: baseline; }
.scroll { max-height: 520px; overflow: auto; border: 1px solid var(--rule); border-radius: 6px; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--muted); }
ul.notes { font-size: 13px; color: var(--muted); }
code { font-size: 12.5px; background: var(--soft); padding: 1px 4px; border-radius: 3px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}


def escape(text: Any) -> str:
    return html.escape(str(text))


def figure(fig, div_id: str) -> str:
    if fig is None:
        return ""
    return (
        '<div class="figure">'
        + pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
        + "</div>"
    )


def section(anchor: str, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{lead_html}{body}</section>'


def empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def table(header: list[str], rows: Iterable[tuple[list[str], str]], left: Iterable[int] = (0,)) -> str:
    """An HTML table; each row is (escaped cell HTML, CSS class)."""
    left = set(left)
    head = "".join(f'<th class="{"l" if i in left else ""}">{h}</th>' for i, h in enumerate(header))
    body = []
    for cells, css in rows:
        tds = "".join(
            f'<td class="{"l" if i in left else ""}{" state" if header[i] == "state" else ""}">{c}</td>'
            for i, c in enumerate(cells)
        )
        body.append(f'<tr class="{css}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def swatch(label: str, colors: dict[str, str]) -> str:
    color = colors.get(label)
    return (f'<span class="swatch" style="background:{color}"></span>' if color else "") + escape(label)


def document(title: str, meta: str, nav: str, sections: Sequence[str], footer: str) -> str:
    """A whole report page: plotly.js inlined once in the head (every figure shares it), the
    CSS, a header with ``meta``, the ``nav`` links, the sections and the footer. ``title`` is
    text; ``meta``, ``nav``, ``sections`` and ``footer`` are HTML, escaped by the caller."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<main>
<header><h1>{escape(title)}</h1>
<div class="meta">{meta}</div></header>
<nav>{nav}</nav>
{"".join(sections)}
<footer>{footer}</footer>
</main>
</body>
</html>
"""
