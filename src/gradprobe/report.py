"""One report for many runs: a sweep's jobs, or every single run under a folder such as outputs/.

Everything is read from the files runs leave behind (``summary.json``, ``config_resolved.yaml``,
``metrics.csv``, ``gradflow/layers.csv``), so a report can be drawn at any time, without torch, for
finished, diverged, failed or killed runs alike. The sweep callback calls :func:`build_report` at
the end of every multirun, so odd or partial data never raises: it is reported, or left out.

    python scripts/report.py multirun/2026-11-26/20-02-21-931280
    python scripts/report.py outputs --axes optimizer.lr activation --out /tmp/report
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from gradprobe import trainability

log = logging.getLogger("gradprobe")

DEFAULT_AXES = ("model.depth", "activation")
SUMMARY = "summary.json"
CONFIG = "config_resolved.yaml"
FIGURES_DIR = "report_figures"
DPI = 110
METRIC_PREFIXES = ("train/", "val/", "test/")
SKIPPED_METRICS = ("train/loss_step",)
RATIOS = ("init_first_last_ratio", "final_first_last_ratio")
DIAGNOSIS_COLUMNS = (*RATIOS, "init_diagnosis", "final_diagnosis", "final_dead_share",
                     "final_saturated_share")
TAIL_COLUMNS = ("wall_time_s", "error", "final_diagnosis_text")
NUMERIC_EXTRA = (*RATIOS, "final_dead_share", "final_saturated_share", "wall_time_s")
STATUS_ORDER = ("completed", "diverged", "failed", "interrupted", "running")
OK = ("completed", "diverged")
CAPTIONS = {"heatmap_val_acc.png": "Final validation metric by {x} and {y}",
            "heatmap_grad_ratio.png": "First/last dL/dh ratio at init by {x} and {y}",
            "grad_profile_init.png": "Gradient norm per layer at init, per {y}",
            "training_curves.png": "Validation loss per epoch, per configuration",
            trainability.FIGURE: "Test accuracy by init.sigma_w2 and model.depth, with the "
                                 "mean-field trainable depth 6 xi_c (Schoenholz et al. 2017)"}
Row = dict[str, Any]


class NoData(Exception):
    """A figure has nothing to draw; the message says why, and goes into the report."""


@dataclass
class Block:
    """One piece of the report, rendered both as Markdown and as HTML from the same content."""

    kind: str  # "h1", "h2", "p", "table", "ul" or "img"
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    path: Path | None = None


@dataclass
class _Run:
    path: Path
    rel: str
    summary: dict[str, Any]
    config: dict[str, Any]


# ---------------------------------------------------------------- small helpers


def _num(value: Any) -> float | None:
    """A float from a JSON number or CSV cell; None when missing or not a number (NaN is kept)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _finite(values: Iterable[Any]) -> list[float]:
    nums = (_num(v) for v in values)
    return [v for v in nums if v is not None and math.isfinite(v)]


def _mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1) of the finite values: NaN/inf (diverged runs) are ignored."""
    vals = _finite(values)
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) * (v - mean) for v in vals) / (len(vals) - 1))


def _log_mean(values: Iterable[Any]) -> float | None:
    """Mean of log10 over the positive finite values: ratios span decades, so average logs."""
    logs = [math.log10(v) for v in _finite(values) if v > 0]
    return sum(logs) / len(logs) if logs else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def value_key(value: Any) -> tuple[int, float, str]:
    """Sort numbers numerically (3 < 20, 1e-3 < 1e-2) and everything else by text."""
    number = _num(value)
    if number is not None and math.isfinite(number):
        return (0, number, "")
    return (1, 0.0, _text(value))


def _path_key(rel: str) -> list[tuple[int, int, str]]:
    """Natural order for run dirs, so that job 10 comes after job 9."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", rel) if p]


