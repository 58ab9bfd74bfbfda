"""Gradient-flow instruments: plain Lightning callbacks that work on any LightningModule.

This package imports torch, Lightning and numpy only, nothing of the gradprobe app; networks
meet it through one contract (:mod:`~gradprobe.instruments.layers`), engines through declared
protocols (:mod:`~gradprobe.instruments.schedule`). One module per job:

* ``gradient_flow`` -- the ``GradientFlow`` callback: wires the pieces below to Lightning hooks;
* ``schedule`` -- which steps are sampled, and the protocols engines honour;
* ``hooks`` / ``gradients`` / ``stats`` -- what a sampled step measures, on the device;
* ``recorder`` -- rows kept on the device, flushed to ``layers.csv``/``steps.csv``/histograms
  and to the loggers; ``tensorboard_layout`` -- one TensorBoard chart per statistic;
* ``guard`` -- the divergence rule and its callback; ``diagnosis`` -- verdicts on a row;
* ``jacobian`` -- layer-to-layer Jacobian spectrum at init; ``files`` -- atomic writes.

The public names load on first use, so the torch-free modules (``files``, ``diagnosis``)
import without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "GradientFlow": "gradient_flow", "Guard": "guard", "find_layers": "layers",
    "Layer": "layers", "JacobianSpectrum": "jacobian", "watch_layers": "hooks",
    "record_activations": "hooks", "record_backprop": "hooks", "last_step_of": "schedule",
    "log_histograms": "recorder", "norms_of": "gradients",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name == "guard":
        return import_module("gradprobe.instruments.guard")
    if name not in _HOMES:
        raise AttributeError(f"module 'gradprobe.instruments' has no attribute {name!r}")
    return getattr(import_module(f"gradprobe.instruments.{_HOMES[name]}"), name)
