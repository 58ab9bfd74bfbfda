"""Checkpoints: ``last.ckpt`` after every epoch, the best by ``val/loss`` beside it, each written
atomically; and, to resume, the newest one that is intact.

Lightning's ``save_last`` writes ``last.ckpt`` only when a monitored checkpoint is saved, i.e.
when ``val/loss`` improved, so ``last`` would be the best. Here one ``ModelCheckpoint`` keeps
the latest state under ``last.ckpt`` (at each validation, or each epoch's end when validation is
off), and another keeps ``best-epochNNN.ckpt`` (weights only with
``callbacks.checkpoint.best_weights_only``). A run tests the best weights (:mod:`gradprobe.tested`),
read back with ``weights_only`` as every checkpoint here.
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


def checkpoint_callbacks(folder: Path, validating: bool,
                         best_weights_only: bool = False) -> list[ModelCheckpoint]:
    """``last.ckpt`` after every epoch (after its validation, so a resume repeats nothing), and
    with validation the best by ``val/loss`` (without optimizer state if ``best_weights_only``:
    a third of the size with Adam, but no fallback for a resume whose last.ckpt is unreadable)."""
    last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    if not validating:
        return [last]
    best = ModelCheckpoint(dirpath=folder, filename="best-epoch{epoch:03d}",
                           auto_insert_metric_name=False, monitor="val/loss", mode="min",
                           save_weights_only=best_weights_only, enable_version_counter=False)
    return [last, best]


def best_checkpoint(callbacks: list[Any]) -> ModelCheckpoint | None:
    """The ``ModelCheckpoint`` keeping the best by ``val/loss`` among a run's callbacks."""
    return next((c for c in callbacks
                 if isinstance(c, ModelCheckpoint) and c.monitor == "val/loss"), None)


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
            if "optimizer_states" not in state:
                skipped.append(f"{path.name} (weights only)")
                continue
        except Exception as err:
            skipped.append(f"{path.name} ({type(err).__name__})")
            continue
        trusted.check(state.get("hyper_parameters", {}), f"checkpoint {path}")
        if skipped:
            log.warning("resume: %s unusable; continuing from %s (step %d)",
                        ", ".join(skipped), path.name, step)
        return {"checkpoint": str(path), "step": step, "epoch": epoch, "skipped": skipped}
    found = f" ({', '.join(skipped)} unusable)" if skipped else ""
    raise RunDirError(f"resume={run_dir}: no intact checkpoint in {folder}{found}; nothing to "
                      "resume from (start the run again)")


def weights_of(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``state_dict``, loaded as data (``weights_only``), on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