def _most_common(values: Iterable[Any]) -> str:
    """The most common verdict; a tie goes to a problem over "healthy", so it is not hidden."""
    counts = Counter(v for v in values if v)
    if not counts:
        return ""
    top = max(counts.values())
    tied = [v for v, n in counts.items() if n == top]
    return next((v for v in tied if v != "healthy"), tied[0])


def _fmt(value: Any, spec: str) -> str:
    number = _num(value)
    return "–" if number is None else format(number, spec)


# ---------------------------------------------------------------- finding and reading runs


def find_run_dirs(directory: Path) -> list[Path]:
    """Every folder under ``directory`` holding a summary.json, at any depth, in natural order.

    W&B's own copies (``wandb/``) and hidden folders (``.hydra/``) are never runs.
    """
    directory = Path(directory)
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d != "wandb" and not d.startswith(".")]
        if SUMMARY in files:
            found.append(Path(root))
    return sorted(found, key=lambda p: _path_key(p.relative_to(directory).as_posix()))


def _read_summary(run_dir: Path) -> dict[str, Any]:
    """The summary, or a stand-in saying it could not be read: a broken record is still a run."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError) as e:
        return {"status": "unreadable", "error": f"{SUMMARY} could not be read: {e}"}
    if not isinstance(summary, dict):
        return {"status": "unreadable", "error": f"{SUMMARY} is not a JSON object"}
    return summary


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _lookup(config: dict[str, Any], dotted: str) -> str | None:
    """A scalar at a dotted key of the resolved config, as text; None for a group or absence."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict | list) or node is None else str(node)


def parse_overrides(overrides: Any) -> dict[str, str]:
    """``["+model.depth=20", "seed=1"]`` -> ``{"model.depth": "20", "seed": "1"}``.

    Leading ``+``/``~`` are dropped, and so are ``hydra.*`` keys: they do not change the run.
    """
    parsed: dict[str, str] = {}
    for item in overrides if isinstance(overrides, list) else []:
        if not isinstance(item, str) or "=" not in item:
            continue
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+~")
        if key and key != "hydra" and not key.startswith(("hydra.", "hydra/")):
            parsed[key] = value
    return parsed


def _choices(summary: dict[str, Any]) -> dict[str, str]:
    choices = summary.get("choices")
    if not isinstance(choices, dict):
        return {}
    return {str(k): _text(v) for k, v in choices.items() if not str(k).startswith("hydra")}


def _metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict):
        return {}
    return {k: _num(v) for k, v in metrics.items()
            if k.startswith(METRIC_PREFIXES) and k not in SKIPPED_METRICS}


def _diagnosis(summary: dict[str, Any]) -> Row:
    """The diagnosis columns of one run: verdicts joined by '+', ratios and shares as floats."""
    diagnosis = summary.get("diagnosis")
    diagnosis = diagnosis if isinstance(diagnosis, dict) else {}
    row: Row = {}
    for phase in ("init", "final"):
        part = diagnosis.get(phase)
        part = part if isinstance(part, dict) else {}
        verdicts = part.get("verdicts")
        row[f"{phase}_first_last_ratio"] = _num(part.get("first_last_ratio"))
        row[f"{phase}_diagnosis"] = ("+".join(map(str, verdicts))
                                     if isinstance(verdicts, list) and verdicts else None)
        if phase == "final":
            row["final_dead_share"] = _num(part.get("dead_share"))
            row["final_saturated_share"] = _num(part.get("saturated_share"))
            row["final_diagnosis_text"] = part.get("text") or None
    return row


def _load_runs(directory: Path) -> list[_Run]:
    runs = []
    for path in find_run_dirs(directory):
        rel = path.relative_to(directory).as_posix()
        runs.append(_Run(path, rel, _read_summary(path), _read_config(path)))
    return runs


# ---------------------------------------------------------------- rows and aggregation


