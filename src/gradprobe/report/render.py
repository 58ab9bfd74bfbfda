"""The report's content as Markdown and as HTML: both are rendered from the same blocks, so the
two files can never say different things. Links are relative to the report, so the folder works
opened locally or moved whole; the HTML's tables sort by a click on a header (inline script, no
network)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Link:
    """A relative link in a table cell: to a run's directory, its summary, its figures."""

    text: str
    href: str


Cell = str | list[Link]


@dataclass
class Block:
    """One piece of the report, rendered both as Markdown and as HTML from the same content."""

    kind: str  # "h1", "h2", "p", "table", "ul" or "img"
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    path: Path | None = None


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, list):
        return " ".join(f"[{link.text}]({link.href})" for link in cell)
    return cell.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], out: Path) -> str:
    """Markdown with figures linked relative to ``out``, so the folder can be moved whole."""
    parts = []
    for b in blocks:
        if b.kind == "h1":
            parts.append(f"# {b.text}")
        elif b.kind == "h2":
            parts.append(f"## {b.text}")
        elif b.kind == "p":
            parts.append(b.text)
        elif b.kind == "ul":
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "img" and b.path is not None:
            parts.append(f"![{b.text}]({b.path.relative_to(out).as_posix()})")
        elif b.kind == "table":
            lines = [b.header, ["---"] * len(b.header), *b.rows]
            parts.append("\n".join("| " + " | ".join(map(_md_cell, ln)) + " |" for ln in lines))
    return "\n\n".join(parts) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;font-size:90%;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 9px;text-align:left}th{background:#eef1f5}
tr:nth-child(even){background:#fafafa}img{max-width:100%;border:1px solid #eee}
th.sortable{cursor:pointer}th[aria-sort=ascending]::after{content:" ▲"}
th[aria-sort=descending]::after{content:" ▼"}
figure{margin:1.2em 0}figcaption{color:#555;font-size:90%}h1{font-size:1.5em}"""


# Click a header to sort by that column (numbers numerically, "–" and text after them); click
# again to reverse. ``data-order`` keeps the original order for columns of links.
SORT_SCRIPT = """document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, i) {
    th.addEventListener("click", function () {
      var up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var key = function (row) {
        var cell = row.cells[i], t = cell.getAttribute("data-order") || cell.textContent.trim();
        var n = parseFloat(t);
        return isNaN(n) || !/^[-+.\\d]/.test(t) ? [1, t] : [0, n];
      };
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
        return up ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});"""


def _html_cell(cell: Cell, index: int) -> str:
    if isinstance(cell, list):
        links = " ".join(f'<a href="{html.escape(link.href)}">{html.escape(link.text)}</a>'
                         for link in cell)
        return f'<td data-order="{index:06d}">{links}</td>'
    return f"<td>{html.escape(cell)}</td>"


def _html_block(b: Block) -> str:
    esc = html.escape
    if b.kind in ("h1", "h2", "p"):
        return f"<{b.kind}>{esc(b.text)}</{b.kind}>"
    if b.kind == "ul":
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in b.items) + "</ul>"
    if b.kind == "table":
        head = "".join(f'<th class="sortable" title="sort">{esc(h)}</th>' for h in b.header)
        body = "".join("<tr>" + "".join(_html_cell(c, i) for c in row) + "</tr>"
                       for i, row in enumerate(b.rows))
        return (f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                f"</table>")
    if b.kind == "img" and b.path is not None:
        data = base64.b64encode(b.path.read_bytes()).decode("ascii")
        return (f'<figure><img alt="{esc(b.text)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(b.text)}</figcaption></figure>")
    return ""


def render_html(blocks: list[Block]) -> str:
    """A single self-contained file: figures are embedded, so it can be mailed or archived."""
    title = next((b.text for b in blocks if b.kind == "h1"), "gradprobe report")
    body = "\n".join(_html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n<script>{SORT_SCRIPT}</script>\n</body></html>\n")
