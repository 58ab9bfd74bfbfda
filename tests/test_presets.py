"""The paper presets at reduced size (digits, narrower, fewer epochs): each claim's direction.
The full-size runs are the presets themselves (python train.py -m experiment=<name>)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import DATA_DIR, REPO


def preset(tmp_path, name: str, *overrides: str) -> dict[tuple[str, ...], dict]:
    """Run a preset's multirun; its jobs' summaries keyed by their swept choices."""
    out = subprocess.run([sys.executable, "train.py", "-m", f"experiment={name}", "data=digits",
                          "logger=csv", "monitor.figures=false", "sweep.report=false",
                          *overrides, f"hydra.sweep.dir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=900,
                         env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    return {tuple(sorted(o for o in j["overrides"] if o.split("=")[0] in ("init", "norm", "model")))
            : j for j in jobs}


def acc(job: dict) -> float:
    return job["metrics"]["test/acc"]


def test_he2015_xavier_stalls_kaiming_trains_at_depth_30(tmp_path) -> None:
    jobs = preset(tmp_path, "he2015_depth30", "model.width=64", "trainer.max_epochs=15")
    xavier, kaiming = jobs[("init=xavier_normal",)], jobs[("init=kaiming_normal",)]
    assert acc(xavier) <= 0.15 and acc(kaiming) >= 0.5, (acc(xavier), acc(kaiming))


def test_batchnorm2015_sigmoid_depth_10_trains_only_with_batchnorm(tmp_path) -> None:
    jobs = preset(tmp_path, "batchnorm2015", "model.depth=10", "trainer.max_epochs=5")
    plain, bn = jobs[("norm=none",)], jobs[("norm=batch",)]
    assert acc(plain) <= 0.15 and acc(bn) >= 0.5, (acc(plain), acc(bn))
    assert "vanishing" in plain["diagnosis"]["init"]["verdicts"]


def test_residual_depth50_plain_stays_at_chance_residual_prenorm_trains(tmp_path) -> None:
    jobs = preset(tmp_path, "residual_depth50", "model=mlp,resmlp", "norm=none,layer",
                  "model.depth=50", "model.width=64", "trainer.max_epochs=3")
    plain, residual = jobs[("model=mlp", "norm=none")], jobs[("model=resmlp", "norm=layer")]
    assert acc(plain) <= 0.15 and acc(residual) >= 0.5, (acc(plain), acc(residual))
