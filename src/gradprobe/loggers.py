"""Lightning's CSV logger, continuing an existing ``metrics.csv`` instead of deleting it.

Lightning's writer removes ``metrics.csv`` when its folder is not empty, which is every run
directory, so a resumed run lost its history. ``resume.cut_history`` first drops the rows logged
after the checkpoint; this writer then appends under the file's header (widened, with the old
rows kept, when new keys appear, as Lightning already does).
"""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class CSVLogger(LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
