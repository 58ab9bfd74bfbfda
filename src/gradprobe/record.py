"""The run directory's records: resolved config, ``summary.json``, versions and git state.

``summary.json`` is written at the start with status ``running`` and replaced atomically at the
end with the final status, so a killed run is recognisable and a finished one is never
overwritten: :func:`start` refuses a directory whose summary already says how the run ended.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SUMMARY = "summary.json"
RESOLVED_CONFIG = "config_resolved.yaml"
RESUMABLE = ("running", "interrupted", "failed")  # "running" in a dead process: killed
PACKAGES = ("gradprobe", "torch", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf",
            "wandb", "numpy", "mnist1d", "scikit-learn", "torchvision")
REPO = Path(__file__).resolve().parents[2]


class RunDirError(RuntimeError):
    """The run directory cannot be used: it holds a finished run, or nothing to resume."""


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def config_to_resume(run_dir: Path) -> DictConfig:
    """The resolved config a run saved when it started, to continue it unchanged."""
    summary = read_summary(run_dir)
    if summary is None or not (Path(run_dir) / RESOLVED_CONFIG).exists():
        raise RunDirError(f"resume={run_dir}: not a gradprobe run directory (no {SUMMARY})")
    if summary["status"] not in RESUMABLE:
        raise RunDirError(f"resume={run_dir}: that run already ended with status "
                          f"{summary['status']}; nothing to resume")
    return OmegaConf.load(Path(run_dir) / RESOLVED_CONFIG)


def checkpoint_to_resume(run_dir: Path) -> str:
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not last.exists():
        raise RunDirError(f"resume={run_dir}: no checkpoints/last.ckpt to continue from")
    return str(last)


def is_rank_zero() -> bool:
    """False in the extra processes a multi-device (DDP) run starts: only rank 0 writes records."""
    return all(int(os.environ.get(var, 0)) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def start(cfg: DictConfig, run_dir: Path, choices: dict[str, str], overrides: list[str],
          resumed: bool) -> dict[str, Any]:
    """Write the run's records before training; returns the part of the summary known now."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_summary(run_dir)
    if not is_rank_zero():
        return {"run_dir": str(run_dir), "seed": cfg.seed, "choices": choices}
    if previous and not resumed:
        raise RunDirError(f"{run_dir} already holds a run (status {previous['status']}); "
                          "refusing to overwrite it (resume=<run dir> continues one)")
    if resumed and previous:
        keep = ("run_dir", "seed", "choices", "overrides", "command", "started_at")
        info = {k: previous[k] for k in keep}
        info["resumed_at"] = [*previous.get("resumed_at", []), now()]
    else:
        OmegaConf.save(cfg, run_dir / RESOLVED_CONFIG, resolve=True)
        info = {"run_dir": str(run_dir), "seed": cfg.seed, "choices": choices,
                "overrides": overrides, "command": command_line(), "started_at": now()}
    info |= {"run_name": cfg.get("run_name"), "versions": versions(), "git": git_state()}
    write_json(run_dir / SUMMARY, info | {"status": "running"})
    return info


def record_failure(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                   overrides: list[str], error: str) -> None:
    """A job that could not even start (a bad config value in a sweep) still leaves a record."""
    if read_summary(run_dir) is None:
        finish(run_dir, start(cfg, run_dir, choices, overrides, resumed=False)
               | {"status": "failed", "error": error})


def finish(run_dir: Path, summary: dict[str, Any]) -> None:
    if is_rank_zero():
        write_json(Path(run_dir) / SUMMARY, summary)


def flat_config(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """Hydra choices (``activation: tanh``) plus every resolved leaf (``model.depth: 50``),
    without the ``_target_``-style plumbing, so a dashboard can group and filter by them."""
    flat: dict[str, Any] = dict(choices)

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not str(key).startswith("_"):
                    walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def name_from(overrides: list[str]) -> str:
    """A run name from its command-line overrides (``activation=tanh,model.depth=50``)."""
    return ",".join(o for o in overrides
                    if not o.startswith(("hydra", "resume", "sweep."))) or "default"


def number(value: Any) -> float | None:
    return None if value is None else float(value)


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the gradprobe checkout the run used (None outside a clone)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])
