"""The paper presets at reduced size (digits, narrower, fewer epochs): each claim's direction.
The full-size runs are the presets themselves (python train.py -m experiment=<name>)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import CONF_DIR, DATA_DIR, REPO

COMPARISONS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")
                     if "sweeper:" in p.read_text())


def preset(tmp_path, name: str, *overrides: str) -> list[dict]:
    """Run a preset's multirun; its jobs' summaries."""
    out = subprocess.run([sys.executable, "train.py", "-m", f"experiment={name}", "data=digits",
                          "logger=csv", "gradflow.figures=false", "sweep.report=false",
                          *overrides, f"hydra.sweep.dir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=900,
                         env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]


def hydra_node(*overrides: str):
    """Hydra's own node as ``python train.py <overrides>`` (no -m) composes it."""
    from hydra import compose, initialize_config_dir

    from gradprobe.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


@pytest.mark.parametrize("name", COMPARISONS)
def test_a_comparison_preset_is_a_multirun_without_dash_m(name) -> None:
    """A preset that sweeps (hydra.sweeper.params) sets hydra.mode=MULTIRUN, so
    ``python train.py experiment=<name>`` runs its whole comparison, not one half of it;
    hydra.mode=RUN on the command line still runs one cell."""
    from hydra.types import RunMode

    assert hydra_node(f"experiment={name}").mode == RunMode.MULTIRUN
    assert hydra_node(f"experiment={name}", "hydra.mode=RUN").mode == RunMode.RUN
    assert hydra_node().mode != RunMode.MULTIRUN  # the default experiment stays a single run


