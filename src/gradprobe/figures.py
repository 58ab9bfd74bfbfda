"""Figures of a run's gradient flow, drawn only from the files the recorder left in ``gradflow/``.

Reading files rather than live tensors means any finished (or killed) run can be redrawn later,
on a machine without torch, and a figure always shows what was actually recorded. Figures are
plain :class:`~matplotlib.figure.Figure` objects on an Agg canvas, never pyplot's, so drawing
changes no global backend state and leaks no open figures.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110
KEYS = ("step", "layer", "depth")  # the layers.csv columns that index; all others are statistics
ACT_STATS = ("act_mean", "act_std", "act_zero_frac", "act_dead_frac", "act_saturated_frac")


@dataclass
class Histograms:
    """Binned log10|gradient| and activation values per sampled step and layer."""

    steps: np.ndarray  # (S,)
    layers: list[str]  # (L,)
    grad_edges: np.ndarray  # (B1 + 1,)
    grad_counts: np.ndarray  # (S, L, B1)
    act_edges: np.ndarray  # (B2 + 1,)
    act_counts: np.ndarray  # (S, L, B2); all zero for a layer without an activation


@dataclass
class GradFlowRecord:
    """A run's gradient-flow statistics as arrays indexed [step, layer], layers in depth order."""

    steps: np.ndarray  # (S,) sampled optimizer steps, ascending; 0 = at initialisation
    layers: list[str]  # (L,) input side first, ``output`` last
    stats: dict[str, np.ndarray]  # layers.csv column -> (S, L); NaN where not recorded
    step_stats: dict[str, np.ndarray]  # steps.csv column -> (S,), aligned with ``steps``
    hist: Histograms | None  # None when histograms.npz is missing

    def stat(self, name: str) -> np.ndarray:
        """A statistic as (S, L), all NaN if the recorder did not write that column."""
        return self.stats.get(name, np.full((len(self.steps), len(self.layers)), np.nan))

    def hidden(self) -> list[int]:
        """Indices of the layers that have activation statistics (i.e. not ``output``)."""
        has = np.zeros(len(self.layers), dtype=bool)
        for name in ACT_STATS:
            has |= np.isfinite(self.stat(name)).any(axis=0)
        return [i for i in range(len(self.layers)) if has[i]]


def _float(cell: str | None) -> float:
    return float(cell) if cell and cell.strip() else math.nan


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def load_gradflow(run_dir: Path) -> GradFlowRecord:
    """Read ``<run_dir>/gradflow``; layer order comes from the ``depth`` column, not row order."""
    folder = Path(run_dir) / "gradflow"
    header, rows = _read_csv(folder / "layers.csv")
    if not rows:
        raise ValueError(f"{folder / 'layers.csv'} has no rows: nothing was recorded")
    steps = np.array(sorted({int(float(r["step"])) for r in rows}), dtype=np.int64)
    names = {int(float(r["depth"])): r["layer"] for r in rows}
    layers = [names[d] for d in sorted(names)]
    s_index = {int(s): i for i, s in enumerate(steps)}
    l_index = {d: i for i, d in enumerate(sorted(names))}
    stats = {c: np.full((len(steps), len(layers)), np.nan) for c in header if c not in KEYS}
    for r in rows:
        i, j = s_index[int(float(r["step"]))], l_index[int(float(r["depth"]))]
        for c, values in stats.items():
            values[i, j] = _float(r.get(c))

    step_stats: dict[str, np.ndarray] = {}
    if (folder / "steps.csv").exists():
        header, rows = _read_csv(folder / "steps.csv")
        step_stats = {c: np.full(len(steps), np.nan) for c in header if c != "step"}
        for r in rows:
            i = s_index.get(int(float(r["step"])))
            for c, values in step_stats.items():
                if i is not None:
                    values[i] = _float(r.get(c))

    hist = None
    if (folder / "histograms.npz").exists():
        with np.load(folder / "histograms.npz") as z:
            hist = Histograms(z["steps"], [str(n) for n in z["layers"]], z["grad_edges"],
                              z["grad_counts"], z["act_edges"], z["act_counts"])
    return GradFlowRecord(steps, layers, stats, step_stats, hist)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_path: Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI, bbox_inches="tight")
    fig.clear()  # not pyplot-managed, so nothing to close; clearing frees the artists now
    return out_path


