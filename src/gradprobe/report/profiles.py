"""Gradient norm per layer at initialisation, read from each run's gradflow/layers.csv: the
shape of the profile shows where along the depth gradients vanish or explode."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from gradprobe.report.plotting import NoData, colours, new_figure, save
from gradprobe.report.values import Row, num, text, value_key

Panels = dict[str, dict[tuple[str, int], np.ndarray]]
ALL = "all runs"


def init_grad_norms(run_dir: Path) -> np.ndarray | None:
    """Gradient norm per layer (index = depth - 1, output last) at step 0, or None if absent."""
    path = run_dir / "gradflow" / "layers.csv"
    if not path.is_file():
        return None
    norms: dict[int, float] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            depth, norm = num(r.get("depth")), num(r.get("grad_norm"))
            if num(r.get("step")) == 0 and depth is not None and depth >= 1:
                norms[int(depth)] = math.nan if norm is None else norm
    if not norms:
        return None
    out = np.full(max(norms), np.nan)
    for depth, norm in norms.items():
        out[depth - 1] = norm
    return out


def _geometric_mean(profiles: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(profiles)
    ok = np.isfinite(stacked) & (stacked > 0)
    logs = np.where(ok, np.log10(np.where(ok, stacked, 1.0)), 0.0)
    count = ok.sum(axis=0)
    return np.where(count > 0, 10 ** (logs.sum(axis=0) / np.maximum(count, 1)), np.nan)


def _profiles(rows: list[Row], root: Path, axes: tuple[str, ...]) -> Panels:
    """Panel (x value) -> (y value, layer count) -> geometric-mean init gradient norms; without
    an x axis one panel, without a y axis one line per layer count."""
    x, y = (axes + (None, None))[:2]
    found: dict[str, dict[tuple[str, int], list[np.ndarray]]] = {}
    for row in rows:
        try:
            norms = init_grad_norms(root / row["run_dir"])
        except (OSError, ValueError, csv.Error):
            norms = None
        if norms is not None:
            panel = found.setdefault(text(row.get(x)) if x else ALL, {})
            line = (text(row.get(y)) if y else "") or ALL
            panel.setdefault((line, len(norms)), []).append(norms)
    if not found:
        raise NoData("no run has gradflow/layers.csv with step-0 rows")
    return {p: {k: _geometric_mean(v) for k, v in sorted(found[p].items(),
                                                          key=lambda kv: value_key(kv[0][0]))}
            for p in sorted(found, key=value_key)}


def grad_profile_init(rows: list[Row], root: Path, axes: tuple[str, ...], path: Path) -> Path:
    """Gradient norm vs layer at init: one panel per x value, one line per y value."""
    panels = _profiles(rows, root, axes)
    y_values = sorted({k[0] for p in panels.values() for k in p}, key=value_key)
    colour = dict(zip(y_values, colours(len(y_values)), strict=True))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.0 * ncols + 1.8, 3.2 * nrows + 0.8)
    for i, (panel, lines) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _profile_panel(ax, lines, colour)
        title = (f"{axes[0]}={panel}" if panel else f"{axes[0]} not set") if axes else ALL
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer (1 = input side, last = output)")
        ax.set_ylabel("gradient norm at init" if i % ncols == 0 else "")
    handles = [Line2D([], [], color=colour[y], marker="o") for y in y_values]
    fig.legend(handles, y_values, title=axes[1] if len(axes) > 1 else None,
               loc="outside right upper", fontsize=8)
    fig.suptitle("Gradient norm per layer at initialisation\n(geometric mean over runs)")
    return save(fig, path)


def _at_least_decades(ax: Axes, values: list[np.ndarray], decades: float = 2.0) -> None:
    """Show at least ``decades`` on a log axis, so a flat (healthy) profile looks flat."""
    positive = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values])
    if positive.size:
        lo, hi = np.log10(positive.min()), np.log10(positive.max())
        if hi - lo < decades:
            mid = (hi + lo) / 2
            ax.set_ylim(10 ** (mid - decades / 2), 10 ** (mid + decades / 2))


def _profile_panel(ax: Axes, lines: dict[tuple[str, int], np.ndarray],
                   colour: dict[str, Any]) -> None:
    several = len({n for _, n in lines}) > 1
    for (y, n), norms in lines.items():
        depth = np.arange(1, n + 1)
        masked = np.ma.masked_where(~(np.isfinite(norms) & (norms > 0)), norms)
        ax.plot(depth, masked, marker="o", markersize=3 if n > 12 else 4, color=colour[y],
                label=f"{y} ({n} layers)" if several else y)
    ax.set_yscale("log")
    _at_least_decades(ax, list(lines.values()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.grid(alpha=0.3, which="both")
    if several:
        ax.legend(fontsize=7)