def test_a_comparison_preset_runs_all_its_jobs_without_dash_m(tmp_path) -> None:
    """The real command, at toy size: he2015_depth30 without -m trains both inits."""
    out = subprocess.run([sys.executable, "train.py", "experiment=he2015_depth30", "seed=0",
                          "data=digits", "model.depth=2", "model.width=8", "trainer.max_steps=2",
                          "logger=csv", "gradflow=off", "sweep.report=false",
                          f"hydra.sweep.dir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    assert sorted(j["choices"]["init"] for j in jobs) == ["kaiming_normal", "xavier_normal"]


def pick(jobs: list[dict], **wanted: str) -> dict:
    """The one job whose choices and overrides have these values (dots as __)."""
    def values(job: dict) -> dict[str, str]:
        return job["choices"] | dict(o.split("=", 1) for o in job["overrides"])
    found = [j for j in jobs if all(values(j).get(k.replace("__", ".")) == v
                                    for k, v in wanted.items())]
    assert len(found) == 1, (wanted, [j["overrides"] for j in jobs])
    return found[0]


def acc(job: dict) -> float:
    return job["metrics"]["test/acc"]


def test_he2015_xavier_stalls_kaiming_trains_at_depth_30(tmp_path) -> None:
    """The reduced size, pinned (the preset itself is MNIST-1D, depth 40, 3000 steps, seeds
    0-2): digits, depth 30, width 64, 15 epochs of batch 64, seed 0, where the short budget
    keeps Xavier on its plateau. tests/test_he2015.py checks gradprobe against a plain-PyTorch
    reference of the same experiment."""
    jobs = preset(tmp_path, "he2015_depth30", "model.depth=30", "model.width=64",
                  "data.batch_size=64", "trainer.max_steps=-1", "trainer.max_epochs=15",
                  "seed=0")
    xavier, kaiming = pick(jobs, init="xavier_normal"), pick(jobs, init="kaiming_normal")
    assert acc(xavier) <= 0.15 and acc(kaiming) >= 0.5, (acc(xavier), acc(kaiming))


def test_batchnorm2015_sigmoid_depth_10_trains_only_with_batchnorm(tmp_path) -> None:
    jobs = preset(tmp_path, "batchnorm2015", "model.depth=10", "trainer.max_epochs=5")
    plain, bn = pick(jobs, norm="none"), pick(jobs, norm="batch")
    assert acc(plain) <= 0.15 and acc(bn) >= 0.5, (acc(plain), acc(bn))
    assert "vanishing" in plain["diagnosis"]["init"]["verdicts"]


def test_residual_depth50_plain_stays_at_chance_residual_prenorm_trains(tmp_path) -> None:
    jobs = preset(tmp_path, "residual_depth50", "model=mlp,resmlp", "norm=none,layer",
                  "model.depth=50", "model.width=64", "trainer.max_epochs=3")
    plain = pick(jobs, model="mlp", norm="none")
    residual = pick(jobs, model="resmlp", norm="layer")
    assert acc(plain) <= 0.15 and acc(residual) >= 0.5, (acc(plain), acc(residual))


def init_activation_stats(job: dict) -> list[tuple[float, float]]:
    import csv
    from pathlib import Path

    with open(Path(job["run_dir"]) / "gradflow" / "layers.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["step"] == "0" and r["layer"] != "output"]
    return [(float(r["act_mean"]), float(r["act_std"])) for r in rows]


def test_selu2017_keeps_mean_0_variance_1_through_64_layers(tmp_path) -> None:
    jobs = preset(tmp_path / "act", "selu2017", "data=mnist1d", "trainer.max_steps=1",
                  "activation=selu,relu")
    selu = init_activation_stats(pick(jobs, activation="selu"))
    relu = init_activation_stats(pick(jobs, activation="relu"))
    assert all(abs(m) < 0.1 and 0.9 < s < 1.1 for m, s in selu[8:])
    assert relu[-1][1] < 0.01  # the same init lets ReLU activations collapse
    drop = preset(tmp_path / "dropout", "selu2017", "data=mnist1d", "trainer.max_steps=1",
                  "activation=selu", "model.dropout=0.1", "model.alpha_dropout=false,true")
    standard = init_activation_stats(pick(drop, model__alpha_dropout="False"))[-1]
    alpha = init_activation_stats(pick(drop, model__alpha_dropout="True"))[-1]
    assert standard[1] > 1.1 and abs(alpha[1] - 1) < 0.05, (standard, alpha)


def test_selu2017_a_32_layer_selu_net_trains(tmp_path) -> None:
    jobs = preset(tmp_path, "selu2017", "activation=selu", "model.depth=32", "model.width=64",
                  "trainer.max_epochs=5")
    assert len(jobs) == 1 and acc(jobs[0]) >= 0.5


def test_glorot2010_init_jacobian_singular_values_and_gradient_decay(tmp_path) -> None:
    """Standard init: mean singular value ~0.5 and gradients shrinking toward the input;
    normalized (Xavier): ~0.8 and level (the paper: 0.5 vs 0.8, width 1000; here 300)."""
    jobs = preset(tmp_path, "glorot2010_init", "data=mnist1d", "model.width=300",
                  "gradflow.jacobian_examples=8", "trainer.max_steps=1")
    standard, xavier = pick(jobs, init="default"), pick(jobs, init="xavier_uniform")
    sv = (standard["jacobian"]["mean_singular_value"], xavier["jacobian"]["mean_singular_value"])
    assert 0.4 < sv[0] < 0.6 and 0.7 < sv[1] < 0.9, sv
    decay = [j["diagnosis"]["init"]["backprop_first_last_ratio"] for j in (standard, xavier)]
    assert decay[0] < 0.3 and decay[1] > 0.6, decay


def act_means(job: dict, layer: str) -> list[float]:
    import csv
    from pathlib import Path

    with open(Path(job["run_dir"]) / "gradflow" / "layers.csv") as f:
        return [float(r["act_mean"]) for r in csv.DictReader(f) if r["layer"] == layer]


def test_glorot2010_saturation_top_sigmoid_layer_collapses(tmp_path) -> None:
    jobs = preset(tmp_path, "glorot2010_saturation", "data=mnist1d", "model.width=256",
                  "trainer.max_epochs=2", "activation=sigmoid,tanh")
    sigmoid, tanh = pick(jobs, activation="sigmoid"), pick(jobs, activation="tanh")
    top, bottom = act_means(sigmoid, "layer_04"), act_means(sigmoid, "layer_01")
    assert top[0] > 0.45 and top[-1] < 0.25, top  # the top layer is driven toward 0
    assert all(0.45 < m < 0.55 for m in bottom)  # the lowest stays near 0.5
    assert all(abs(m) < 0.1 for m in act_means(tanh, "layer_04"))  # the control does not


def test_mnist1d_baselines_order_linear_mlp_cnn(tmp_path) -> None:
    """The authors' recipe at a tenth of the steps: the published order (32 / 68 / 94 %)."""
    jobs = preset(tmp_path, "mnist1d_baselines", "data=mnist1d", "trainer.max_steps=600")
    linear, mlp, cnn = (acc(pick(jobs, model=m)) for m in ("linear", "mlp", "cnn1d"))
    assert linear <= 0.4 and mlp >= 0.5 and cnn >= 0.8 and linear < mlp < cnn, (linear, mlp, cnn)


# --------------------------------------------------------------- Schoenholz et al. 2017


def fabricated_depth_sweep(folder, accs: dict) -> None:
    """Run directories of a tanh, sigma_b2 = 0.05 sweep; accuracy None: the run diverged."""
    for k, ((sigma_w2, depth), test_acc) in enumerate(accs.items()):
        run = folder / str(k)
        run.mkdir(parents=True)
        summary = {"run_dir": str(run), "seed": 0,
                   "status": "diverged" if test_acc is None else "completed",
                   "choices": {"model": "mlp", "norm": "none", "activation": "tanh",
                               "init": "meanfield", "data": "mnist1d"},
                   "overrides": [f"init.sigma_w2={sigma_w2}", f"model.depth={depth}"],
                   "metrics": {} if test_acc is None else {"test/acc": test_acc,
                                                          "val/acc": test_acc}}
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "config_resolved.yaml").write_text(
            f"init:\n  sigma_w2: {sigma_w2}\n  sigma_b2: 0.05\nmodel:\n  depth: {depth}\n"
            "  width: 64\nactivation:\n  _target_: torch.nn.Tanh\n  _partial_: true\n")


def test_trainable_depth_score_and_figure_from_fabricated_runs(tmp_path) -> None:
    """6 xi_c is 7 layers at sigma_w2 = 0.5, about 30000 at 1.76 (critical), 33 at 6: at depth
    4 every cell should train, at depth 64 only the critical one. One cell is made to disagree
    (0.5 at depth 4 stays at chance); a diverged run counts as not training."""
    from gradprobe import trainability
    from gradprobe.report import build_report

    fabricated_depth_sweep(tmp_path, {(0.5, 4): 0.12, (1.76, 4): 0.55, (6.0, 4): 0.40,
                                      (0.5, 64): 0.10, (1.76, 64): 0.50, (6.0, 64): None})
    sweep = trainability.read_sweep(sorted(tmp_path.iterdir()))
    assert (sweep.activation, sweep.sigma_b2, sweep.depths) == ("tanh", 0.05, [4, 64])
    assert 6 < sweep.trainable_depth(0.5) < 8 and 30 < sweep.trainable_depth(6.0) < 35
    assert abs(sweep.critical_sigma_w2() - 1.761) < 1e-3
    score = trainability.agreement(sweep)
    assert (score.matches, score.cells) == (5, 6) and abs(score.share - 5 / 6) < 1e-12
    assert [(c.sigma_w2, c.depth) for c in score.wrong] == [(0.5, 4)]
    assert trainability.agreement(sweep, threshold=0.11).matches == 6
    assert "| 64 | 0.100 | 0.500 | div |" in trainability.table(sweep)
    result = build_report(tmp_path)  # the sweep report draws it for such a sweep
    figure = result["figures"][trainability.FIGURE]
    assert figure == tmp_path / "report_figures" / trainability.FIGURE
    assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert trainability.FIGURE not in result["skipped"]
    rows = [dict(r, **{"init.sigma_w2": "1.0"}) for r in result["rows"]]
    assert not trainability.applies(rows)  # one sigma_w2: not this figure


def test_schoenholz2017_depth_scale_trains_near_critical_only_at_depth(tmp_path) -> None:
    """Reduced size (digits, width 64, 300 steps; reproduce.py's --scale small): 6 xi_c is 12
    layers at sigma_w2 = 0.75, 33 at 6.0 and diverges at the critical 1.76, so at depth 8 all
    three train and at depth 48 only the near-critical one; the sweep report draws the figure."""
    from gradprobe import trainability

    jobs = preset(tmp_path, "schoenholz2017_depth_scale", "sweep.report=true", "model.width=64",
                  "model.depth=8,48", "init.sigma_w2=0.75,1.76,6.0", "trainer.max_steps=300")
    deep = {s: acc(pick(jobs, init__sigma_w2=s, model__depth="48"))
            for s in ("0.75", "1.76", "6.0")}
    assert deep["1.76"] >= 0.5 and deep["0.75"] <= 0.15 and deep["6.0"] <= 0.15, deep
    assert all(acc(pick(jobs, init__sigma_w2=s, model__depth="8")) >= 0.5
               for s in ("0.75", "1.76", "6.0"))
    assert all(j["ensemble"]["members"] == 3 for j in jobs)  # one ensemble per depth
    score = trainability.agreement(trainability.read_sweep(tmp_path / str(k) for k in range(6)))
    assert score.share == 1.0, [(c.sigma_w2, c.depth, c.acc) for c in score.wrong]
    assert (tmp_path / "report_figures" / trainability.FIGURE).is_file()
