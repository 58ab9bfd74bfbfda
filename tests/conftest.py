"""Shared fixtures: compose configs through Hydra's API and run jobs in-process.

Runs go to pytest's tmp dirs; datasets are cached in one session-wide tmp dir; W&B is offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

DATA_DIR = tempfile.mkdtemp(prefix="gradprobe-test-data-")
os.environ["GRADPROBE_DATA_DIR"] = DATA_DIR
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("CI", "true")

from omegaconf import DictConfig  # noqa: E402

from gradprobe.cli import train  # noqa: E402
from gradprobe.config import CONF_DIR, compose  # noqa: E402, F401 (tests import CONF_DIR)

REPO = Path(__file__).resolve().parents[1]
# Short runs: CSV logging only, deterministic kernels, no figures (tests that check figures ask).
FAST = ["logger=csv", "trainer.max_epochs=1", "trainer.deterministic=true",
        "gradflow.figures=false"]


def compose_config(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The composed task config (as the CLI would see it) and its Hydra choices."""
    return compose(overrides)


def run_job(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Compose and run one job in this process, exactly as the CLI does after composition."""
    cfg, choices = compose_config(overrides)
    return train(cfg, run_dir, choices, overrides)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """A test that changes torch's thread count (a job's ``threads``, an ensemble's) must not
    change it for the tests after it: results that depend on reduction order would."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run(tmp_path: Path):
    """``run(*overrides, name="run")`` trains in ``tmp_path/name`` and returns the summary."""
    def _run(*overrides: str, name: str = "run") -> dict[str, Any]:
        return run_job(tmp_path / name, [*FAST, *overrides])
    return _run


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and folder under ``folder`` with its bytes: equal snapshots before and after a
    command mean it wrote nothing there (a refusal)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


def cli(*args: str, cwd: Path = REPO, timeout: float = 300,
        **popen: Any) -> subprocess.CompletedProcess:
    """``python train.py <args>`` as a user would run it; the test data dir is shared."""
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR}, **popen)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """One finished 2-epoch run (digits, depth 3, monitored), made once; copy it before use."""
    run_dir = tmp_path_factory.mktemp("small") / "run"
    run_job(run_dir, [*FAST, "data=digits", "model.depth=3", "trainer.max_epochs=2"])
    return run_dir


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs("size=1m,ro")``: a fresh tmpfs mounted under tmp_path, unmounted afterwards
    (root in a container may mount one; where it cannot, the test is skipped)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)
