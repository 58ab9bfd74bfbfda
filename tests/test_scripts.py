"""The scripts still run (tiny sizes; their numbers are not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import DATA_DIR, REPO


def test_bench_monitor_runs_and_writes_its_table(tmp_path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "scripts/bench_monitor.py", "--steps", "40", "--warmup", "5",
                    "--rounds", "1", "--out", str(out), "data=digits", "model.depth=2"],
                   cwd=REPO, check=True, capture_output=True, timeout=600,
                   env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    table = json.loads(out.read_text())
    assert set(table["results"]) == {"plain", "off", "default", "wandb_watch"}
    assert table["results"]["plain"]["vs_plain"] == 1.0
    assert set(table["info"]["in_run_overhead"]) == {"off", "default", "wandb_watch"}


def test_reproduce_writes_its_table_from_the_runs(tmp_path) -> None:
    out = tmp_path / "docs" / "reproductions.md"
    out.parent.mkdir()
    notes = "\n## Notes\n\nWritten by hand; | a line like a row | experiment=selu2017 |\n"
    out.write_text("# Reproductions\n\nold table\n" + notes)
    subprocess.run([sys.executable, "scripts/reproduce.py", "--scale", "small", "--preset",
                    "meanfield_check", "--out", str(out), "--work", str(tmp_path / "work")],
                   cwd=REPO, check=True, capture_output=True, timeout=600,
                   env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    table = out.read_text()
    assert "| Schoenholz et al. 2017 |" in table and "experiment=meanfield_check" in table
    assert "| reproduced |" in table and "vs chi_1" in table
    assert table.endswith(notes) and "old table" not in table  # the notes are kept as they are


def test_bench_runs_every_section_and_writes_its_json(tmp_path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "scripts/bench.py", "--steps", "30", "--warmup", "5",
                    "--rounds", "1", "--jobs", "2", "--sweep-steps", "5", "--out", str(out),
                    "data=digits", "model.depth=2"],
                   cwd=REPO, check=True, capture_output=True, timeout=600,
                   env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    result = json.loads(out.read_text())
    assert set(result["steps"]) == {"plain", "default", "gradflow_off", "per_step", "compiled"}
    assert 0 < result["sample"]["pre_cosine_ms"] < result["sample"]["activation_stats_ms"]
    assert result["steps"]["plain"]["vs_plain"] == 1.0
    assert set(result["sweep"]) == {"sequential", "parallel", "vectorized"}
    assert set(result["start_s"]) == {"one_step_run_csv", "one_step_run_csv_wandb",
                                      "config_error", "help"}
