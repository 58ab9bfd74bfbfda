"""A picture of a workspace's layout, drawn from the spec (``--preview FILE.png``): its sections
and panels in order, each panel with its title and what it holds, to check what a save would make
without a W&B account. It is a diagram, not W&B's rendering."""

from __future__ import annotations

import math
from pathlib import Path

import wandb_workspaces.workspaces as ws
from matplotlib.patches import FancyBboxPatch

from gradprobe.report.plotting import new_figure, save

KINDS = {"LinePlot": "line plot", "CustomChart": "native chart", "BarPlot": "bar chart",
         "ParallelCoordinatesPlot": "parallel coordinates", "MediaBrowser": "images",
         "WeavePanelSummaryTable": "table", "RunComparer": "run comparer",
         "MarkdownPanel": "text"}
FILL = {"line plot": "#dbe9f6", "native chart": "#fde2c8", "table": "#e3f1dc",
        "parallel coordinates": "#efe0f3", "images": "#f3f3d6"}


def describe_panel(panel: object) -> tuple[str, str]:
    """(title, what it holds) of one panel."""
    kind = KINDS.get(type(panel).__name__, type(panel).__name__)
    title = getattr(panel, "title", None) or ""
    if kind == "line plot":
        return title, f"line plot, {len(panel.y)} series"  # type: ignore[attr-defined]
    if kind == "native chart":
        table = panel.query["summaryTable"]["tableKey"]  # type: ignore[attr-defined]
        return table.removesuffix("_table"), "native chart: depth x, init/mid/end"
    if kind == "parallel coordinates":
        return title, f"parallel coordinates, {len(panel.columns)} axes"  # type: ignore
    if kind == "table":
        return panel.table_name, "table"  # type: ignore[attr-defined]
    if kind == "images":
        return title, f"images: {len(panel.media_keys)} keys"  # type: ignore[attr-defined]
    return title or kind, kind


def draw(view: ws.Workspace, path: Path, columns: int = 4) -> Path:
    rows = [(s.name, [describe_panel(p) for p in s.panels]) for s in view.sections]
    height = sum(0.45 + 0.75 * math.ceil(len(panels) / columns) for _, panels in rows)
    fig = new_figure(13, height + 0.6)
    fig.set_layout_engine("none")  # one axes spanning the figure, laid out by hand
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, columns)
    ax.set_ylim(height + 0.6, 0)
    ax.axis("off")
    ax.text(0.02, 0.3, f"{view.name}: layout drawn from the workspace spec", fontsize=12,
            weight="bold")
    y = 0.6
    for name, panels in rows:
        ax.text(0.02, y + 0.3, f"▾ {name}", fontsize=11, weight="bold")
        y += 0.45
        for i, (title, holds) in enumerate(panels):
            x, top = i % columns, y + 0.75 * (i // columns)
            kind = holds.split(",")[0].split(":")[0]
            ax.add_patch(_box(x + 0.03, top + 0.04, FILL.get(kind, "#eeeeee")))
            ax.text(x + 0.08, top + 0.3, title[:42], fontsize=8.5, weight="bold")
            ax.text(x + 0.08, top + 0.55, holds[:48], fontsize=8, color="#444444")
        y += 0.75 * math.ceil(len(panels) / columns)
    return save(fig, path)


def _box(x: float, y: float, colour: str) -> FancyBboxPatch:

    return FancyBboxPatch((x, y), 0.94, 0.64, boxstyle="round,pad=0.0,rounding_size=0.05",
                          facecolor=colour, edgecolor="#999999", linewidth=0.8)
