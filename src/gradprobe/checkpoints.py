"""Checkpoints: ``last.ckpt`` after every epoch, the best by ``val/loss`` beside it, each written
atomically; and, to resume, the newest one that is intact.

Lightning's ``save_last`` writes ``last.ckpt`` only when a monitored checkpoint is saved, i.e.
when ``val/loss`` improved, so ``last`` would be the best. Here one ``ModelCheckpoint`` keeps
the latest state under ``last.ckpt`` (at each validation, or each epoch's end when validation is
off), and another keeps ``best-epochNNN.ckpt``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from gradprobe import trusted
from gradprobe.instruments.files import atomic_file
from gradprobe.record import RunDirError

log = logging.getLogger("gradprobe")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a file beside the target, fsync, then rename over it: a kill or a
    full disk mid-save leaves the previous checkpoint whole (and no temporary file behind)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            try:
                torch.save(checkpoint, f)
            except RuntimeError as err:  # torch's zip writer hides a failed write (ENOSPC)
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from None
                raise


def checkpoint_callbacks(folder: Path, validating: bool) -> list[ModelCheckpoint]:
    """``last.ckpt`` after every epoch (after its validation, so a resume repeats nothing), and
    with validation the best by ``val/loss``."""
    last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    if not validating:
        return [last]
    best = ModelCheckpoint(dirpath=folder, filename="best-epoch{epoch:03d}",
                           auto_insert_metric_name=False, monitor="val/loss", mode="min",
                           enable_version_counter=False)
    return [last, best]


def newest_intact(run_dir: Path) -> dict[str, Any]:
    """The newest checkpoint of a run directory that loads (weights only), to resume from:
    ``{"checkpoint", "step", "epoch", "skipped"}``. A torn or empty file is passed over and
    named in ``skipped``; one whose config names foreign code is refused outright."""
    folder = Path(run_dir) / "checkpoints"
    # last.ckpt holds the latest state by construction; the others (best-*) by age
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.name != "last.ckpt",
                                                              -p.stat().st_mtime))
    skipped = []
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            step, epoch = int(state["global_step"]), int(state["epoch"])
        except Exception as err:
            skipped.append(f"{path.name} ({type(err).__name__})")
            continue
        trusted.check(state.get("hyper_parameters", {}), f"checkpoint {path}")
        if skipped:
            log.warning("resume: %s unreadable; continuing from %s (step %d)",
                        ", ".join(skipped), path.name, step)
        return {"checkpoint": str(path), "step": step, "epoch": epoch, "skipped": skipped}
    found = f" ({', '.join(skipped)} unreadable)" if skipped else ""
    raise RunDirError(f"resume={run_dir}: no intact checkpoint in {folder}{found}; nothing to "
                      "resume from (start the run again)")