def _config_columns(runs: list[_Run], axes: tuple[str, str]) -> list[str]:
    """Choice groups, then override keys, then the axes: the columns that name a configuration."""
    columns: dict[str, None] = {}
    for run in runs:
        columns.update(dict.fromkeys(_choices(run.summary)))
    for run in runs:
        columns.update(dict.fromkeys(parse_overrides(run.summary.get("overrides"))))
    columns.update(dict.fromkeys(axes))
    columns.pop("seed", None)
    return list(columns)


def _metric_columns(runs: list[_Run]) -> list[str]:
    """Every metric any run has, grouped train/, val/, test/, each in the order runs logged them."""
    seen: dict[str, None] = {}
    for run in runs:
        seen.update(dict.fromkeys(_metrics(run.summary)))
    return sorted(seen, key=lambda k: next(i for i, p in enumerate(METRIC_PREFIXES)
                                          if k.startswith(p)))


def _row(run: _Run, config_columns: list[str], metric_columns: list[str]) -> Row:
    summary, choices = run.summary, _choices(run.summary)
    overrides = parse_overrides(summary.get("overrides"))
    row: Row = {"run_dir": run.rel, "status": _text(summary.get("status")) or "unknown"}
    for col in config_columns:
        value = choices.get(col) or overrides.get(col)
        row[col] = value if value is not None else _lookup(run.config, col)
    seed = summary.get("seed", overrides.get("seed", _lookup(run.config, "seed")))
    row["seed"] = seed if seed is None or isinstance(seed, int) else _text(seed)
    metrics = _metrics(summary)
    row.update({col: metrics.get(col) for col in metric_columns})
    row.update(_diagnosis(summary))
    row["wall_time_s"] = _num(summary.get("wall_time_s"))
    row["error"] = _text(summary.get("error")) or None
    return row


def columns_of(config_columns: list[str], metric_columns: list[str]) -> list[str]:
    """runs.csv's columns: who, how it ended, its configuration, then its results."""
    return ["run_dir", "status", *config_columns, "seed", *metric_columns, *DIAGNOSIS_COLUMNS,
            *TAIL_COLUMNS]


def group_runs(rows: list[Row], config_columns: list[str]) -> dict[tuple[str, ...], list[Row]]:
    """Runs that differ only in seed (and results) share a configuration, in sorted order."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(_text(row.get(c)) for c in config_columns), []).append(row)
    return {k: groups[k] for k in sorted(groups, key=lambda k: [value_key(v) for v in k])}


def aggregate(rows: list[Row], config_columns: list[str], numeric: list[str]) -> list[Row]:
    """Per configuration: n_runs, n_completed, mean and std over seeds, most common verdict."""
    out = []
    for key, members in group_runs(rows, config_columns).items():
        agg: Row = dict(zip(config_columns, key, strict=True))
        agg["n_runs"] = len(members)
        agg["n_completed"] = sum(r["status"] == "completed" for r in members)
        for col in numeric:
            agg[f"{col}_mean"], agg[f"{col}_std"] = _mean_std(r.get(col) for r in members)
        agg["final_diagnosis"] = _most_common(r.get("final_diagnosis") for r in members)
        out.append(agg)
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_csv(path: Path, rows: list[Row], columns: list[str]) -> Path:
    """Plain CSV (no pandas needed to read it back): missing is empty, NaN is ``nan``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    return path


def varying(rows: list[Row], columns: list[str]) -> list[str]:
    """The columns whose value differs between rows: what tells configurations apart."""
    return [c for c in columns if len({_text(r.get(c)) for r in rows}) > 1]


def primary_metric(metric_columns: list[str]) -> str | None:
    """val/acc where there is one; else val/loss (regression); else any validation metric."""
    for name in ("val/acc", "val/loss"):
        if name in metric_columns:
            return name
    return next((c for c in metric_columns if c.startswith("val/")), None)


def config_label(row: Row, columns: list[str], short: bool = False) -> str:
    """``activation=relu, model.depth=3`` (``depth=3`` when short); unset keys are left out."""
    parts = [f"{c.rsplit('.', 1)[-1] if short else c}={_text(row.get(c))}"
             for c in columns if _text(row.get(c))]
    return ", ".join(parts) or "defaults"


