"""Heatmaps over the report's axes (two, or one as a single row): the final validation metric,
and the first/last gradient ratio at init (where gradients vanish or explode)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize

from gradprobe.report.plotting import NoData, new_figure, save
from gradprobe.report.values import Row, finite, log_mean, text, value_key

Cells = tuple[list[str], list[str], np.ndarray, np.ndarray]
ALL = "all runs"  # the one row of a heatmap over one axis


def _grid(rows: list[Row], axes: tuple[str, ...], value: Callable[[Row], float | None],
          what: str) -> Cells:
    """Mean of ``value`` per (x, y) cell over every run there, NaN without one; and which cells
    hold runs at all (runs without a value show as n/a, cells without runs stay blank). With one
    axis the grid is one row over it."""
    if not axes:
        raise NoData("the runs vary in no configuration key (pass --axes to choose one)")
    x, y = axes[0], (axes[1] if len(axes) > 1 else None)
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        xv, yv = text(row.get(x)), (text(row.get(y)) if y else ALL)
        if xv and yv:
            cells.setdefault((xv, yv), []).extend(finite([value(row)]))
    if not cells:
        raise NoData(f"no run has both axes {x} and {y}" if y else f"no run has {x}")
    if not any(cells.values()):
        raise NoData(f"no run has a finite {what}")
    xs = sorted({k[0] for k in cells}, key=value_key)
    ys = sorted({k[1] for k in cells}, key=value_key)
    grid = np.full((len(ys), len(xs)), np.nan)
    has_runs = np.zeros(grid.shape, dtype=bool)
    for (xv, yv), vals in cells.items():
        has_runs[ys.index(yv), xs.index(xv)] = True
        if vals:
            grid[ys.index(yv), xs.index(xv)] = sum(vals) / len(vals)
    return xs, ys, grid, has_runs


def _annotate(ax: Axes, cells: Cells, cmap: Colormap, norm: Normalize,
              label: Callable[[float], str]) -> None:
    """Each cell's value, white on dark colours and black on light ones; n/a where runs lack it."""
    grid, has_runs = cells[2], cells[3]
    size = 9 if grid.size <= 40 else 7 if grid.size <= 150 else 5
    for (i, j), v in np.ndenumerate(grid):
        if not math.isfinite(v):
            if has_runs[i, j]:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=size, color="0.3")
            continue
        r, g, b, _ = cmap(norm(v))
        colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
        ax.text(j, i, label(v), ha="center", va="center", fontsize=size, color=colour)


def _heatmap(cells: Cells, axes: tuple[str, ...], title: str, colourbar: str, path: Path,
             diverging: bool, label: Callable[[float], str]) -> Path:
    xs, ys, grid, _ = cells
    fig = new_figure(max(6.0, 0.95 * len(xs) + 3.0), max(4.0 if len(ys) > 1 else 3.0,
                                                          0.5 * len(ys) + 2.0))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdBu_r" if diverging else "viridis"].with_extremes(bad="0.85")
    lo, hi = float(np.nanmin(grid)), float(np.nanmax(grid))
    if diverging:
        lim = max(1.0, abs(lo), abs(hi))
        lo, hi = -lim, lim
    elif hi - lo < 1e-12:
        pad = max(abs(hi) * 0.05, 1e-3)
        lo, hi = lo - pad, hi + pad
    norm = Normalize(lo, hi)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
    _annotate(ax, cells, cmap, norm, label)
    ax.set_xticks(range(len(xs)), xs, rotation=45 if max(map(len, xs)) > 6 else 0)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1] if len(axes) > 1 else "")
    ax.set_title(title)
    fig.colorbar(image, ax=ax).set_label(colourbar)
    return save(fig, path)


def heatmap_metric(rows: list[Row], axes: tuple[str, ...], metric: str | None,
                   path: Path) -> Path:
    """Mean final validation metric over the axes, averaged over seeds and everything else."""
    if metric is None:
        raise NoData("no run has a validation metric")
    cells = _grid(rows, axes, lambda r: r.get(metric), metric)
    if metric == "val/acc":
        title, spec = "Mean final validation accuracy (val/acc)", ".2f"
    else:
        title, spec = f"Mean final {metric} (no val/acc in these runs)", ".3g"
    title += "\nmean over seeds and all other settings"
    return _heatmap(cells, axes, title, metric, path, False, lambda v: format(v, spec))


def heatmap_grad_ratio(rows: list[Row], axes: tuple[str, ...], path: Path) -> Path:
    """log10 of the first/last back-propagated gradient (dL/dh) ratio at init, the ratio the
    verdicts judge: where gradients vanish or explode."""
    cells = _grid(rows, axes, lambda r: log_mean([r.get("init_first_last_ratio")]),
                  "init_first_last_ratio")
    title = ("First/last hidden-layer ‖∂L/∂h‖ ratio at init\n"
             "geometric mean; blue = vanishing, red = exploding")
    return _heatmap(cells, axes, title, "log10 first/last ‖∂L/∂h‖ ratio at init", path, True,
                    lambda v: f"{10 ** v:.1e}")
