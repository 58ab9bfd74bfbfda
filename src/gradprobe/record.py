"""The run directory's records: resolved config, ``summary.json``, Hydra's record, versions,
git state, and the lock that marks a run as live.

``summary.json`` is written at the start with status ``running`` and replaced atomically at the
end with the final status, so a killed run is recognisable and a finished one is never
overwritten: :func:`start` refuses a directory that already holds a run, unless resuming it, and
a directory whose lock a live process holds. Every file here is written beside its target and
renamed into place, so a kill or a full disk leaves the old version or the new one, never half.
Nothing is written before every check has passed: a refusal leaves the directory as it was.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# atomic writes: one implementation, the instruments' (torch-free to import)
from gradprobe.instruments.files import new_dated_dir, write_atomic, write_json

SUMMARY = "summary.json"
RESOLVED_CONFIG = "config_resolved.yaml"
RESUMABLE = ("running", "interrupted", "failed")  # "running" in a dead process: killed
PACKAGES = ("gradprobe", "torch", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf",
            "wandb", "numpy", "mnist1d", "scikit-learn", "torchvision")
LOCK = ".lock"
REPO = Path(__file__).resolve().parents[2]
_held_locks: dict[Path, int] = {}


class RunDirError(RuntimeError):
    """The run directory cannot be used: it holds a finished or live run, or nothing to resume.
    The message is one line that names the file and what to do."""


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``summary.json``; ``None`` if there is none; RunDirError if it is unreadable."""
    path = Path(run_dir) / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path} is unreadable ({type(err).__name__}: {err}); move it aside "
                          "to use this directory") from None
    if not isinstance(summary, dict) or "status" not in summary:
        raise RunDirError(f"{path} is not a gradprobe summary (no status); move it aside to use "
                          "this directory")
    return summary


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run directory's lock ("pid 123 on host, since ..."), or ``None`` when no
    live process does. Reads only: a shared lock is tried and given back at once."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)  # closing gives back the shared lock
    return None


def acquire_lock(run_dir: Path) -> None:
    """Hold the run directory's lock until :func:`release_lock` or the process ends (the OS
    releases it even after ``kill -9``). A live holder means another writer: refused."""
    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirError(f"{run_dir} is in use by a live run ({holder}); wait for it to end "
                          "or stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {now()}\n".encode())
    _held_locks[Path(run_dir)] = fd


def release_lock(run_dir: Path) -> None:
    fd = _held_locks.pop(Path(run_dir), None)
    if fd is not None:
        os.close(fd)


def is_rank_zero() -> bool:
    """False in the extra processes a multi-device (DDP) run starts: only rank 0 writes records."""
    return all(int(os.environ.get(var, 0)) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def start(cfg: DictConfig, run_dir: Path, choices: dict[str, str], overrides: list[str],
          resumed: dict[str, Any] | None = None,
          hydra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check the directory, take its lock, then write the run's records before training;
    returns the part of the summary known now. ``resumed`` describes the checkpoint a resumed
    run continues from; ``hydra`` is Hydra's record of this invocation (:func:`hydra_record`),
    written to ``.hydra/`` (a resume: ``.hydra/resumed-<time>/``)."""
    run_dir = Path(run_dir)
    if not is_rank_zero():
        return {"run_dir": str(run_dir), "seed": cfg.seed, "choices": choices}
    previous = read_summary(run_dir)
    if not resumed:
        refuse_finished(run_dir, previous)
    run_dir.mkdir(parents=True, exist_ok=True)
    acquire_lock(run_dir)
    if resumed and previous:
        keep = ("seed", "choices", "overrides", "command", "started_at", "wandb_id")
        info = {k: previous.get(k) for k in keep} | {"run_dir": str(run_dir)}  # may have moved
        info["resumed_at"] = [*previous.get("resumed_at", []), now()]
        info["resumed_from"] = [*previous.get("resumed_from", []), resumed]
        info["resume_overrides"] = cfg.get("resume_overrides") or []
        info["rerun"] = rerun_command([*(previous.get("overrides") or []),
                                       *info["resume_overrides"]], cfg.get("threads"))
    else:
        write_atomic(run_dir / RESOLVED_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        info = {"run_dir": str(run_dir), "seed": cfg.seed, "choices": choices,
                "overrides": overrides, "command": command_line(),
                "rerun": rerun_command(overrides, cfg.get("threads")), "started_at": now(),
                "wandb_id": uuid.uuid4().hex[:8]}
    if hydra:
        folder = (new_dated_dir(run_dir / ".hydra", "resumed-") if resumed
                  else run_dir / ".hydra")
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in hydra.items():
            write_atomic(folder / name, OmegaConf.to_yaml(content))
    info |= {"run_name": cfg.get("run_name"), "versions": versions(), "git": git_state()}
    write_json(run_dir / SUMMARY, info | {"status": "running"})
    return info


def refuse_finished(run_dir: Path, summary: dict[str, Any] | None) -> None:
    """A new run never goes into a directory that holds one (``summary``: its record)."""
    if summary:
        raise RunDirError(f"{run_dir} already holds a run (status {summary['status']}); "
                          "refusing to overwrite it (resume=<run dir> continues one)")


def hydra_record(hydra_cfg: Any, task_cfg: DictConfig) -> dict[str, Any]:
    """What Hydra itself would save in ``.hydra/`` (``hydra.output_subdir`` is null so that a
    refused command writes nothing; :func:`start` writes this once the run really starts)."""
    return {"config.yaml": task_cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
            "overrides.yaml": OmegaConf.create(list(hydra_cfg.overrides.task))}


def record_failure(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                   overrides: list[str], error: str) -> None:
    """A sweep job that could not even start (a bad config value) still leaves a record, so the
    sweep's summary counts it; a directory holding another run is left alone."""
    try:
        if read_summary(run_dir) is None and lock_holder(run_dir) is None:
            finish(run_dir, start(cfg, run_dir, choices, overrides) | {"status": "failed",
                                                                       "error": error})
    except RunDirError:
        pass


def finish(run_dir: Path, summary: dict[str, Any]) -> None:
    """The final summary, then the lock is given back: the run is no longer live."""
    try:
        if is_rank_zero():
            write_json(Path(run_dir) / SUMMARY, summary)
    finally:
        release_lock(run_dir)


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


def rerun_command(overrides: list[str], threads: Any) -> str:
    """The command that trains this job again, alone, with the same config, seed and threads
    (``summary.json: rerun``): its own overrides (a sweep job's, without the sweep's keys; a
    resume's changes replacing the keys they set) and the thread count it trained with."""
    kept: dict[str, str] = {}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ("threads", "resume") and not key.startswith(("sweep.", "hydra")):
            kept.pop(key, None)
            kept[key] = override
    threads_set = [f"threads={threads}"] if threads is not None else []
    return shlex.join(["python", "train.py", *kept.values(), *threads_set])
