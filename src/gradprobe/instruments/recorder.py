"""Sampled rows wait on the device and reach the host together, once per flush.

A row is one sampled optimizer step: a (stat, layer) matrix and a few step-level values. At a
flush every pending row is moved to the host in one copy, appended to ``layers.csv`` and
``steps.csv``, and logged to every Lightning logger under ``<namespace>/<stat>/<layer>`` keys.
For very deep nets the W&B loggers can be spared the per-layer keys and the histograms (``WANDB``):
W&B's workspace draws one chart per key, while the files and the other loggers keep everything.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradprobe.instruments.files import atomic_file
from gradprobe.instruments.stats import ACT_BINS, ACTIVATION_STATS, GRAD_BINS

GRADIENT_STATS = ("grad_norm", "weight_norm", "grad_ratio", "grad_mean_abs", "backprop_norm")
LAYER_STATS = (*GRADIENT_STATS, "update_ratio", *ACTIVATION_STATS)
STEP_STATS = ("grad_global_norm_preclip", "grad_global_norm", "grad_first_last_ratio")
# What W&B loggers receive (conf/gradflow/default.yaml's ``wandb`` block): the per-layer scalar
# keys, the per-layer histograms. Step-level keys always.
WANDB = {"per_layer_scalars": True, "histograms": True}


def metric_key(stat: str) -> str:
    """``grad_norm`` -> ``grad/norm``, ``update_ratio`` -> ``update/ratio``,
    ``pre_mean`` -> ``act/pre_mean``: one namespace per instrument."""
    if stat.startswith("pre_"):
        return f"act/{stat}"
    namespace, name = stat.split("_", 1)
    return f"{namespace}/{name}"


@dataclass
class Row:
    step: int
    layers: Tensor  # (len(LAYER_STATS), n_layers), NaN where not measured
    steps: Tensor  # (len(STEP_STATS),)
    grad_hist: Tensor | None = None  # (n_layers, bins) on histogram steps
    act_hist: Tensor | None = None


@dataclass
class HostRow:
    step: int
    layers: dict[str, list[float]]
    steps: dict[str, float]


@dataclass
class Recorder:
    out_dir: Path
    layer_names: list[str]
    pending: list[Row] = field(default_factory=list)
    history: list[HostRow] = field(default_factory=list)
    hist_steps: list[int] = field(default_factory=list)
    grad_hists: list[np.ndarray] = field(default_factory=list)
    act_hists: list[np.ndarray] = field(default_factory=list)
    wandb: dict[str, bool] = field(default_factory=lambda: dict(WANDB))

    def load(self) -> None:
        """Continue the files a resumed run left (``resume.cut_history`` already cut them at
        its checkpoint): their rows become this recorder's history, to diagnose and append to."""
        layer_file, step_file = self.out_dir / "layers.csv", self.out_dir / "steps.csv"
        if not (layer_file.exists() and step_file.exists()):
            return
        with open(step_file, newline="") as f:
            rows = {int(r["step"]): HostRow(int(r["step"]), {s: [] for s in LAYER_STATS},
                                            {s: _number(r[s]) for s in STEP_STATS})
                    for r in csv.DictReader(f)}
        with open(layer_file, newline="") as f:
            for r in csv.DictReader(f):
                row = rows[int(r["step"])]
                for stat in LAYER_STATS:
                    row.layers[stat].append(_number(r.get(stat) or ""))
        self.history = [rows[step] for step in sorted(rows)]
        hist_file = self.out_dir / "histograms.npz"
        if hist_file.exists():
            with np.load(hist_file) as z:
                self.hist_steps = z["steps"].tolist()
                self.grad_hists, self.act_hists = list(z["grad_counts"]), list(z["act_counts"])

    def new_row(self, step: int, device: torch.device) -> Row:
        n = len(self.layer_names)
        # float32 whatever the default dtype: "-true" precisions set it inside the forward
        return Row(step, torch.full((len(LAYER_STATS), n), math.nan, device=device,
                                    dtype=torch.float32),
                   torch.full((len(STEP_STATS),), math.nan, device=device, dtype=torch.float32))

    def flush(self, loggers: list[Any], write: bool) -> list[HostRow]:
        """Move pending rows to the host (one copy), then write and log them if ``write``."""
        if not self.pending:
            return []
        rows, self.pending = self.pending, []
        layers = torch.stack([r.layers for r in rows]).cpu().numpy()
        steps = torch.stack([r.steps for r in rows]).cpu().numpy()
        host = [HostRow(r.step, {s: layers[i, k].tolist() for k, s in enumerate(LAYER_STATS)},
                        {s: float(steps[i, k]) for k, s in enumerate(STEP_STATS)})
                for i, r in enumerate(rows)]
        self.history.extend(host)
        hist_rows = [r for r in rows if r.grad_hist is not None]
        if hist_rows:
            self.hist_steps += [r.step for r in hist_rows]
            self.grad_hists += list(torch.stack([r.grad_hist for r in hist_rows]).cpu().numpy())
            self.act_hists += list(torch.stack([r.act_hist for r in hist_rows]).cpu().numpy())
        if write:
            self._append_csv(host)
            self._log(host, loggers)
            if hist_rows:
                self._save_histograms(loggers, len(hist_rows))
        return host

    def _append_csv(self, host: list[HostRow]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        layer_file, step_file = self.out_dir / "layers.csv", self.out_dir / "steps.csv"
        new = not layer_file.exists()
        with open(layer_file, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "layer", "depth", *LAYER_STATS])
            for row in host:
                for j, name in enumerate(self.layer_names):
                    w.writerow([row.step, name, j + 1,
                                *(_cell(row.layers[s][j]) for s in LAYER_STATS)])
        new = not step_file.exists()
        with open(step_file, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", *STEP_STATS])
            for row in host:
                w.writerow([row.step, *(_cell(row.steps[s]) for s in STEP_STATS)])

    def metrics(self, row: HostRow) -> dict[str, float]:
        """One row as logger metrics: ``grad/norm/layer_03``, ``grad/global_norm``, ..."""
        metrics = {metric_key(s): v for s, v in row.steps.items() if not math.isnan(v)}
        for stat, values in row.layers.items():
            key = metric_key(stat)
            metrics |= {f"{key}/{name}": v for name, v in zip(self.layer_names, values,
                                                              strict=True)
                        if not math.isnan(v)}
        return metrics

    @cached_property
    def layer_keys(self) -> frozenset[str]:
        """Every per-layer metric key (``grad/norm/layer_01``, ...), made once."""
        return frozenset(f"{metric_key(s)}/{n}" for s in LAYER_STATS for n in self.layer_names)

    def log_metrics(self, loggers: list[Any], metrics: dict[str, float], step: int) -> None:
        """``metrics`` to every logger, less the per-layer keys for W&B loggers when
        ``wandb["per_layer_scalars"]`` is off."""
        for logger in loggers:
            if not self.wandb["per_layer_scalars"] and _is_wandb(logger):
                logger.log_metrics({k: v for k, v in metrics.items()
                                    if k not in self.layer_keys}, step=step)
            else:
                logger.log_metrics(metrics, step=step)

    def log_histograms(self, loggers: list[Any], first: int = 0) -> None:
        """The histograms from the ``first``-th on to every logger that takes them (W&B
        loggers only with ``wandb["histograms"]``)."""
        for logger in loggers:
            if getattr(logger, "experiment", None) is None or (
                    not self.wandb["histograms"] and _is_wandb(logger)):
                continue
            for k in range(first, len(self.hist_steps)):
                log_histograms(logger, self.hist_steps[k], self.layer_names,
                               self.grad_hists[k], self.act_hists[k])

    def _log(self, host: list[HostRow], loggers: list[Any]) -> None:
        for row in host:
            self.log_metrics(loggers, self.metrics(row), row.step)

    def _save_histograms(self, loggers: list[Any], newest: int) -> None:
        with atomic_file(self.out_dir / "histograms.npz", "wb") as f:  # rewritten each flush
            np.savez(f, steps=np.array(self.hist_steps), layers=np.array(self.layer_names),
                     grad_edges=GRAD_BINS.edges.numpy(), grad_counts=np.stack(self.grad_hists),
                     act_edges=ACT_BINS.edges.numpy(), act_counts=np.stack(self.act_hists))
        self.log_histograms(loggers, first=len(self.hist_steps) - newest)


def _is_wandb(logger: Any) -> bool:
    from pytorch_lightning.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def log_histograms(logger: Any, step: int, names: list[str], grad: np.ndarray,
                    act: np.ndarray) -> None:
    """Counts with fixed edges: W&B histograms and TensorBoard raw histograms."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    hists = {f"grad_hist/log10_abs/{n}": (grad[j], GRAD_BINS.edges.numpy())
             for j, n in enumerate(names)}
    hists |= {f"act_hist/value/{n}": (act[j], ACT_BINS.edges.numpy())
              for j, n in enumerate(names) if act[j].sum() > 0}
    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log({k: wandb.Histogram(np_histogram=(c.tolist(), e.tolist()))
                               for k, (c, e) in hists.items()} | {"trainer/global_step": step})
    elif isinstance(logger, TensorBoardLogger):
        for key, (counts, edges) in hists.items():
            centres = (edges[:-1] + edges[1:]) / 2
            total = float(counts.sum())
            logger.experiment.add_histogram_raw(
                key, min=float(edges[0]), max=float(edges[-1]), num=total,
                sum=float((counts * centres).sum()), sum_squares=float((counts * centres**2).sum()),
                bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(), global_step=step)


def _number(cell: str) -> float:
    return float(cell) if cell else math.nan


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(value)
