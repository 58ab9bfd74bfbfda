"""What runs actually logged: their summary (every key's latest value), config and tags, read
from offline runs on disk (``wandb leet inspect``, W&B's own reader: no account, no server) or
from a project on a W&B server (``wandb.Api``). The dashboard is built from these, never from a
list of keys written by hand."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from gradprobe.dashboard.keys import is_scalar, media_type
from gradprobe.errors import ConfigError

OFFLINE_RUN = "offline-run-*"
SERVER_RUNS = 100  # the newest runs read from a server: enough keys, a bounded wait


@dataclass
class LoggedRun:
    name: str
    summary: dict[str, Any]
    config: dict[str, Any]
    tags: list[str] = field(default_factory=list)

    @property
    def choices(self) -> dict[str, str]:
        """The run's Hydra choices, from its ``group:option`` tags (gradprobe tags every run)."""
        return dict(t.split(":", 1) for t in self.tags if ":" in t)


def offline_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Every offline W&B run at or under these paths (a run, sweep or outputs directory)."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"dashboard: --runs {path} does not exist")
        found |= {path} if path.match(OFFLINE_RUN) else set(path.rglob(OFFLINE_RUN))
    return sorted(p for p in found if p.is_dir())


def read_offline(run_dir: Path) -> LoggedRun:
    """One offline run through ``wandb leet inspect --summary --json``."""
    done = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
                          capture_output=True, text=True, env=os.environ | {"WANDB_SILENT": "true"})
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise ConfigError(f"dashboard: W&B could not read {run_dir}: {said[-1]}")
    record = json.loads(done.stdout)
    return LoggedRun(record.get("name") or run_dir.name, record.get("summary") or {},
                     record.get("config") or {}, list(record.get("tags") or []))


def read_paths(paths: Iterable[Path]) -> list[LoggedRun]:
    """The offline runs under these paths; a refusal when there are none."""
    dirs = offline_run_dirs(paths)
    if not dirs:
        raise ConfigError("dashboard: no offline W&B run (wandb/offline-run-*) under --runs "
                          f"{', '.join(str(p) for p in paths)}; run with logger=wandb first")
    return [read_offline(d) for d in dirs]


def read_project(entity_project: str, limit: int = SERVER_RUNS) -> list[LoggedRun]:
    """The project's newest runs on the W&B server the machine is logged in to."""
    import wandb

    try:
        api = wandb.Api(timeout=60)
        runs = [LoggedRun(run.name, dict(run.summary._json_dict), dict(run.config),
                          list(run.tags))
                for run in islice(api.runs(entity_project, order="-created_at",
                                           per_page=limit), limit)]
    except Exception as e:  # the server's or the network's: one line, not a traceback
        raise ConfigError(f"dashboard: W&B could not list the runs of {entity_project}: "
                          f"{first_line(e)}") from e
    if not runs:
        raise ConfigError(f"dashboard: project {entity_project} has no runs; sync one (wandb "
                          "sync <run dir>/wandb/offline-run-*) or pass --runs")
    return runs


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def scalar_keys(runs: list[LoggedRun]) -> set[str]:
    """The keys any run logged as numbers (W&B's own ``_step`` and the like left out)."""
    return {k for r in runs for k, v in r.summary.items()
            if is_scalar(v) and not k.startswith("_")}


def media_keys(runs: list[LoggedRun], kind: str) -> list[str]:
    """The keys any run logged as ``kind`` (image, table, histogram)."""
    return sorted({k for r in runs for k, v in r.summary.items() if media_type(v) == kind})
