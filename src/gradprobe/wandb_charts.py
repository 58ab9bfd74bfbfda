"""A run's W&B page that shows depth: each per-layer statistic against depth at three moments of
training, as one W&B native chart, and ``gradflow/layers.csv`` as a W&B table.

W&B's automatic workspace draws one chart per logged key, so a deep net's per-layer scalars
(``grad/norm/layer_01`` ...) become hundreds of small charts and no depth profile. These charts
are drawn by W&B from tables stored in the run, so they show offline (``wandb leet``) and after
``wandb sync`` alike. Posted once, after the fit, from the run's files (as the figures are). The
key names are public so that dashboards can be built from them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from gradprobe.figures import KEYS, GradFlowRecord, load_gradflow

log = logging.getLogger("gradprobe")

PROFILE_PREFIX = "profile"
LAYERS_TABLE_KEY = "gradflow/layers"
MOMENTS = ("init", "mid", "end")
# Rows of the layers table; None: wandb.Table.MAX_ROWS, beyond which run.log truncates a table.
ROW_LIMIT: int | None = None


def profile_key(stat: str) -> str:
    """``grad_norm`` -> ``profile/grad_norm`` (W&B stores its data as ``<key>_table``)."""
    return f"{PROFILE_PREFIX}/{stat}"


def moments(steps: np.ndarray) -> list[tuple[str, int]]:
    """(moment, index into ``steps``): the first sampled step, the one nearest the middle of the
    sampled range, the last; a step is charted once (a short run may have fewer moments)."""
    mid = int(np.argmin(np.abs(steps - (steps[0] + steps[-1]) / 2)))
    picked: dict[int, str] = {}
    for name, i in zip(MOMENTS, (0, mid, len(steps) - 1), strict=True):
        picked.setdefault(i, name)
    return [(name, i) for i, name in picked.items()]


def profile_charts(record: GradFlowRecord) -> dict[str, Any]:
    """``profile/<stat>``: a line series per moment, depth on x; NaN points are left out
    (a gap), a statistic without any finite value is not charted (dead_frac without ReLU)."""
    import wandb

    depth = np.arange(1, len(record.layers) + 1)
    charts = {}
    for stat, values in record.stats.items():
        if not np.isfinite(values).any():
            continue
        xs, ys, keys = [], [], []
        for name, i in moments(record.steps):
            finite = np.isfinite(values[i])
            if finite.any():
                xs.append(depth[finite].tolist())
                ys.append(values[i][finite].tolist())
                keys.append(f"{name} (step {record.steps[i]})")
        charts[profile_key(stat)] = wandb.plot.line_series(
            xs, ys, keys=keys, title=f"{stat} by depth", xname="depth")
    return charts


def kept_steps(n_steps: int, n_layers: int, limit: int) -> list[int]:
    """Indices of the sampled steps the table keeps: all, or evenly spaced ones (first and last
    always) whose rows fit in ``limit``."""
    most = max(2, limit // max(n_layers, 1))
    if n_steps * n_layers <= limit or n_steps <= most:
        return list(range(n_steps))
    return np.unique(np.linspace(0, n_steps - 1, most).round().astype(int)).tolist()


def layers_table(record: GradFlowRecord) -> Any:
    """``layers.csv`` as a ``wandb.Table`` (same columns and rows; an empty cell is None),
    thinned to whole sampled steps if it has more rows than W&B keeps."""
    import wandb

    limit = ROW_LIMIT if ROW_LIMIT is not None else wandb.Table.MAX_ROWS
    n_steps, n_layers = len(record.steps), len(record.layers)
    keep = kept_steps(n_steps, n_layers, limit)
    if len(keep) < n_steps:
        log.info("W&B table %s: %d sampled steps x %d layers exceed its %d rows; it keeps %d "
                 "evenly spaced steps (first and last among them), layers.csv has all",
                 LAYERS_TABLE_KEY, n_steps, n_layers, limit, len(keep))
    stats = list(record.stats)
    rows = [[int(record.steps[i]), name, j + 1,
             *(_cell(record.stats[stat][i, j]) for stat in stats)]
            for i in keep for j, name in enumerate(record.layers)]
    return wandb.Table(columns=[*KEYS, *stats], data=rows)


def log_run_page(target: Any, run_dir: Path) -> list[str]:
    """The profile charts and the layers table of ``run_dir`` to ``target``, a W&B run or a
    Lightning ``WandbLogger``, in one ``log`` call. Returns the keys logged."""
    run = getattr(target, "experiment", target)
    record = load_gradflow(Path(run_dir))
    logged = profile_charts(record) | {LAYERS_TABLE_KEY: layers_table(record)}
    run.log(logged)
    return list(logged)


def _cell(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