def _thin(n: int, most: int) -> list[int]:
    """Every k-th index, first and last kept, so that at most about ``most`` labels stay legible."""
    k = max(1, math.ceil(n / most))
    idx = list(range(0, n, k))
    if idx[-1] != n - 1:
        if len(idx) > 1 and n - 1 - idx[-1] < k / 2:
            idx[-1] = n - 1
        else:
            idx.append(n - 1)
    return idx


def _colours(n: int) -> np.ndarray:
    """Input side dark blue to output side orange; stops short of plasma's pale yellow."""
    return matplotlib.colormaps["plasma"](np.linspace(0.0, 0.85, max(n, 1)))


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges half way between sampled steps, so that uneven sampling is drawn to scale."""
    x = np.asarray(x, dtype=float)
    if len(x) == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])


def _layer_axis(ax: Axes, layers: list[str], axis: str, most: int = 24) -> None:
    """Depth positions 1..L labelled with layer names, thinned when there are many layers."""
    ticks = _thin(len(layers), most)
    pos, labels = [i + 1 for i in ticks], [layers[i] for i in ticks]
    if axis == "x":
        crowded = len(ticks) > 8
        ax.set_xticks(pos, labels, rotation=45 if crowded else 0,
                      ha="right" if crowded else "center")
    else:
        ax.set_yticks(pos, labels)


def _step_axis(ax: Axes, steps: np.ndarray) -> None:
    """Whole-number step ticks, none outside the sampled range; a lone step gets one tick."""
    if len(steps) == 1:
        ax.set_xlim(steps[0] - 1, steps[0] + 1)
        ax.set_xticks([steps[0]])
        return
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in ax.get_xticks() if steps[0] <= t <= steps[-1]])
    ax.set_xlim(lo, hi)


def _positive_log10(values: np.ndarray) -> np.ma.MaskedArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.ma.masked_invalid(np.log10(np.where(values > 0, values, np.nan)))


def heatmap(record: GradFlowRecord, out_path: Path, title_suffix: str = "") -> Path:
    """Where along depth, and when in training, gradients vanish or explode, in one picture."""
    z = _positive_log10(record.stat("grad_norm"))
    n_layers = len(record.layers)
    fig = _figure(8.0, min(9.0, 2.5 + 0.25 * n_layers))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    norm = Normalize(float(z.min()), float(z.max())) if z.count() else Normalize(0.0, 1.0)
    mesh = ax.pcolormesh(_edges(record.steps), np.arange(n_layers + 1) + 0.5, z.T, cmap=cmap,
                         norm=norm)
    fig.colorbar(mesh, ax=ax, label="log10 ‖∂L/∂W‖")
    _layer_axis(ax, record.layers, "y")
    if len(record.steps) > 1:
        _step_axis(ax, record.steps)
    else:
        ax.set_xticks(record.steps)
    grey = "\n(grey cells: not recorded, or zero)" if np.ma.getmaskarray(z).any() else ""
    ax.set_xlabel("optimizer step (sampled; 0 = at initialisation)" + grey)
    ax.set_ylabel("layer (input side at the bottom)")
    ax.set_title("Gradient flow: log10 weight-gradient norm per layer" + title_suffix)
    return _save(fig, out_path)


def _moments(steps: np.ndarray) -> list[tuple[int, str]]:
    """Indices and names of the first, middle and last sampled steps, without repeats."""
    mid = int(np.argmin(np.abs(steps - (steps[0] + steps[-1]) / 2)))
    picks: list[tuple[int, str]] = []
    for i, name in ((0, "init" if steps[0] == 0 else "first"), (mid, "middle"),
                    (len(steps) - 1, "end")):
        if i not in [p for p, _ in picks]:
            picks.append((i, name))
    return picks


Predicted = dict[str, dict[str, float]]  # layers.csv column -> layer -> mean-field value


def profile(record: GradFlowRecord, out_path: Path, title_suffix: str = "",
            predicted: Predicted | None = None) -> Path:
    """Both gradient profiles against depth early, midway and late: the back-propagated
    ||dL/dh|| (what the verdict judges: its slope is the vanishing rate) and the weight gradient
    ||dL/dW|| (the product of the backward and forward signals, so often flatter)."""
    fig = _figure(12.0, 4.6)
    axes = fig.subplots(1, 2)
    panels = (("backprop_norm", "back-propagated gradient ‖∂L/∂h‖ (judged)"),
              ("grad_norm", "weight-gradient norm ‖∂L/∂W‖"))
    for ax, (column, label) in zip(axes, panels, strict=True):
        _profile_panel(ax, record, column, (predicted or {}).get(column))
        ax.set_ylabel(f"{label} (log scale)")
    fig.suptitle("Gradient norm per layer at the start, middle and end of training"
                 + title_suffix)
    return _save(fig, out_path)


def _profile_panel(ax: Axes, record: GradFlowRecord, column: str,
                   predicted: dict[str, float] | None, log: bool = True) -> None:
    """One statistic against depth at the first, middle and last sampled steps, with the
    mean-field prediction dashed."""
    values = record.stat(column)
    depth = np.arange(1, len(record.layers) + 1)
    marker = 6.0 if len(depth) <= 30 else 2.5
    for (i, name), colour in zip(_moments(record.steps), ("C0", "C1", "C3"), strict=False):
        y = np.where(values[i] > 0, values[i], np.nan) if log else values[i]
        ax.plot(depth, y, "o-", ms=marker, color=colour, label=f"{name} (step {record.steps[i]})")
    if predicted:
        y = np.array([predicted.get(n, np.nan) for n in record.layers], dtype=float)
        ax.plot(depth, np.where(y > 0, y, np.nan) if log else y, "--", color="black",
                label="mean-field prediction")
    if log and any((np.asarray(line.get_ydata()) > 0).any() for line in ax.get_lines()):
        ax.set_yscale("log")
    _layer_axis(ax, record.layers, "x")
    ax.set_xlabel("layer (input side → output side)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")


def similarity(record: GradFlowRecord, out_path: Path, title_suffix: str = "",
               predicted: dict[str, float] | None = None) -> Path:
    """Mean pairwise cosine of the examples' pre-activations against depth: climbing to 1 is
    input collapse (every example mapped to one direction), beside the correlation map's c_l."""
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    _profile_panel(ax, record, "pre_cosine", predicted, log=False)
    ax.set_ylim(min(-0.05, float(np.nanmin(record.stat("pre_cosine"), initial=0))), 1.05)
    ax.set_ylabel("mean pairwise cosine of pre-activations")
    ax.set_title("How alike the examples' representations are, per layer" + title_suffix)
    return _save(fig, out_path)


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def activations(record: GradFlowRecord, out_path: Path, title_suffix: str = "") -> Path:
    """Per-layer activation histograms at init and end, as in Glorot & Bengio (2010), Fig. 3-4.

    Saturation shows as mass piling up at the bounds, dying units as a spike at zero, and a
    collapse with depth as the deeper (lighter) lines narrowing.
    """
    h = record.hist
    if h is None:
        raise ValueError("this run has no gradflow/histograms.npz: no activation histograms")
    counts = h.act_counts.astype(float)
    centres, widths = (h.act_edges[1:] + h.act_edges[:-1]) / 2, np.diff(h.act_edges)
    shown = [j for j in range(len(h.layers)) if counts[:, j].sum() > 0]
    colours = dict(zip(shown, _colours(len(shown)), strict=True))
    labelled = {shown[k] for k in _thin(len(shown), 10)} if shown else set()
    fig = _figure(11.0, 4.4)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, i, name in ((axes[0], 0, "at initialisation"), (axes[1], len(h.steps) - 1, "at end")):
        drawn = False
        for j in shown:
            total = counts[i, j].sum()
            if total == 0:
                continue
            ax.plot(centres, counts[i, j] / (total * widths), color=colours[j], lw=1.3,
                    label=h.layers[j] if j in labelled else "_nolegend_")
            drawn = True
        if not drawn:
            _no_data(ax, "no activation histogram at this step")
        ax.set_title(f"{name} (step {h.steps[i]})")
        ax.set_xlabel("activation value")
        ax.set_ylabel("density")
        ax.grid(True, alpha=0.3)
    if shown:
        axes[1].legend(title="layer", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       fontsize="small")
    fig.suptitle("Activation distribution of each hidden layer (Glorot & Bengio 2010 style)"
                 + title_suffix)
    return _save(fig, out_path)


