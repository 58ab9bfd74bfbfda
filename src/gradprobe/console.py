"""What a command prints: gradprobe's own lines on the console, everything in ``train.log``.

Hydra's job logging sends every logger's records both to the console and to the run's
``train.log``. Unless ``verbose=true``, the console handler keeps gradprobe's lines (where the
run writes, the init verdict, the diagnosis, the final line) and any library's warnings and
errors; the libraries' INFO lines (Lightning's "GPU available", its tips) go to ``train.log``
only. W&B's own lines (its start lines, its end-of-run history) are switched off by W&B's own
switch, ``WANDB_SILENT`` (online: ``WANDB_QUIET``, which keeps the run's URL), set from
``verbose``; its run files are the same either way. Python
warnings go through logging (Lightning warns that way), so they reach ``train.log`` and carry a
sweep job's tag. In a sweep every console line a job prints starts with its job number
(``[job 3]``), an ensemble member's too. Torch-free: the CLI sets this up before validation.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

log = logging.getLogger("gradprobe")
JOB: ContextVar[int | None] = ContextVar("gradprobe_job", default=None)  # the sweep job printing
LOG_ONLY = {"console": False}  # ``extra=`` of a line for train.log only (e.g. a traceback)
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job_logging format
# Warnings about nothing a user can change: Lightning compares ``log_every_n_steps`` with the
# Lightning calls of an epoch (a chunked epoch has few, see gradprobe.engine) while gradprobe
# logs every n-th optimizer step of the run, so the step losses are logged however short the
# epoch; a Lightning-internal deprecation; the run dir holding more than the CSV logger's files.
NOISE = (r".*is smaller than the logging interval.*", r".*treespec, LeafSpec.*",
         r".*exists and is not empty.*")


def ignore_noise() -> None:
    """Filter out :data:`NOISE` (also for runs started in-process, without the CLI)."""
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def tag(job: int | None) -> str:
    return "" if job is None else f"[job {job}] "


class Quiet(logging.Filter):
    """The console's filter: other libraries' INFO lines and train.log-only lines pass only
    with ``verbose``."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        if getattr(record, "console", True) is False:
            return False
        return record.levelno >= logging.WARNING or record.name.split(".")[0] == "gradprobe"


class Tagged(logging.Formatter):
    """Another formatter's text with the printing job's tag in front of every line."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return tagged(self.inner.format(record))


def tagged(text: str) -> str:
    prefix = tag(JOB.get())
    return "\n".join(prefix + line for line in text.split("\n")) if prefix else text


def console_handlers() -> list[logging.Handler]:
    """The root logger's handlers that write to a stream, not to a file."""
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def setup(verbose: bool = False, job: int | None = None, fmt: str | None = None,
          online: bool = False) -> None:
    """Quiet and tag the console handlers Hydra configured for this job (``fmt`` replaces
    their format, e.g. the launcher's ``[HYDRA]`` one while an ensemble trains); warnings
    through logging; W&B silent unless ``verbose`` (quiet when it logs ``online``); ``job``
    tags the lines printed from now on (None: none)."""
    JOB.set(job)
    os.environ["WANDB_SILENT"] = str(not verbose and not online).lower()
    os.environ["WANDB_QUIET"] = str(not verbose and online).lower()
    logging.captureWarnings(True)
    ignore_noise()
    for handler in console_handlers():
        for old in [f for f in handler.filters if isinstance(f, Quiet)]:
            handler.removeFilter(old)
        handler.addFilter(Quiet(verbose))
        inner = logging.Formatter(fmt) if fmt else handler.formatter
        handler.setFormatter(Tagged(inner.inner if isinstance(inner, Tagged) else inner))


@contextmanager
def job(number: int | None) -> Iterator[None]:
    """Lines printed meanwhile carry job ``number``'s tag (an ensemble member's lines)."""
    token = JOB.set(number)
    try:
        yield
    finally:
        JOB.reset(token)


def echo(text: str, stream: TextIO | None = None) -> None:
    """``print``, tagged: for lines that must not go to a log file."""
    print(tagged(text), file=stream or sys.stdout, flush=True)


def finished(summary: dict[str, Any]) -> None:
    """A job's final line: its status, time, test metrics and run directory."""
    shown = {k: round(v, 4) for k, v in summary["metrics"].items() if k.startswith("test/")}
    log.info("%s in %.1f s: %s -> %s", summary["status"], summary["wall_time_s"], shown,
             summary["run_dir"])


def log_file() -> str | None:
    """The file the root logger writes to (a run's ``train.log``), if any."""
    return next((h.baseFilename for h in logging.getLogger().handlers
                 if isinstance(h, logging.FileHandler)), None)
