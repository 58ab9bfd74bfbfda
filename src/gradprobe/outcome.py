"""What a finished run reports: its status, metrics, best checkpoint and summary dict, and its final
record -- one definition for a solo run (:mod:`gradprobe.run`) and for each member of an ensemble
(:mod:`gradprobe.ensemble`), so ``summary.json`` has the same keys, read the same way, whichever
trained it. A run's record is opened by ``record.start``; this module closes it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gradprobe import interrupt, record


def status_of(diverged: dict[str, Any] | None) -> str:
    """A diverged run is a result, not an error: ``diverged``, else ``completed``."""
    return "diverged" if diverged else "completed"


def metrics_of(callback_metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The run's metrics from Lightning's ``trainer.callback_metrics``: the keys under
    ``prefix`` (an ensemble member's), with the prefix taken off."""
    picked = {k[len(prefix):]: v for k, v in callback_metrics.items() if k.startswith(prefix)}
    return record.numbers(picked)


def best_path(checkpoint: Any | None) -> str | None:
    """The best checkpoint's file in this run's own folder, if it is there: a resumed run's
    ``ModelCheckpoint`` keeps the path its checkpoint recorded, which names the old folder when
    the run directory was moved or copied."""
    if checkpoint is None or not checkpoint.best_model_path:
        return None
    path = Path(checkpoint.dirpath) / Path(checkpoint.best_model_path).name
    return str(path) if path.is_file() else None


def best_of(checkpoint: Any | None) -> dict[str, Any]:
    """The best ``val/loss`` and its file, from the ``ModelCheckpoint`` that monitors it."""
    if checkpoint is None:
        return {"val/loss": None, "checkpoint": None}
    return {"val/loss": record.number(checkpoint.best_model_score),
            "checkpoint": best_path(checkpoint)}


def measured_ratio(gradflow: Any | None, prediction: dict[str, Any]) -> None:
    """The init probe's first/last backprop ratio, put beside the prediction it tests."""
    if gradflow is not None and prediction.get("applies") and "init" in gradflow.report:
        prediction["measured_first_last_backprop_ratio"] = \
            gradflow.report["init"]["backprop_first_last_ratio"]


def summary(*, status: str, metrics: dict[str, float], best: Any | None, epochs: int,
            steps: int, num_parameters: int, prediction: dict[str, Any],
            gradflow: Any | None = None, diverged: dict[str, Any] | None = None,
            jacobian: dict[str, Any] | None = None,
            tested_on: str | None = None) -> dict[str, Any]:
    """The result part of ``summary.json`` (``record.start`` wrote the rest). ``best`` is the
    ``ModelCheckpoint`` monitoring ``val/loss`` (or None); ``gradflow`` the ``GradientFlow``;
    ``tested_on`` the weights ``test/*`` measured (``best``, ``last``; None: not tested, see
    :mod:`gradprobe.tested`)."""
    out = {"status": status, "metrics": metrics, "best": best_of(best), "epochs": epochs,
           "steps": steps, "num_parameters": num_parameters, "tested_on": tested_on,
           "theory": prediction}
    if jacobian is not None:
        out["jacobian"] = jacobian
    if gradflow is not None:
        out["diagnosis"] = {k: gradflow.report[k] for k in ("init", "final")
                            if k in gradflow.report}
    out["diverged"] = diverged  # the same record the final verdict names
    return out


def ended(err: BaseException, started: float) -> dict[str, Any]:
    """The record of a run that ``err`` ended: ``interrupted`` (a signal, whatever it broke
    off, even a save) or ``failed``."""
    interrupted = interrupt.received or not isinstance(err, Exception)
    error = (f"interrupted by {interrupt.signal_name()}" if interrupt.received
             else f"{type(err).__name__}: {err}")
    return {"status": "interrupted" if interrupted else "failed", "error": error,
            "wall_time_s": round(time.time() - started, 3)}


def finish(run_dir: Path, summary: dict[str, Any], started: float) -> dict[str, Any]:
    """The final ``summary.json`` (with the wall time); the run's lock is given back."""
    summary = summary | {"wall_time_s": round(time.time() - started, 3)}
    record.finish(run_dir, summary)
    return summary