@dataclass
class Labels:
    """How configurations are named: by the keys that differ between them. With many such keys
    (a folder of unrelated runs) names are compact: only values off the most common one."""

    columns: list[str]
    common: dict[str, str]  # key -> most common value; empty unless compact

    @classmethod
    def of_rows(cls, rows: list[Row], config_columns: list[str],
                axes: tuple[str, str]) -> Labels:
        columns = varying(rows, config_columns) or [
            a for a in axes if any(_text(r.get(a)) for r in rows)]
        if len(columns) <= 4:
            return cls(columns, {})
        common = {c: Counter(_text(r.get(c)) for r in rows).most_common(1)[0][0]
                  for c in columns}
        return cls(columns, {c: v for c, v in common.items() if v})

    @property
    def compact(self) -> bool:
        return len(self.columns) > 4

    def of(self, row: Row, short: bool = False) -> str:
        if not self.compact:
            return config_label(row, self.columns, short)
        parts = [f"{c.rsplit('.', 1)[-1] if short else c}={_text(row.get(c)) or 'unset'}"
                 for c in self.columns if _text(row.get(c)) != self.common.get(c, "")]
        return ", ".join(parts) or "most common settings"


# ---------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    fig.clear()
    return path


def _colours(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "turbo"]
    return [cmap(i) if n <= 10 else cmap(0.05 + 0.9 * i / max(n - 1, 1)) for i in range(n)]


Cells = tuple[list[str], list[str], np.ndarray, np.ndarray]


def _grid(rows: list[Row], axes: tuple[str, str], value: Callable[[Row], float | None],
          what: str) -> Cells:
    """Mean of ``value`` per (x, y) cell over every run there, NaN without one; and which cells
    hold runs at all (runs without a value show as n/a, cells without runs stay blank)."""
    x, y = axes
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        xv, yv = _text(row.get(x)), _text(row.get(y))
        if xv and yv:
            cells.setdefault((xv, yv), []).extend(_finite([value(row)]))
    if not cells:
        raise NoData(f"no run has both axes {x} and {y}")
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


def _heatmap(cells: Cells, axes: tuple[str, str], title: str, colourbar: str, path: Path,
             diverging: bool, label: Callable[[float], str]) -> Path:
    xs, ys, grid, _ = cells
    fig = _figure(max(6.0, 0.95 * len(xs) + 3.0), max(4.0, 0.5 * len(ys) + 2.0))
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
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    fig.colorbar(image, ax=ax).set_label(colourbar)
    return _save(fig, path)


def heatmap_metric(rows: list[Row], axes: tuple[str, str], metric: str | None,
                   path: Path) -> Path:
    """Mean final validation metric over the two axes, averaged over seeds and everything else."""
    if metric is None:
        raise NoData("no run has a validation metric")
    cells = _grid(rows, axes, lambda r: r.get(metric), metric)
    if metric == "val/acc":
        title, spec = "Mean final validation accuracy (val/acc)", ".2f"
    else:
        title, spec = f"Mean final {metric} (no val/acc in these runs)", ".3g"
    title += "\nmean over seeds and all other settings"
    return _heatmap(cells, axes, title, metric, path, False, lambda v: format(v, spec))


def heatmap_grad_ratio(rows: list[Row], axes: tuple[str, str], path: Path) -> Path:
    """log10 of the first/last back-propagated gradient (dL/dh) ratio at init, the ratio the
    verdicts judge: where gradients vanish or explode."""
    cells = _grid(rows, axes, lambda r: _log_mean([r.get("init_first_last_ratio")]),
                  "init_first_last_ratio")
    title = ("First/last hidden-layer ‖∂L/∂h‖ ratio at init\n"
             "geometric mean; blue = vanishing, red = exploding")
    return _heatmap(cells, axes, title, "log10 first/last ‖∂L/∂h‖ ratio at init", path, True,
                    lambda v: f"{10 ** v:.1e}")


