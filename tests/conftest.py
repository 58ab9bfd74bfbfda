"""Shared fixtures: compose configs through Hydra's API and run jobs in-process.

Runs go to pytest's tmp dirs; datasets are cached in one session-wide tmp dir; W&B is offline.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

DATA_DIR = tempfile.mkdtemp(prefix="gradprobe-test-data-")
os.environ["GRADPROBE_DATA_DIR"] = DATA_DIR
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("CI", "true")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from gradprobe.cli import CONF_DIR, choices_of, register_resolvers, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Short runs: CSV logging only, deterministic kernels, no figures (tests that check figures ask).
FAST = ["logger=csv", "trainer.max_epochs=1", "trainer.deterministic=true",
        "monitor.figures=false"]


def compose_config(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The composed task config (as the CLI would see it) and its Hydra choices."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    choices = choices_of(cfg.hydra)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def run_job(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Compose and run one job in this process, exactly as the CLI does after composition."""
    cfg, choices = compose_config(overrides)
    return train(cfg, run_dir, choices, overrides)


@pytest.fixture
def run(tmp_path: Path):
    """``run(*overrides, name="run")`` trains in ``tmp_path/name`` and returns the summary."""
    def _run(*overrides: str, name: str = "run") -> dict[str, Any]:
        return run_job(tmp_path / name, [*FAST, *overrides])
    return _run
