"""The report's content as Markdown and as HTML: both are rendered from the same blocks, so the
two files can never say different things."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Block:
    """One piece of the report, rendered both as Markdown and as HTML from the same content."""

    kind: str  # "h1", "h2", "p", "table", "ul" or "img"
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    path: Path | None = None


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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
figure{margin:1.2em 0}figcaption{color:#555;font-size:90%}h1{font-size:1.5em}"""


def _html_block(b: Block) -> str:
    esc = html.escape
    if b.kind in ("h1", "h2", "p"):
        return f"<{b.kind}>{esc(b.text)}</{b.kind}>"
    if b.kind == "ul":
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in b.items) + "</ul>"
    if b.kind == "table":
        head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                       for row in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
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
            f"<body>\n{body}\n</body></html>\n")
