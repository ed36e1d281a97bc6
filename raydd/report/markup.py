"""HTML building blocks for the reports: one page template, escaped tables, embedded images.

Everything a page needs travels inside it (CSS inline, PNGs as data URIs, a Content-Security-Policy
that forbids any fetch), so a report can be mailed, archived or opened offline and still look the same.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from string import Template
from typing import Any, Iterable, Sequence

import raydd

CSS = """
:root { --ink: #1d2330; --muted: #5d6678; --line: #d9dde5; --soft: #f4f6f9; --best: #dff3e3; --accent: #2f5fb3; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin: 0 0 4px; font-size: 24px; }
header .sub { margin: 0; color: var(--muted); }
nav { margin-top: 10px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
main { padding: 8px 32px 32px; max-width: 1240px; }
section { margin-top: 26px; }
h2 { font-size: 19px; margin: 0 0 4px; padding-bottom: 3px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 14px 0 6px; }
p.why { margin: 4px 0 10px; color: var(--muted); font-size: 13.5px; }
p.note { margin: 6px 0; color: var(--muted); font-style: italic; font-size: 13.5px; }
.facts { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0 0; padding: 0; list-style: none; }
.facts li { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 5px 10px; font-size: 13px; }
.facts b { display: block; font-size: 11px; color: var(--muted); font-weight: 600; text-transform: uppercase;
           letter-spacing: .03em; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
#comparison-table td:first-child, #trials-table td:nth-child(2) { white-space: nowrap; }
td.best, tr.best td { background: var(--best); font-weight: 600; }
figure { margin: 8px 0 12px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 3px; }
.pair { display: flex; gap: 18px; align-items: flex-start; max-width: 1000px; }
.pair figure { flex: 1 1 0; min-width: 0; }
.pair img { width: 100%; }
.thumbs { display: flex; flex-wrap: wrap; gap: 16px; }
.thumbs figure { flex: 0 1 300px; }
.thumbs img { width: 300px; }
pre { background: var(--soft); border: 1px solid var(--line); padding: 10px 12px; font-size: 12.5px;
      line-height: 1.35; overflow-x: auto; max-height: 640px; }
.captioned { display: flex; flex-wrap: wrap; gap: 10px; margin: 4px 0 12px; }
.captioned figure { width: 150px; margin: 0; }
.captioned img { width: 84px; image-rendering: pixelated; }
.captioned figcaption { font-size: 12px; color: var(--ink); }
.captioned .sim { color: var(--muted); }
footer { padding: 12px 32px 24px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); }
"""

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>${title}</title>
<style>${css}</style>
</head>
<body>
<header>
<h1>${title}</h1>
<p class="sub">${subtitle}</p>
${facts}
<nav>${nav}</nav>
</header>
<main>
${sections}
</main>
<footer>${footer}</footer>
</body>
</html>
""")

SECTION = Template("""<section id="${anchor}">
<h2>${heading}</h2>
<p class="why">${why}</p>
${body}
</section>""")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str, *, caption: str | None = None, css_class: str | None = None) -> str:
    """An embedded PNG in a <figure>; ``alt`` says what it shows for screen readers and tests."""
    cls = f' class="{esc(css_class)}"' if css_class else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure{cls}><img src="{data_uri(png)}" alt="{esc(alt)}">{cap}</figure>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


class Cell:
    """A table cell with its own classes (``num``, ``best``); plain values become escaped text cells."""

    def __init__(self, text: Any, *, numeric: bool = False, best: bool = False, raw: bool = False) -> None:
        self.text = str(text) if raw else esc(text)
        self.classes = [c for c, on in (("num", numeric), ("best", best)) if on]

    def render(self) -> str:
        cls = f' class="{" ".join(self.classes)}"' if self.classes else ""
        return f"<td{cls}>{self.text}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, css_id: str | None = None,
          row_classes: Sequence[str | None] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join((c if isinstance(c, Cell) else Cell(c)).render() for c in row)
        cls = row_classes[i] if row_classes and i < len(row_classes) else None
        body.append(f'<tr class="{esc(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    ident = f' id="{esc(css_id)}"' if css_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def facts(items: Sequence[tuple[str, Any]]) -> str:
    """The key facts of a page as small labelled boxes; empty values are left out."""
    shown = [(k, v) for k, v in items if v not in (None, "")]
    if not shown:
        return ""
    return '<ul class="facts">' + "".join(f"<li><b>{esc(k)}</b>{esc(v)}</li>" for k, v in shown) + "</ul>"


def section(anchor: str, heading: str, why: str, body: str) -> str:
    return SECTION.substitute(anchor=esc(anchor), heading=esc(heading), why=esc(why), body=body)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str, str]], *,
         fact_items: Sequence[tuple[str, Any]] = ()) -> str:
    """A whole document; ``sections`` are (anchor, heading, why, body-html) in display order."""
    nav = "".join(f'<a href="#{esc(anchor)}">{esc(heading)}</a>' for anchor, heading, _, _ in sections)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return PAGE.substitute(
        title=esc(title),
        subtitle=esc(subtitle),
        css=CSS,
        facts=facts(fact_items),
        nav=nav,
        sections="\n".join(section(*s) for s in sections),
        footer=esc(f"raydd {raydd.__version__} · written {stamp} · self-contained: images embedded, no network"),
    )
