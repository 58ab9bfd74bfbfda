"""Torch's thread count is part of a run: ``threads=auto`` resolves to a number before the run is
recorded, a busy machine is named at the start, and every re-run (``resume``, ``sweep.resume``,
an ensemble member alone) trains with the recorded count unless the command sets ``threads=``."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import FAST, cli, compose_config, run_job
from gradprobe.resume import config_to_resume
from gradprobe.schema import ConfigError, validate
from gradprobe.sweep import placement
from gradprobe.sweep.placement import (
    AUTO_THREADS_CAP,
    auto_threads,
    oversubscribed,
    resolve_threads,
)

TINY = [*FAST, "data=digits", "model.depth=3", "model.width=16", "trainer.max_steps=4"]


def recorded(run_dir: Path) -> tuple[int, int]:
    """(summary.json's threads, config_resolved.yaml's threads)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["threads"], yaml.safe_load((run_dir / "config_resolved.yaml").read_text())[
        "threads"]


def test_auto_is_the_measured_cap_within_the_cores_and_the_launchers_share() -> None:
    assert auto_threads(cpus=64) == AUTO_THREADS_CAP == 1
    assert auto_threads(cpus=8, share=4, cap=2) == 2  # the cap
    assert auto_threads(cpus=8, share=3, cap=4) == 3  # a parallel launcher's share
    assert auto_threads(cpus=2, cap=4) == 2  # the usable cores
    assert auto_threads(cpus=1, share=None, cap=4) == 1
    assert resolve_threads(3, share=1, recorded=2) == 3  # an explicit count wins
    assert resolve_threads("auto", share=1, recorded=2) == 2  # then a re-run job's record
    assert resolve_threads("auto", cpus=4) == 1
    cfg, _ = compose_config([])
    assert cfg.threads == "auto"
    for bad in ("threads=0", "threads=many", "threads=null"):
        with pytest.raises(ConfigError, match="threads=.* expected 'auto' or an integer >= 1"):
            validate(compose_config([bad])[0])


