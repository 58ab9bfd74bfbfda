"""Which figures a report draws, and drawing each so that one without data, or one that fails,
is skipped with the reason instead of sinking the report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gradprobe import trainability
from gradprobe.report.curves import training_curves
from gradprobe.report.heatmaps import heatmap_grad_ratio, heatmap_metric
from gradprobe.report.labels import Labels
from gradprobe.report.plotting import NoData
from gradprobe.report.profiles import grad_profile_init
from gradprobe.report.values import Row

log = logging.getLogger("gradprobe")


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


def draw_figures(rows: list[Row], root: Path, axes: tuple[str, ...], config_columns: list[str],
                 labels: Labels, metric: str | None,
                 folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Every figure that applies, as name -> path drawn, and name -> why skipped."""
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
