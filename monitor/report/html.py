"""The page around the plots: one HTML document with its style inline, no script, no external
resource (fonts: the reader's system sans-serif; the plots' text is drawn as paths)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from monitor.report.records import Table

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
  color: #1d1d1f; background: #fafafa; margin: 0; }
header { background: #17324d; color: #fff; padding: 18px 32px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #cfdbe6; }
nav { padding: 8px 32px; background: #eef2f6; border-bottom: 1px solid #d8e0e8; font-size: 13px; }
nav a { margin-right: 16px; color: #17324d; }
main { padding: 8px 32px 40px; max-width: 1180px; }
section { margin: 22px 0 30px; }
h2 { font-size: 18px; border-bottom: 2px solid #17324d; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 13px; margin: 10px 0 4px; color: #3a4652; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { background: #fff; border: 1px solid #dde3ea; border-radius: 6px; padding: 8px 14px;
  min-width: 120px; }
.card b { display: block; font-size: 20px; }
.card span { color: #5b6672; font-size: 12px; }
figure { margin: 8px 0 16px; background: #fff; border: 1px solid #e3e7ec; border-radius: 6px; padding: 8px; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; margin: 6px 0 14px; background: #fff; font-size: 13px;
  display: block; width: fit-content; max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #dde3ea; padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #5b6672; font-size: 12.5px; }
.empty { color: #5b6672; font-style: italic; }
.flag { color: #b00020; font-weight: bold; }
.explain { background: #fff; border-left: 4px solid #d62728; padding: 6px 12px; margin: 8px 0; }
code { font-size: 12.5px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The document: ``sections`` are (anchor, heading, body HTML)."""
    nav = " ".join(f'<a href="#{a}">{esc(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<section id="{a}">\n<h2>{esc(h)}</h2>\n{b}\n</section>' for a, h, b in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>\n"
        f"<nav>{nav}</nav>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def cards(items: Sequence[tuple[str, object]]) -> str:
    """Headline numbers: (label, value)."""
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{esc(cell(v))}</b><span>{esc(k)}</span></div>' for k, v in items)
        + "</div>"
    )


def figure(svg: str | None) -> str:
    return f"<figure>{svg}</figure>" if svg else ""


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>'


def cell(value: Any) -> str:
    """A table cell's text: numbers to 3 significant digits, ``-`` for nothing.

    >>> cell(0.123456), cell(12345), cell(None), cell(True), cell(float("nan"))
    ('0.123', '12,345', '-', 'yes', '-')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table; a row shorter than the columns is padded with empty cells."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    pad = "<td></td>"
    body = "".join(f"<tr>{''.join(map(_td, row))}{pad * (len(columns) - len(row))}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    flagged = value is True
    css = ' class="n"' if numeric else ' class="flag"' if flagged else ""
    return f"<td{css}>{esc(cell(value))}</td>"


def titled(t: Table) -> str:
    """A :class:`Table` with its title and note."""
    out = f"<h3>{esc(t.title)}</h3>" + (table(t.columns, t.rows) if t.rows else empty("no rows"))
    return out + (note(t.note) if t.note else "")