def init_grad_norms(run_dir: Path) -> np.ndarray | None:
    """Gradient norm per layer (index = depth - 1, output last) at step 0, or None if absent."""
    path = run_dir / "gradflow" / "layers.csv"
    if not path.is_file():
        return None
    norms: dict[int, float] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            depth, norm = _num(r.get("depth")), _num(r.get("grad_norm"))
            if _num(r.get("step")) == 0 and depth is not None and depth >= 1:
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


def _profiles(rows: list[Row], root: Path,
              axes: tuple[str, str]) -> dict[str, dict[tuple[str, int], np.ndarray]]:
    """Panel (x value) -> (y value, layer count) -> geometric-mean init gradient norms."""
    found: dict[str, dict[tuple[str, int], list[np.ndarray]]] = {}
    for row in rows:
        try:
            norms = init_grad_norms(root / row["run_dir"])
        except (OSError, ValueError, csv.Error):
            norms = None
        if norms is not None:
            panel = found.setdefault(_text(row.get(axes[0])), {})
            panel.setdefault((_text(row.get(axes[1])) or "all runs", len(norms)), []).append(norms)
    if not found:
        raise NoData("no run has gradflow/layers.csv with step-0 rows")
    return {p: {k: _geometric_mean(v) for k, v in sorted(found[p].items(),
                                                          key=lambda kv: value_key(kv[0][0]))}
            for p in sorted(found, key=value_key)}


def grad_profile_init(rows: list[Row], root: Path, axes: tuple[str, str], path: Path) -> Path:
    """Gradient norm vs layer at init: one panel per x value, one line per y value."""
    panels = _profiles(rows, root, axes)
    y_values = sorted({k[0] for p in panels.values() for k in p}, key=value_key)
    colour = dict(zip(y_values, _colours(len(y_values)), strict=True))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(4.0 * ncols + 1.8, 3.2 * nrows + 0.8)
    for i, (panel, lines) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _profile_panel(ax, lines, colour)
        ax.set_title(f"{axes[0]}={panel}" if panel else f"{axes[0]} not set", fontsize=10)
        ax.set_xlabel("layer (1 = input side, last = output)")
        ax.set_ylabel("gradient norm at init" if i % ncols == 0 else "")
    handles = [Line2D([], [], color=colour[y], marker="o") for y in y_values]
    fig.legend(handles, y_values, title=axes[1], loc="outside right upper", fontsize=8)
    fig.suptitle("Gradient norm per layer at initialisation\n(geometric mean over runs)")
    return _save(fig, path)


def _at_least_decades(ax: Axes, values: list[np.ndarray], decades: float = 2.0) -> None:
    """Show at least ``decades`` on a log axis, so a flat (healthy) profile looks flat."""
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values])
    if finite.size:
        lo, hi = np.log10(finite.min()), np.log10(finite.max())
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


def val_loss_curve(run_dir: Path) -> dict[int, float]:
    """Validation loss per epoch from Lightning's metrics.csv (last value of each epoch)."""
    path = run_dir / "metrics.csv"
    curve: dict[int, float] = {}
    if path.is_file():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                epoch, loss = _num(r.get("epoch")), _num(r.get("val/loss"))
                if epoch is not None and loss is not None:
                    curve[int(epoch)] = loss
    return curve


