"""The Hydra callback (``hydra.callbacks.sweep_summary`` in conf/config.yaml) that ends every
multirun with the job summary and the report, and exits 1 if a job failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gradprobe.sweep.jobs import summarize
from gradprobe.sweep.publish import report


class SweepSummary(Callback):
    """At the end of a multirun: the summary and the report, and exit 1 if a job failed.
    ``running`` names the sweep under way, for the summary an interrupted command still prints
    (``gradprobe.cli.main``)."""

    running: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.running = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        SweepSummary.running = None
        if not sweep_dir.is_dir():
            return
        failed = summarize(sweep_dir)
        if config.get("sweep", {}).get("report", True):
            report(config, sweep_dir)
        if failed:
            sys.exit(1)
