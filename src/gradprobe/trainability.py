"""Schoenholz et al. 2017's trainable-depth figure, and how well the mean-field bound calls it.

Two inputs' correlation approaches its fixed point c* over the depth scale
xi_c = -1 / ln chi_c(c*) (``gradprobe.theory.correlation_depth_scale``); the paper finds that a
net trains only while its depth stays below about 6 xi_c (``gradprobe.theory.trainable_depth``):
a band around the critical sigma_w2 that narrows with depth. This module reads a sweep over
``init.sigma_w2`` x ``model.depth`` of mean-field-initialised MLPs from its run directories
(``summary.json``, ``config_resolved.yaml``; no torch), scores the bound (the share of cells whose
outcome, test accuracy above a threshold, is what ``depth < 6 xi_c`` predicts) and draws test
accuracy as a heat map with the 6 xi_c curve and the critical sigma_w2 over it. The sweep report
draws it (``report_figures/trainable_depth.png``) for any sweep that varies both keys with
``init=meanfield``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from gradprobe import theory

FIGURE = "trainable_depth.png"
X_KEY, Y_KEY = "init.sigma_w2", "model.depth"
THRESHOLD = 0.2  # "trains": mean test accuracy above 2x chance (10 classes)
METRICS = ("test_last/acc", "test/acc", "val/acc")  # the first the runs have; the papers
# judge the final weights (test_last/*; test/* is the best checkpoint's where both exist)


@dataclass
class Cell:
    """One (sigma_w2, depth) point: mean accuracy over its runs that finished training."""

    sigma_w2: float
    depth: int
    acc: float  # NaN when no run completed
    runs: int
    diverged: int

    def trains(self, threshold: float = THRESHOLD) -> bool:
        """Most runs completed (a diverged run did not train) and their mean is above it."""
        return 2 * self.diverged < self.runs and math.isfinite(self.acc) and self.acc > threshold


@dataclass
class Sweep:
    """A sigma_w2 x depth sweep of one activation and sigma_b2, and its mean-field bound."""

    activation: str
    sigma_b2: float
    cells: list[Cell]
    metric: str = "test/acc"
    params: dict[str, float] = field(default_factory=dict)

    @property
    def sigma_w2s(self) -> list[float]:
        return sorted({c.sigma_w2 for c in self.cells})

    @property
    def depths(self) -> list[int]:
        return sorted({c.depth for c in self.cells})

    def cell(self, sigma_w2: float, depth: int) -> Cell | None:
        return next((c for c in self.cells if c.sigma_w2 == sigma_w2 and c.depth == depth), None)

    def trainable_depth(self, sigma_w2: float) -> float:
        """6 xi_c at this sigma_w2 (inf on the critical line)."""
        return _trainable_depth(self.activation, float(sigma_w2), self.sigma_b2,
                                tuple(sorted(self.params.items())))

    def critical_sigma_w2(self) -> float:
        return theory.critical_sigma_w2(self.activation, self.sigma_b2, **self.params)

    def predicted(self, cell: Cell) -> bool:
        return cell.depth < self.trainable_depth(cell.sigma_w2)


@cache
def _trainable_depth(activation: str, sigma_w2: float, sigma_b2: float,
                     params: tuple[tuple[str, float], ...]) -> float:
    value = float(theory.trainable_depth(activation, sigma_w2, sigma_b2, **dict(params)))
    return math.inf if math.isnan(value) else value


# ---------------------------------------------------------------- reading a sweep


def applies(rows: list[dict[str, Any]]) -> bool:
    """Whether a sweep report's rows are such a sweep: mean-field init, and both init.sigma_w2
    and model.depth take more than one value (the report then draws the figure)."""
    def values(key: str) -> set[str]:
        return {str(r.get(key)) for r in rows if r.get(key) not in (None, "")}
    return (any(r.get("init") == "meanfield" for r in rows)
            and len(values(X_KEY)) > 1 and len(values(Y_KEY)) > 1)


def _read(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        config = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(summary, dict) or not isinstance(config, dict):
        return None
    return summary, config


def read_sweep(run_dirs: Iterable[Path]) -> Sweep:
    """The sweep's cells from its run directories; runs that failed or were killed are left
    out, diverged ones count as not training. ValueError when it is not such a sweep."""
    found: dict[tuple[float, int], list[tuple[str, float]]] = {}
    kinds: set[tuple[str, float, tuple[tuple[str, float], ...]]] = set()
    records = [r for r in (_read(Path(d)) for d in run_dirs) if r is not None]
    metric = next((m for m in METRICS for s, _ in records
                   if isinstance((s.get("metrics") or {}).get(m), int | float)), METRICS[0])
    for summary, config in records:
        choices = summary.get("choices") or {}
        if summary.get("status") not in ("completed", "diverged") or theory.applies(choices):
            continue
        if choices.get("init") != "meanfield":
            continue
        try:
            sigma_w2 = float(config["init"]["sigma_w2"])
            sigma_b2 = float(config["init"]["sigma_b2"])
            depth = int(config["model"]["depth"])
        except (KeyError, TypeError, ValueError):
            continue
        params = theory.activation_params(config.get("activation") or {})
        kinds.add((str(choices.get("activation")), sigma_b2, tuple(sorted(params.items()))))
        value = (summary.get("metrics") or {}).get(metric)
        acc = float(value) if isinstance(value, int | float) else math.nan
        found.setdefault((sigma_w2, depth), []).append((summary["status"], acc))
    if not found:
        raise ValueError("no completed or diverged mean-field MLP run (init=meanfield, "
                         "model=mlp, norm=none)")
    if len(kinds) > 1:
        raise ValueError("the runs mix activations or sigma_b2 values: "
                         + ", ".join(f"{a} sigma_b2={b:g}" for a, b, _ in sorted(kinds)))
    cells = []
    for (sigma_w2, depth), runs in sorted(found.items()):
        accs = [a for status, a in runs if status == "completed" and math.isfinite(a)]
        cells.append(Cell(sigma_w2, depth, sum(accs) / len(accs) if accs else math.nan,
                          len(runs), sum(status == "diverged" for status, _ in runs)))
    activation, sigma_b2, params = kinds.pop()
    sweep = Sweep(activation, sigma_b2, cells, metric, dict(params))
    if len(sweep.sigma_w2s) < 2 or len(sweep.depths) < 2:
        raise ValueError(f"the runs do not vary both {X_KEY} and {Y_KEY}")
    return sweep


# ---------------------------------------------------------------- the score


@dataclass
class Agreement:
    """How many cells' outcome (trains: accuracy above ``threshold``) the bound predicts."""

    matches: int
    cells: int
    threshold: float
    wrong: list[Cell]

    @property
    def share(self) -> float:
        return self.matches / self.cells if self.cells else math.nan

    def text(self) -> str:
        return f"{self.matches} of {self.cells} cells ({100 * self.share:.0f} %)"


