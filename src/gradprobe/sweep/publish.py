"""The sweep report at the end of a multirun, and (through :mod:`gradprobe.publish`, where all
W&B posting is) a copy of its figures and table as a sweep-level W&B run when the jobs log to
W&B; imported lazily, as neither is needed to train."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("gradprobe")


def report(config: DictConfig, sweep_dir: Path) -> None:
    """The sweep report (``gradprobe.report``, drawn over the keys the sweep varied), and its
    figures and table as a sweep-level W&B run in the sweep's group when the jobs log to W&B.
    Never fails the sweep."""
    from gradprobe.report import build_report

    try:
        result = build_report(sweep_dir)
    except Exception:
        log.exception("the sweep report could not be written")
        return
    log.info("sweep report: %s; %s", result["report_md"], result["axes"].describe())
    wandb_cfg = (config.get("logger") or {}).get("wandb")
    if wandb_cfg is not None:
        from gradprobe.publish import sweep_report

        sweep_report(result, sweep_dir, wandb_cfg, verbose=bool(config.get("verbose")))