def test_a_busy_machine_gets_one_warning_line(monkeypatch, capsys) -> None:
    assert oversubscribed(2, load=0.0, cpus=2) is None
    assert oversubscribed(4, load=3.9, cpus=8) is None
    line = oversubscribed(2, load=1.2, cpus=2)  # another job on one of the two cores
    assert line and "\n" not in line and "load average 1.2 on 2 usable cores" in line
    assert line.endswith("threads=1 avoids it")
    assert oversubscribed(8, load=5.5, cpus=8).endswith("threads=2 avoids it")
    assert oversubscribed(1, load=3.5, cpus=2) is None  # one thread: its fair share, no fix
    # once per process, on stderr
    monkeypatch.setattr(placement, "_warned", False)
    monkeypatch.setattr(placement.os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    monkeypatch.setattr(placement, "usable_cpus", lambda: 2)
    placement.warn_if_oversubscribed(2)
    placement.warn_if_oversubscribed(2)
    err = capsys.readouterr().err
    assert err.count("warning: threads=2 on a busy machine") == 1 and len(err.splitlines()) == 1


def interrupted_with(run: Path, dest: Path, threads: int) -> Path:
    """A copy of a finished run that trained with ``threads``, as if it had been interrupted."""
    shutil.copytree(run, dest)
    config = dest / "config_resolved.yaml"
    config.write_text(config.read_text().replace("threads: 1\n", f"threads: {threads}\n"))
    summary = json.loads((dest / "summary.json").read_text())
    (dest / "summary.json").write_text(json.dumps(summary | {"status": "interrupted",
                                                             "threads": threads}))
    return dest


def test_a_run_records_its_threads_and_a_resume_keeps_them(small_run, tmp_path) -> None:
    """``small_run`` trained with ``threads=auto``; a copy recorded with 2 is resumed with 2,
    not with what ``auto`` gives a fresh command (1); ``threads=`` on the resume wins."""
    assert recorded(small_run) == (1, 1)
    assert json.loads((small_run / "summary.json").read_text())["rerun"].endswith(" threads=1")
    run_dir = interrupted_with(small_run, tmp_path / "run", threads=2)
    summary = run_job(run_dir, [f"resume={run_dir}", "trainer.max_epochs=3"])
    assert summary["status"] == "completed" and recorded(run_dir) == (2, 2)
    assert summary["rerun"].endswith("trainer.max_epochs=3 threads=2")
    run_dir = interrupted_with(small_run, tmp_path / "override", threads=2)
    summary = run_job(run_dir, [f"resume={run_dir}", "threads=1", "trainer.max_epochs=3"])
    assert summary["threads"] == 1 and summary["resume_overrides"][0] == "threads=1"


def test_a_run_recorded_before_threads_resolved_resumes_with_its_measured_count(
        tmp_path) -> None:
    """An older record has ``threads: null`` in its config; its summary has the count used."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config_resolved.yaml").write_text("seed: 0\nthreads: null\n")
    (run_dir / "summary.json").write_text(json.dumps({"status": "interrupted", "threads": 2}))
    assert config_to_resume(run_dir).threads == 2
    assert config_to_resume(run_dir, ["threads=1"]).threads == 1


@pytest.mark.parametrize("launcher", ["basic", "ensemble"])
def test_sweep_resume_reruns_a_failed_job_with_its_recorded_threads(tmp_path,
                                                                    launcher) -> None:
    """Job 1 of a sweep failed after training with 2 threads; ``auto`` would now give 1. Its
    re-run trains with 2, in its summary, resolved config and Hydra record."""
    overrides = ["seed=0,1", *TINY, f"hydra/launcher={launcher}"]
    sweep = tmp_path / "sweep"
    out = cli("-m", f"hydra.sweep.dir={sweep}", "sweep.report=false", *overrides, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [recorded(sweep / job) for job in ("0", "1")] == [(1, 1), (1, 1)]
    summary = json.loads((sweep / "1" / "summary.json").read_text())
    (sweep / "1" / "summary.json").write_text(json.dumps(summary | {"status": "failed",
                                                                    "threads": 2}))
    out = cli("-m", f"sweep.resume={sweep}", "sweep.report=false", *overrides, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "already completed, skipped" in out.stdout
    assert recorded(sweep / "1") == (2, 2)
    assert yaml.safe_load((sweep / "1" / ".hydra" / "config.yaml").read_text())["threads"] == 2
    assert recorded(sweep / "0") == (1, 1)


def test_an_ensemble_member_records_its_threads_and_its_rerun_reproduces_it(tmp_path) -> None:
    """Members train with one count (a different count is another group); each records it,
    and its ``rerun`` command, run alone, gives the member's numbers."""
    from gradprobe import ensemble
    from hydra_plugins.gradprobe_ensemble.ensemble_launcher import group_key

    members = []
    for seed in (0, 1):
        overrides = [*TINY, f"seed={seed}", "threads=2"]
        cfg, choices = compose_config(overrides)
        members.append(ensemble.Member(cfg, tmp_path / str(seed), choices, overrides))
    other = compose_config([*TINY, "seed=1", "threads=1"])[0]
    assert group_key(members[1].cfg) != group_key(other)
    summaries = ensemble.train(members)
    assert [recorded(tmp_path / str(seed)) for seed in (0, 1)] == [(2, 2), (2, 2)]
    rerun = summaries[1]["rerun"]
    assert rerun.startswith("python train.py ") and rerun.endswith(" seed=1 threads=2")
    solo = run_job(tmp_path / "solo", shlex.split(rerun)[2:])
    assert solo["threads"] == 2 and solo["steps"] == summaries[1]["steps"]
    for key, value in solo["metrics"].items():
        assert summaries[1]["metrics"][key] == pytest.approx(value, rel=1e-5), key