def agreement(sweep: Sweep, threshold: float = THRESHOLD) -> Agreement:
    """The share of cells where "trains" (accuracy above ``threshold``) equals the prediction
    depth < 6 xi_c."""
    wrong = [c for c in sweep.cells if c.trains(threshold) != sweep.predicted(c)]
    return Agreement(len(sweep.cells) - len(wrong), len(sweep.cells), threshold, wrong)


def table(sweep: Sweep) -> str:
    """Markdown: accuracy per depth (rows, deepest first) and sigma_w2 (columns), with 6 xi_c."""
    xs = sweep.sigma_w2s
    lines = ["| depth \\ sigma_w2 | " + " | ".join(f"{x:g}" for x in xs) + " |",
             "|---" * (len(xs) + 1) + "|"]
    for depth in reversed(sweep.depths):
        cells = [sweep.cell(x, depth) for x in xs]
        lines.append(f"| {depth} | " + " | ".join(
            "" if c is None else "div" if c.diverged * 2 >= c.runs else f"{c.acc:.3f}"
            for c in cells) + " |")
    lines.append("| 6 xi_c | " + " | ".join(f"{sweep.trainable_depth(x):.0f}" for x in xs) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the figure


def _to_index(values: np.ndarray, grid: list[float], log: bool) -> np.ndarray:
    """Positions of ``values`` on a heat map whose cells sit at 0 .. n-1 for ``grid``:
    piecewise linear between grid values (in log for depth), extended past both ends."""
    g = np.log(np.asarray(grid, float)) if log else np.asarray(grid, float)
    v = np.log(np.maximum(values, 1e-300)) if log else np.asarray(values, float)
    if len(g) == 1:
        return v - g[0]
    index = np.interp(v, g, np.arange(len(g), dtype=float))
    below, above = v < g[0], v > g[-1]
    index[below] = (v[below] - g[0]) / (g[1] - g[0])
    index[above] = len(g) - 1 + (v[above] - g[-1]) / (g[-1] - g[-2])
    return index


def _edges(grid: list[float]) -> tuple[float, float]:
    """The sigma_w2 values at the outer edges of the first and last cell."""
    if len(grid) == 1:
        return grid[0] * 0.9, grid[0] * 1.1
    return grid[0] - (grid[1] - grid[0]) / 2, grid[-1] + (grid[-1] - grid[-2]) / 2


def draw(sweep: Sweep, path: Path, threshold: float = THRESHOLD) -> Path:
    """Accuracy over (sigma_w2, depth) with the 6 xi_c curve and the critical sigma_w2 on it;
    cells where the bound calls the outcome wrong are outlined in red."""
    xs, ys = sweep.sigma_w2s, sweep.depths
    grid = np.full((len(ys), len(xs)), np.nan)
    for c in sweep.cells:
        grid[ys.index(c.depth), xs.index(c.sigma_w2)] = c.acc
    score = agreement(sweep, threshold)
    fig = Figure(figsize=(max(6.5, 0.8 * len(xs) + 3.2), max(4.5, 0.55 * len(ys) + 2.6)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    finite = grid[np.isfinite(grid)]
    norm = Normalize(float(finite.min()) if finite.size else 0.0,
                     max(float(finite.max()) if finite.size else 1.0, threshold + 1e-3))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="lower",
                      aspect="auto")
    size = 9 if grid.size <= 40 else 7 if grid.size <= 150 else 5
    wrong = {id(c) for c in score.wrong}
    for c in sweep.cells:
        i, j = ys.index(c.depth), xs.index(c.sigma_w2)
        if 2 * c.diverged >= c.runs or not math.isfinite(c.acc):
            label, colour = "div" if c.diverged else "n/a", "0.2"
        else:
            r, g, b, _ = cmap(norm(c.acc))
            label = f"{c.acc:.2f}"
            colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
        ax.text(j, i, label, ha="center", va="center", fontsize=size, color=colour)
        if id(c) in wrong:
            ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                   edgecolor="tab:red", linewidth=1.6))
    lo, hi = _edges(xs)
    critical = sweep.critical_sigma_w2()
    curve_x = np.linspace(lo, hi, 81)
    if math.isfinite(critical) and lo < critical < hi:
        curve_x = np.sort(np.concatenate([curve_x, critical + np.array([-1e-3, 1e-3])]))
    curve_x = curve_x[curve_x > 0]
    curve_y = np.array([sweep.trainable_depth(x) for x in curve_x])
    top = len(ys) - 0.5
    y_index = np.minimum(_to_index(np.minimum(curve_y, 1e12), ys, log=True), top + 1)
    ax.plot(_to_index(curve_x, xs, log=False), y_index, color="white", linewidth=3.2)
    ax.plot(_to_index(curve_x, xs, log=False), y_index, color="tab:orange", linewidth=1.8)
    handles = [Line2D([], [], color="tab:orange", linewidth=1.8,
                      label=r"$6\,\xi_c$: predicted trainable depth")]
    if math.isfinite(critical):
        at = float(_to_index(np.array([critical]), xs, log=False)[0])
        ax.axvline(at, color="white", linewidth=2.6)
        ax.axvline(at, color="black", linestyle="--", linewidth=1.2)
        handles.append(Line2D([], [], color="black", linestyle="--",
                              label=rf"critical $\sigma_w^2$ = {critical:.3f}"))
    handles.append(Rectangle((0, 0), 1, 1, fill=False, edgecolor="tab:red", linewidth=1.6,
                             label="outcome not as predicted"))
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(-0.5, top)
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(r"$\sigma_w^2$ (init.sigma_w2)")
    ax.set_ylabel("depth (model.depth)")
    ax.set_title(f"{sweep.metric} of {sweep.activation} MLPs, "
                 rf"$\sigma_b^2$ = {sweep.sigma_b2:g}" "\n"
                 f"trains (> {threshold:g}) iff depth < " r"$6\,\xi_c$" f": {score.text()}",
                 fontsize=10)
    fig.colorbar(image, ax=ax).set_label(sweep.metric)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