def dead_saturated(record: GradFlowRecord, out_path: Path, title_suffix: str = "") -> Path:
    """How much of each layer has stopped passing gradient: dead units and saturated units."""
    hidden = record.hidden()
    colours = _colours(len(hidden))
    labelled = {hidden[k] for k in _thin(len(hidden), 10)} if hidden else set()
    fig = _figure(11.0, 4.4)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    panels = (("act_dead_frac", "Dead units", "no activation statistics recorded"),
              ("act_saturated_frac", "Saturated units", "no bounded activation"))
    for ax, (column, title, empty) in zip(axes, panels, strict=True):
        values = record.stat(column)
        if not np.isfinite(values[:, hidden]).any():
            _no_data(ax, empty)
        else:
            for j, colour in zip(hidden, colours, strict=True):
                ax.plot(record.steps, values[:, j], "o-", ms=3, lw=1.3, color=colour,
                        label=record.layers[j] if j in labelled else "_nolegend_")
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    _step_axis(axes[0], record.steps)
    axes[0].set_ylabel("fraction of units in the layer")
    if any(ax.get_lines() for ax in axes):
        src = axes[0] if axes[0].get_lines() else axes[1]
        handles, labels = src.get_legend_handles_labels()
        axes[1].legend(handles, labels, title="layer", loc="upper left",
                       bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.suptitle("Dead and saturated units per layer over training" + title_suffix)
    return _save(fig, out_path)


def predicted_profiles(record: GradFlowRecord,
                       prediction: dict[str, Any] | None) -> Predicted | None:
    """The mean-field profiles per layer (``prediction``: a run's ``theory``): the gradient norms
    anchored at the last hidden layer's measured value at init, the cosines as predicted."""
    p = prediction or {}
    if not p.get("applies") or not len(record.steps) or record.steps[0] != 0:
        return None
    last = len(p["chi1_layers"]) - 1
    downstream = [math.prod(p["chi1_layers"][k + 1:]) ** 0.5 for k in range(last + 1)]
    profiles = {"grad_norm": (record.stat("grad_norm")[0, last], p["relative_weight_gradients"]),
                "backprop_norm": (record.stat("backprop_norm")[0, last], downstream),
                "pre_cosine": (1.0, p.get("c_layers") or [])}
    return {stat: {name: float(anchor) * r for name, r in zip(record.layers, profile,
                                                               strict=False)}
            for stat, (anchor, profile) in profiles.items()}


def draw_all(run_dir: Path, prediction: dict[str, Any] | None = None,
             title_suffix: str = "") -> list[Path]:
    """Every figure into ``<run_dir>/gradflow/figures/``, from the run's files (the mean-field
    ``prediction`` dashed beside them); activations only if histograms exist."""
    record = load_gradflow(run_dir)
    predicted = predicted_profiles(record, prediction)
    out = Path(run_dir) / "gradflow" / "figures"
    paths = [heatmap(record, out / "heatmap.png", title_suffix),
             profile(record, out / "profile.png", title_suffix, predicted=predicted),
             similarity(record, out / "similarity.png", title_suffix,
                        (predicted or {}).get("pre_cosine"))]
    if record.hist is not None and record.hist.act_counts.sum() > 0:  # a net without hidden
        paths.append(activations(record, out / "activations.png", title_suffix))  # layers has none
    paths.append(dead_saturated(record, out / "dead_saturated.png", title_suffix))
    return paths
