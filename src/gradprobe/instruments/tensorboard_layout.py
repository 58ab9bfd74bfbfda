"""A TensorBoard custom-scalars layout for the recorder's keys: one chart per statistic.

TensorBoard draws every ``<namespace>/<stat>/<layer>`` key as a chart of its own, so a 30-layer
run scatters ``grad/norm`` over 31 charts. The custom_scalars plugin draws every tag a regex
matches in one multiline chart: one regex per statistic groups its layers at any depth, and the
statistics come from the recorder's own tables (``LAYER_STATS``, ``STEP_STATS``, ``metric_key``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from gradprobe.instruments.recorder import LAYER_STATS, STEP_STATS, metric_key
from gradprobe.instruments.stats import ACTIVATION_STATS, VERDICT_STATS

GRADIENT_FLOW, ACTIVATIONS = "gradient flow", "activations"

Layout = dict[str, dict[str, list[Any]]]  # SummaryWriter.add_custom_scalars' argument


def layer_regex(stat: str) -> str:
    """Every layer's tag of ``stat``: ``^grad/norm/[^/]+$``."""
    return f"^{re.escape(metric_key(stat))}/[^/]+$"


def step_charts() -> dict[str, list[str]]:
    """The step-level keys, a key and its ``_preclip`` twin in one chart
    (``grad/global_norm`` with ``grad/global_norm_preclip``)."""
    charts: dict[str, list[str]] = {}
    for stat in STEP_STATS:
        key = metric_key(stat)
        charts.setdefault(key.removesuffix("_preclip"), []).append(f"^{re.escape(key)}$")
    return charts


def layout() -> Layout:
    """Category -> chart title -> ``["Multiline", [regex, ...]]``; a chart's title is its key."""
    gradient = [s for s in LAYER_STATS if s not in ACTIVATION_STATS]
    activation = sorted(ACTIVATION_STATS, key=lambda s: s not in VERDICT_STATS)  # stable
    return {
        GRADIENT_FLOW: {metric_key(s): ["Multiline", [layer_regex(s)]] for s in gradient}
        | {title: ["Multiline", regexes] for title, regexes in step_charts().items()},
        ACTIVATIONS: {metric_key(s): ["Multiline", [layer_regex(s)]] for s in activation},
    }


def write_layout(loggers: Iterable[Any]) -> int:
    """The layout into every ``TensorBoardLogger`` among ``loggers``; returns how many. Writing
    it again (a resumed run, a second fit) is harmless: TensorBoard shows the newest."""
    from pytorch_lightning.loggers import TensorBoardLogger

    written = 0
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_custom_scalars(layout())
            written += 1
    return written