def _sparse_label(value: float, _: Any) -> str:
    """Minor log ticks labelled at 2, 3 and 5 times a power of ten only, so they stay legible."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0.0
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _mean_curves(rows: list[Row], root: Path, config_columns: list[str],
                 labels: Labels) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    curves = {}
    for members in group_runs(rows, config_columns).values():
        per_epoch: dict[int, list[float]] = {}
        for row in members:
            try:
                curve = val_loss_curve(root / row["run_dir"])
            except (OSError, ValueError, csv.Error):
                curve = {}
            for epoch, loss in curve.items():
                per_epoch.setdefault(epoch, []).extend(_finite([loss]))
        points = sorted((e, sum(v) / len(v)) for e, v in per_epoch.items() if v)
        if points:
            label = labels.of(members[0], short=True)
            label = label if len(label) <= 60 else label[:57] + "..."
            curves[label] = (np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    return curves


def training_curves(rows: list[Row], root: Path, config_columns: list[str],
                    labels: Labels, path: Path) -> Path:
    """Validation loss per epoch, one line per configuration (mean over seeds)."""
    curves = _mean_curves(rows, root, config_columns, labels)
    if not curves:
        raise NoData("no run has a metrics.csv with finite val/loss per epoch")
    longest = max(len(label) for label in curves)
    fig = _figure(6.0 + 0.065 * longest * (1 if len(curves) <= 20 else 2), 4.5)
    ax = fig.add_subplot()
    styles = ("-", "--", ":", "-.")
    for i, ((label, (epochs, loss)), c) in enumerate(zip(curves.items(), _colours(len(curves)),
                                                         strict=True)):
        ax.plot(epochs, loss, marker="o", markersize=3, color=c, label=label,
                linestyle=styles[(i // 10) % len(styles)])
    values = np.concatenate([loss for _, loss in curves.values()])
    positive = values[values > 0]
    if positive.size and positive.max() > 10 * positive.min():
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_sparse_label)
                                     if positive.max() < 100 * positive.min() else NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    first, last = min(e.min() for e, _ in curves.values()), max(e.max() for e, _ in curves.values())
    if first == last:
        ax.set_xlim(first - 1, last + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_title("Validation loss per epoch (mean over seeds)")
    ax.grid(alpha=0.3, which="both")
    fig.legend(fontsize=8 if len(curves) <= 12 else 6, loc="outside right upper",
               ncol=1 if len(curves) <= 20 else 2)
    return _save(fig, path)


def _draw(name: str, draw: Callable[[], Path], figures: dict[str, Path],
          skipped: dict[str, str]) -> None:
    """Draw one figure; a figure without data, or one that fails, is skipped and said why."""
    try:
        figures[name] = draw()
    except NoData as e:
        skipped[name] = str(e)
    except Exception as e:  # a report must survive any one figure failing
        log.warning("report: figure %s failed: %s", name, e)
        skipped[name] = f"drawing failed ({type(e).__name__}: {e})"


# ---------------------------------------------------------------- report text


def status_line(rows: list[Row]) -> str:
    """``8 runs: 6 completed, 1 diverged, 1 failed``."""
    counts = Counter(r["status"] for r in rows)
    order = sorted(counts, key=lambda s: (STATUS_ORDER.index(s) if s in STATUS_ORDER else 99, s))
    noun = "run" if len(rows) == 1 else "runs"
    detail = ", ".join(f"{counts[s]} {s}" for s in order)
    return f"{len(rows)} {noun}: {detail}" if rows else "0 runs found"


def _table(agg: list[Row], labels: Labels, metric: str | None) -> Block:
    """The aggregate as a table; many differing keys (a folder of unrelated runs) make one
    compact ``configuration`` column rather than a wide, mostly empty table."""
    compact = labels.compact
    header = ["configuration"] if compact else list(labels.columns)
    header += ["n_runs", "completed"]
    if metric:
        header.append(f"{metric} (mean ± std)")
    header += ["init first/last ∂L/∂h ratio", "final first/last ∂L/∂h ratio", "final diagnosis"]
    spec = ".3f" if metric and metric.endswith("acc") else ".4g"
    body = []
    for a in agg:
        cells = ([labels.of(a)] if compact else [_text(a.get(c)) for c in labels.columns])
        cells += [str(a["n_runs"]), str(a["n_completed"])]
        if metric:
            mean, std = a.get(f"{metric}_mean"), a.get(f"{metric}_std")
            cells.append(_fmt(mean, spec) + (f" ± {_fmt(std, spec)}" if std is not None else ""))
        cells += [_fmt(a.get(f"{r}_mean"), ".2e") for r in RATIOS]
        cells.append(a.get("final_diagnosis") or "–")
        body.append(cells)
    return Block("table", header=header, rows=body)


def _diagnosis_lines(groups: dict[tuple[str, ...], list[Row]], agg: list[Row],
                     labels: Labels) -> list[str]:
    """``activation=sigmoid, model.depth=20: vanishing (init ratio 1.3e-08) — <diagnosis>``."""
    lines = []
    for members, a in zip(groups.values(), agg, strict=True):
        label = labels.of(members[0])
        verdict = a.get("final_diagnosis")
        if not verdict:
            statuses = ", ".join(sorted({r["status"] for r in members}))
            lines.append(f"{label}: no diagnosis (status: {statuses})")
            continue
        ratio = _log_mean(r.get("init_first_last_ratio") for r in members)
        line = f"{label}: {verdict}"
        if ratio is not None:
            line += f" (init ratio {10 ** ratio:.1e})"
        texts = [r.get("final_diagnosis_text") for r in members
                 if r.get("final_diagnosis") == verdict and r.get("final_diagnosis_text")]
        text = texts[0] if texts else None
        lines.append(f"{line} — {text}" if text else line)
    return lines


def _failed_lines(rows: list[Row], labels: Labels) -> list[str]:
    lines = []
    for r in rows:
        if r["status"] not in OK:
            error = r.get("error") or "no error recorded (killed, or still running?)"
            label = labels.of(r)
            lines.append(f"{r['run_dir']} ({r['status']}; {label}, seed={r.get('seed')}): {error}")
    return lines


def _blocks(directory: Path, rows: list[Row], agg: list[Row], groups: dict[tuple[str, ...],
            list[Row]], labels: Labels, metric: str | None, axes: tuple[str, str],
            figures: dict[str, Path], skipped: dict[str, str]) -> list[Block]:
    """The report's content, once, for both renderings."""
    blocks = [Block("h1", f"gradprobe report: {directory}"), Block("p", status_line(rows))]
    if agg:
        blocks += [Block("h2", "Configurations"), _table(agg, labels, metric)]
    if labels.common:
        common = ", ".join(f"{k}={v}" for k, v in labels.common.items())
        blocks.append(Block("p", f"Configurations differ in many keys; they are named by how "
                                 f"they differ from the most common settings: {common}."))
    blocks.append(Block("h2", "Figures"))
    blocks.append(Block("p", f"Axes: {axes[0]} (x) and {axes[1]} (y)."))
    blocks += [Block("img", text=CAPTIONS.get(name, name).format(x=axes[0], y=axes[1]), path=p)
               for name, p in figures.items()]
    if skipped:
        blocks.append(Block("p", "Figures skipped:"))
        blocks.append(Block("ul", items=[f"{name}: {why}" for name, why in skipped.items()]))
    if agg:
        blocks += [Block("h2", "Diagnosis per configuration"),
                   Block("ul", items=_diagnosis_lines(groups, agg, labels))]
    failed = _failed_lines(rows, labels)
    if failed:
        blocks += [Block("h2", "Failed runs"), Block("ul", items=failed)]
    return blocks


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


