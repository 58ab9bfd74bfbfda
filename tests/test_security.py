"""A checkpoint or a run directory is data: it never chooses the code that runs.

Each crafted file below loads cleanly with ``torch.load(weights_only=True)`` or as YAML; its
payload, had it run, would create a marker file (``builtins.open(marker, "w")``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import cli, run_job, snapshot
from gradprobe.build import load_module
from gradprobe.record import RunDirError
from gradprobe.trusted import UntrustedConfig, declared_targets


def payload(marker: Path) -> dict:
    return {"_target_": "builtins.open", "_args_": [str(marker)], "mode": "w"}


# where in a checkpoint's hyperparameters a payload can sit
PLACES = {
    "activation": lambda h, p: h["run_config"].__setitem__("activation", p),
    "model": lambda h, p: h["run_config"]["model"].__setitem__("_target_", p["_target_"]),
    "nested init function": lambda h, p: h["run_config"]["init"].__setitem__("weight", p),
    "optimizer (built on fit)": lambda h, p: h.__setitem__("optimizer", p),
    "scheduler (built on fit)": lambda h, p: h.__setitem__("scheduler", p),
    "data source": lambda h, p: h["run_config"]["data"].__setitem__("source", p),
    "interpolation decoding to a target": lambda h, p: h["run_config"].__setitem__(
        "activation", "${oc.decode:'{_target_: builtins.open, _args_: [x]}'}"),
}


def test_every_conf_target_is_declared_and_others_are_not() -> None:
    targets = declared_targets()
    assert {"gradprobe.nets.mlp", "torch.nn.ReLU", "torch.optim.Adam",
            "gradprobe.loggers.CSVLogger", "torch.nn.init.kaiming_normal_"} <= targets
    for foreign in ("builtins.open", "os.system", "numpy.savetxt", "subprocess.run"):
        assert foreign not in targets


@pytest.mark.parametrize("place", PLACES)
def test_crafted_checkpoint_is_refused_and_its_payload_never_runs(small_run, tmp_path,
                                                                  place) -> None:
    marker = tmp_path / "pwned"
    state = torch.load(small_run / "checkpoints" / "last.ckpt", weights_only=True)
    PLACES[place](state["hyper_parameters"], payload(marker))
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    torch.load(crafted, weights_only=True)  # the file itself is harmless data
    with pytest.raises(UntrustedConfig) as refused:
        load_module(crafted)
    message = str(refused.value)
    assert "\n" not in message and str(crafted) in message and "refusing" in message
    assert not marker.exists()


def test_genuine_checkpoint_still_loads(small_run) -> None:
    module = load_module(small_run / "checkpoints" / "last.ckpt")
    assert module(torch.randn(2, 64)).shape == (2, 10)


def test_unreadable_checkpoint_is_one_line(tmp_path) -> None:
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(RunDirError, match="unreadable or not a gradprobe checkpoint"):
        load_module(torn)


def interrupted_copy(small_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
    return run_dir


@pytest.mark.parametrize("line", ["  _target_: builtins.open",
                                  "  _target_: ${oc.decode:'builtins.open'}"])
def test_resume_refuses_a_run_dir_whose_config_names_foreign_code(small_run, tmp_path,
                                                                  line) -> None:
    run_dir = interrupted_copy(small_run, tmp_path)
    config = run_dir / "config_resolved.yaml"
    text = config.read_text()
    assert "  _target_: torch.nn.ReLU" in text
    config.write_text(text.replace("  _target_: torch.nn.ReLU", line))
    before = snapshot(run_dir)
    with pytest.raises(UntrustedConfig, match="refusing to load it"):
        run_job(run_dir, [f"resume={run_dir}"])
    out = cli(f"resume={run_dir}")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "config_resolved.yaml" in out.stderr and "activation._target_" in out.stderr
    assert snapshot(run_dir) == before


def test_resume_refuses_a_crafted_checkpoint(small_run, tmp_path) -> None:
    run_dir = interrupted_copy(small_run, tmp_path)
    marker = tmp_path / "pwned"
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        state["hyper_parameters"]["optimizer"] = payload(marker)
        torch.save(state, ckpt)
    before = snapshot(run_dir)
    with pytest.raises(UntrustedConfig, match="optimizer._target_='builtins.open'"):
        run_job(run_dir, [f"resume={run_dir}"])
    assert snapshot(run_dir) == before and not marker.exists()
