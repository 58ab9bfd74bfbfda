"""Validation loss per epoch, one line per configuration, from Lightning's metrics.csv: how
training went, not only where it ended."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from gradprobe.report.labels import Labels
from gradprobe.report.plotting import NoData, colours, new_figure, save
from gradprobe.report.table import group_runs
from gradprobe.report.values import Row, finite, num

Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def val_loss_curve(run_dir: Path) -> dict[int, float]:
    """Validation loss per epoch from Lightning's metrics.csv (last value of each epoch)."""
    path = run_dir / "metrics.csv"
    curve: dict[int, float] = {}
    if path.is_file():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                epoch, loss = num(r.get("epoch")), num(r.get("val/loss"))
                if epoch is not None and loss is not None:
                    curve[int(epoch)] = loss
    return curve


def _sparse_label(value: float, _: Any) -> str:
    """Minor log ticks labelled at 2, 3 and 5 times a power of ten only, so they stay legible."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0.0
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _mean_curves(rows: list[Row], root: Path, config_columns: list[str],
                 labels: Labels) -> Curves:
    curves = {}
    for members in group_runs(rows, config_columns).values():
        per_epoch: dict[int, list[float]] = {}
        for row in members:
            try:
                curve = val_loss_curve(root / row["run_dir"])
            except (OSError, ValueError, csv.Error):
                curve = {}
            for epoch, loss in curve.items():
                per_epoch.setdefault(epoch, []).extend(finite([loss]))
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
    fig = new_figure(6.0 + 0.065 * longest * (1 if len(curves) <= 20 else 2), 4.5)
    ax = fig.add_subplot()
    styles = ("-", "--", ":", "-.")
    for i, ((label, (epochs, loss)), c) in enumerate(zip(curves.items(), colours(len(curves)),
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
    return save(fig, path)
