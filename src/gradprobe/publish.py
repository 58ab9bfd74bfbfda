"""After the fit: a run's figures drawn from its files, and everything W&B shows beyond the
logged metrics (verdicts, theory, figures; a sweep's report) posted from this one place. The
metrics themselves reach W&B through Lightning's logger, like every other logger's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("gradprobe")

THEORY_KEYS = ("phase", "chi1_star", "q_star", "depth_scale", "first_last_backprop_ratio",
               "measured_first_last_backprop_ratio", "sigma_w2", "sigma_b2", "c_star",
               "correlation_depth_scale")


def draw_figures(run_dir: Path, prediction: dict[str, Any]) -> list[str]:
    """The gradient-flow figures from the run's files; a figure that cannot be drawn must not
    fail the run that measured it."""
    from gradprobe.figures import draw_all

    try:
        return [str(p) for p in draw_all(run_dir, prediction)]
    except Exception:
        log.exception("the gradient-flow figures could not be drawn")
        return []


def post_charts(logger: Any, run_dir: Path) -> None:
    """The W&B profile charts and layers table (gradprobe.wandb_charts); like a figure, they
    must not fail the run."""
    from gradprobe.wandb_charts import log_run_page

    try:
        log_run_page(logger, run_dir)
    except Exception:
        log.exception("the W&B profile charts could not be posted")


def switches(gradflow: Any) -> dict[str, bool]:
    """What ``results`` posts, from a run's ``gradflow`` config (``gradflow=off`` has neither
    key: the defaults)."""
    return {"figures": gradflow.get("figures", True),
            "charts": gradflow.get("wandb", {}).get("profile_charts", True)}


def results(loggers: list, run_dir: Path, report: dict[str, Any] | None,
            prediction: dict[str, Any], figures: bool = True, charts: bool = True) -> list[str]:
    """Figures (when the run was monitored and ``figures``), then the verdicts, the theory and
    the figures to every W&B logger, and its profile charts (when monitored and ``charts``).
    Returns the figure paths."""
    from pytorch_lightning.loggers import WandbLogger

    paths = draw_figures(run_dir, prediction) if report and figures else []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            summary = logger.experiment.summary
            summary.update(diagnosis_summary(report or {}) | theory_summary(prediction))
            for path in paths:
                logger.log_image(key=f"figures/{Path(path).stem}", images=[path])
            if report and charts:
                post_charts(logger, run_dir)
    return paths


def diagnosis_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The init and final verdicts and both first/last ratios, as W&B summary keys."""
    out = {}
    for moment in ("init", "final"):
        if moment in report:
            verdict = report[moment]
            out |= {f"diagnosis/{moment}": ", ".join(verdict["verdicts"]),
                    f"diagnosis/{moment}_text": verdict["text"],
                    f"backprop/first_last_ratio_{moment}": verdict["first_last_ratio"],
                    f"grad/first_last_ratio_{moment}": verdict["weight_first_last_ratio"]}
    return out


def theory_summary(prediction: dict[str, Any]) -> dict[str, Any]:
    """The mean-field prediction, and the init probe's measurement, as W&B summary keys."""
    if not prediction.get("applies"):
        return {}
    return {f"theory/{k}": prediction[k] for k in THEORY_KEYS if k in prediction}


def sweep_report(result: dict[str, Any], sweep_dir: Path, wandb_cfg: Any,
                 verbose: bool = False) -> None:
    """The report's figures and runs table as one W&B run named "sweep report"; W&B's own
    console lines only when ``verbose`` (as in the jobs, gradprobe.console)."""
    import wandb

    rows = result["rows"]
    columns = sorted({key for row in rows for key in row})
    run = wandb.init(project=wandb_cfg.project, mode=wandb_cfg.mode, dir=str(sweep_dir),
                     group=str(sweep_dir.resolve()), name="sweep report", job_type="report",
                     settings=wandb.Settings(silent=not verbose))
    run.log({f"report/{Path(name).stem}": wandb.Image(str(path))
             for name, path in result["figures"].items()}
            | {"report/runs": wandb.Table(columns=columns, data=[
                [str(row.get(c, "")) for c in columns] for row in rows])})
    run.finish()
