"""Each member's own records out of the one ensemble Trainer: its logged metrics, its checkpoints.

* :class:`MemberLogs` is the Trainer's logger. Lightning logs what the module logged under
  ``members/<i>/<key>`` at the steps it logs a solo run's keys; this logger hands member ``i``
  its ``<key>`` rows (with Lightning's ``epoch``) and keeps them, to be written to the member's
  own loggers after training, one member at a time (W&B allows one run at a time).
* :class:`MemberCheckpoint` callbacks (each member's ``best`` by its own ``val/loss``) let
  Lightning decide when those are saved; ``last.ckpt`` (final weights) is saved once, for every
  member, by ``trainer.save_checkpoint`` after the fit. :class:`MemberCheckpointIO`
  writes a member's slice into its run directory as a solo
  ``GradprobeModule`` checkpoint (``gradprobe.build.load_module`` reads it; it has no optimizer
  state, so a member cannot be resumed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger

from gradprobe.checkpoints import AtomicCheckpointIO
from gradprobe.ensemble.module import EnsembleModule, member_key

MEMBER_KEY = re.compile(r"members/(\d+)/(.+)")
LAST = "last"  # ``last.ckpt``: saved for every member at once


class MemberLogs(Logger):
    """Splits the ensemble's logged metrics by member (see the module docstring); a diverged
    member's rows from the step it stopped at on are dropped, as its solo run stops there."""

    def __init__(self, members: list[Any]) -> None:
        super().__init__()
        self.members = members

    @property
    def name(self) -> str:
        return "members"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Each member's config reaches its own loggers when they are built."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        own: dict[int, dict[str, float]] = {}
        shared = {}
        for key, value in metrics.items():
            if match := MEMBER_KEY.fullmatch(key):
                own.setdefault(int(match[1]), {})[match[2]] = value
            else:
                shared[key] = value  # e.g. Lightning's "epoch"
        for i, values in own.items():
            stopped = self.members[i].stopped_at
            if stopped is None or (step is not None and step < stopped):
                self.members[i].logs.append((step, values | shared))


class MemberCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` for member ``member`` (None: every member); its state key names
    the member, as Lightning wants every stateful callback's key unique."""

    def __init__(self, member: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.member = member

    @property
    def state_key(self) -> str:
        return f"{super().state_key}[member {self.member}]"


def member_checkpoints(run_dirs: list[Path]) -> list[MemberCheckpoint]:
    """Each member's best by its own ``val/loss``, as a solo run's (a member has no optimizer
    state of its own, so it is never resumed: its ``last.ckpt`` is written once, at the end)."""
    return [MemberCheckpoint(i, dirpath=Path(run_dir) / "checkpoints",
                             filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
                             monitor=member_key(i, "val/loss"), mode="min",
                             enable_version_counter=False)
            for i, run_dir in enumerate(run_dirs)]


def solo_hparams(cfg: DictConfig, input_shape: tuple[int, ...],
                 num_outputs: int) -> dict[str, Any]:
    """The hyperparameters a solo ``GradprobeModule`` of this config saves."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {"optimizer": plain["optimizer"], "scheduler": plain["scheduler"] or None,
            "run_config": plain, "data_shape": {"input_shape": list(input_shape),
                                                "num_outputs": num_outputs}}


class MemberCheckpointIO(AtomicCheckpointIO):
    """Writes (atomically, as a solo run's checkpoints), for a save Lightning makes into member
    ``i``'s folder, member ``i``'s weights with its own hyperparameters and Lightning's epoch
    and step. A diverged member keeps the
    checkpoints it had."""

    def __init__(self, module: EnsembleModule, members: list[Any],
                 hparams: list[dict[str, Any]]) -> None:
        super().__init__()
        self.module, self.members, self.hparams = module, members, hparams
        self.owners = {(Path(m.run_dir) / "checkpoints").resolve(): i
                       for i, m in enumerate(members)}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        every = path.stem == LAST  # the final weights of every member, diverged or not
        owners = range(len(self.members)) if every else [self.owners[path.parent.resolve()]]
        keep = ("epoch", "global_step", "pytorch-lightning_version")
        for i in owners:
            if not every and self.members[i].stopped_at is not None:
                continue
            own = {"state_dict": self.module.member_state_dict(i),
                   "hyper_parameters": self.hparams[i]} | {k: checkpoint[k] for k in keep}
            target = Path(self.members[i].run_dir) / "checkpoints" / path.name
            super().save_checkpoint(own, target, storage_options)