# ---------------------------------------------------------------- entry points


def _figures(rows: list[Row], root: Path, axes: tuple[str, str], config_columns: list[str],
             labels: Labels, metric: str | None,
             folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    figures: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    if not rows:
        return figures, {"all figures": "no runs"}
    _draw("heatmap_val_acc.png",
          lambda: heatmap_metric(rows, axes, metric, folder / "heatmap_val_acc.png"),
          figures, skipped)
    _draw("heatmap_grad_ratio.png",
          lambda: heatmap_grad_ratio(rows, axes, folder / "heatmap_grad_ratio.png"),
          figures, skipped)
    _draw("grad_profile_init.png",
          lambda: grad_profile_init(rows, root, axes, folder / "grad_profile_init.png"),
          figures, skipped)
    _draw("training_curves.png",
          lambda: training_curves(rows, root, config_columns, labels,
                                  folder / "training_curves.png"),
          figures, skipped)
    if trainability.applies(rows):  # a sigma_w2 x depth sweep with init=meanfield
        _draw(trainability.FIGURE, lambda: trainable_depth(rows, root, folder), figures, skipped)
    return figures, skipped


def trainable_depth(rows: list[Row], root: Path, folder: Path) -> Path:
    """Schoenholz et al.'s trainable-depth figure (:mod:`gradprobe.trainability`)."""
    try:
        sweep = trainability.read_sweep(root / row["run_dir"] for row in rows)
    except ValueError as e:
        raise NoData(str(e)) from None
    return trainability.draw(sweep, folder / trainability.FIGURE)


def build_report(directory: Path, axes: tuple[str, str] = DEFAULT_AXES,
                 out: Path | None = None) -> dict[str, Any]:
    """Write runs.csv, aggregate.csv, figures, report.md and report.html for every run found.

    Returns the paths written (``runs_csv``, ``aggregate_csv``, ``report_md``, ``report_html``,
    ``figures`` by name), ``skipped`` figures with the reason, and ``rows`` and ``aggregate``.
    """
    directory, axes = Path(directory), (str(axes[0]), str(axes[1]))
    out = Path(out) if out is not None else directory
    out.mkdir(parents=True, exist_ok=True)
    runs = _load_runs(directory) if directory.is_dir() else []
    config_columns, metric_columns = _config_columns(runs, axes), _metric_columns(runs)
    rows = [_row(run, config_columns, metric_columns) for run in runs]
    numeric = [*metric_columns, *NUMERIC_EXTRA]
    agg = aggregate(rows, config_columns, numeric)
    agg_columns = [*config_columns, "n_runs", "n_completed",
                   *(f"{c}_{s}" for c in numeric for s in ("mean", "std")), "final_diagnosis"]
    labels = Labels.of_rows(rows, config_columns, axes)
    metric = primary_metric(metric_columns)
    figures, skipped = _figures(rows, directory, axes, config_columns, labels, metric,
                                out / FIGURES_DIR)
    blocks = _blocks(directory, rows, agg, group_runs(rows, config_columns), labels,
                     metric, axes, figures, skipped)
    paths = {"runs_csv": write_csv(out / "runs.csv", rows,
                                   columns_of(config_columns, metric_columns)),
             "aggregate_csv": write_csv(out / "aggregate.csv", agg, agg_columns)}
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text(render_markdown(blocks, out))
    paths["report_html"] = out / "report.html"
    paths["report_html"].write_text(render_html(blocks))
    return {**paths, "figures": figures, "skipped": skipped, "rows": rows, "aggregate": agg}


def main(argv: list[str] | None = None) -> int:
    """``report.py <dir> [--axes X Y] [--out DIR]``; 0 on success, 2 if there is no such dir."""
    parser = argparse.ArgumentParser(
        description="Summarise a multirun (or a folder of single runs): tables, figures, "
                    "report.md and report.html.")
    parser.add_argument("directory", type=Path, help="multirun dir, or a folder of run dirs")
    parser.add_argument("--axes", nargs=2, metavar=("X", "Y"), default=list(DEFAULT_AXES),
                        help="config keys for the heatmaps' x and y axes "
                             "(default: model.depth activation)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: <dir>)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"report: {args.directory} is not a directory")
        return 2
    result = build_report(args.directory, (args.axes[0], args.axes[1]), args.out)
    print(status_line(result["rows"]))
    for name in ("runs_csv", "aggregate_csv", "report_md", "report_html"):
        print(f"wrote {result[name]}")
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    return 0
