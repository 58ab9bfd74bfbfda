"""Continuing a run directory: what may be resumed, with which config, and its history cut to
the checkpoint it continues from. Torch-free: every refusal comes before anything heavy loads.

A resumed run's record is the whole run. Rows that a killed run logged after its checkpoint
(``metrics.csv``, ``gradflow/layers.csv``, ``steps.csv``, ``histograms.npz``) are cut, since
the resumed run logs those steps again; everything before the checkpoint is kept.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from gradprobe import trusted
from gradprobe.instruments.files import atomic_file, write_atomic
from gradprobe.record import RESOLVED_CONFIG, RESUMABLE, RunDirError, lock_holder, read_summary

# What a resume may change: how far to train, the machine's share, and what W&B is sent. Anything
# else would make the continued run a different experiment from the one its first half recorded.
CHANGEABLE = ("trainer.max_epochs", "trainer.max_steps", "threads", "verbose", "print_config",
              "gradflow.wandb.per_layer_scalars", "gradflow.wandb.histograms",
              "gradflow.wandb.profile_charts")
IGNORED = ("resume",)  # the resume key itself; hydra.* overrides are Hydra's, not the run's


def config_to_resume(run_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """The resolved config the run saved when it started (its ``threads`` too: a resume trains
    with the recorded count unless this command sets ``threads=``), with the earlier resumes'
    and this command's changeable overrides applied. Refuses (RunDirError, one line) a
    directory that is not a resumable gradprobe run, one a live process holds, a config naming
    foreign code, and any other override."""
    run_dir = Path(run_dir)
    where = f"resume={run_dir}"
    if not run_dir.is_dir():
        raise RunDirError(f"{where}: no such directory")
    summary = read_summary(run_dir)
    if summary is None:
        raise RunDirError(f"{where}: not a gradprobe run directory (no summary.json)")
    if summary["status"] not in RESUMABLE:
        raise RunDirError(f"{where}: that run already ended with status {summary['status']}; "
                          "nothing to resume")
    holder = lock_holder(run_dir)
    if holder:
        raise RunDirError(f"{where}: the run is still running ({holder}); wait for it to end "
                          "or stop it first")
    cfg = load_resolved(run_dir)
    if not isinstance(cfg.get("threads"), int):  # a run recorded before threads were resolved
        cfg.threads = summary.get("threads") or "auto"
    changes = [*summary.get("resume_overrides", []), *changeable(overrides, where)]
    for override in OverridesParser.create().parse_overrides(changes):
        OmegaConf.update(cfg, override.key_or_group, override.value())
    cfg.resume_overrides = changes
    return cfg


def load_resolved(run_dir: Path) -> DictConfig:
    path = Path(run_dir) / RESOLVED_CONFIG
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise RunDirError(f"resume={run_dir}: {RESOLVED_CONFIG} is missing; the run cannot be "
                          "rebuilt without it") from None
    except Exception as err:
        raise RunDirError(f"resume={run_dir}: {path} is unreadable ({type(err).__name__}); "
                          "the run cannot be rebuilt without it") from None
    if not isinstance(cfg, DictConfig):
        raise RunDirError(f"resume={run_dir}: {path} does not hold a config mapping")
    trusted.check(OmegaConf.to_container(cfg, resolve=False), f"resume={run_dir}: {path}")
    if "monitor" in cfg and "gradflow" not in cfg:  # a run made when the group had that name
        cfg.gradflow = cfg.pop("monitor")
    return cfg


def changeable(overrides: list[str], where: str) -> list[str]:
    """This command's overrides a resume applies; RunDirError for any it may not."""
    kept = []
    for text in overrides:
        key = OverridesParser.create().parse_override(text).key_or_group
        if key in IGNORED or key.startswith("hydra."):
            continue
        if key not in CHANGEABLE:
            raise RunDirError(f"{where}: {text} would change the run being resumed; a resume "
                              f"may change only {', '.join(CHANGEABLE)}")
        kept.append(text)
    return kept


# ------------------------------------------------------------------------ history


def cut_history(run_dir: Path, step: int, epoch: int) -> dict[str, int]:
    """Drop what was logged after the checkpoint (optimizer step ``step``, end of epoch
    ``epoch``) from the run's tables; returns how many rows each file lost."""
    run_dir = Path(run_dir)
    dropped = {"metrics.csv": _cut_csv(run_dir / "metrics.csv",
                                       lambda row: _before(row, step, epoch))}
    for name in ("layers.csv", "steps.csv"):
        dropped[f"gradflow/{name}"] = _cut_csv(run_dir / "gradflow" / name,
                                               lambda row: int(row["step"]) < step)
    dropped["gradflow/histograms.npz"] = _cut_histograms(run_dir / "gradflow" /
                                                         "histograms.npz", step)
    return dropped


def _before(row: dict[str, str], step: int, epoch: int) -> bool:
    """A Lightning metrics row from before the checkpoint: rows that carry an epoch are kept up
    to the checkpoint's epoch (its validation included); the others by their step."""
    if row.get("epoch"):
        return int(float(row["epoch"])) <= epoch
    return int(float(row["step"])) < step


def _cut_csv(path: Path, keep: Any) -> int:
    if not path.exists():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), reader.fieldnames or []
    kept = [row for row in rows if _kept(keep, row)]
    if len(kept) < len(rows):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_atomic(path, out.getvalue())
    return len(rows) - len(kept)


def _kept(keep: Any, row: dict[str, str]) -> bool:
    """A row torn by a kill mid-write (missing or unparsable cells) is not kept."""
    try:
        return None not in row.values() and bool(keep(row))
    except (TypeError, ValueError, KeyError):
        return False


def _cut_histograms(path: Path, step: int) -> int:
    if not path.exists():
        return 0
    import numpy as np

    with np.load(path) as z:
        data = dict(z)
    keep = data["steps"] < step
    if keep.all():
        return 0
    for key in ("steps", "grad_counts", "act_counts"):
        data[key] = data[key][keep]
    with atomic_file(path, "wb") as f:
        np.savez(f, **data)
    return int((~keep).sum())


