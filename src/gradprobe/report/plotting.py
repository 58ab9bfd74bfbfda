"""What every report figure shares: an off-screen canvas (no display, no pyplot state), one DPI,
one palette, and ``NoData`` for a figure that has nothing to draw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


class NoData(Exception):
    """A figure has nothing to draw; the message says why, and goes into the report."""


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    fig.clear()
    return path


def colours(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "turbo"]
    return [cmap(i) if n <= 10 else cmap(0.05 + 0.9 * i / max(n - 1, 1)) for i in range(n)]
