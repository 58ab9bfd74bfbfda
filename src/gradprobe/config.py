"""The one place that knows where gradprobe's Hydra configs live and how to compose them.

The CLI, the theory CLI, the tests and the benchmark scripts all compose here, so a config they
build is the config ``python train.py`` would run. Torch-free on purpose: the CLI imports this
before validation, and a bad value must be refused before torch is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
VERSION_BASE = "1.3"


def _parallel_jobs(*args: Any) -> int:
    """Imported when resolved, not here: ``gradprobe.sweep`` is more than composition needs."""
    from gradprobe.sweep.placement import parallel_jobs

    return parallel_jobs(*args)


def register_resolvers() -> None:
    """``${if_set:x,a,b}`` picks ``a`` when ``x`` is set: a resumed run reuses its own dir.
    ``${parallel_jobs:accelerator,per_gpu}``: jobs to run at once on this machine."""
    OmegaConf.register_new_resolver("if_set", lambda value, a, b: a if value else b,
                                    replace=True)
    OmegaConf.register_new_resolver("parallel_jobs", _parallel_jobs, replace=True)


def choices_of(hydra_cfg: Any) -> dict[str, str]:
    """The chosen option of every gradprobe config group (Hydra's own groups left out)."""
    return {group: str(choice) for group, choice in hydra_cfg.runtime.choices.items()
            if not group.startswith("hydra") and choice is not None}


def compose(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The task config ``python train.py <overrides>`` would run (not validated) and its
    group choices; Hydra's own node is composed (for the choices) and then dropped."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=VERSION_BASE):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = choices_of(cfg.hydra)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices
