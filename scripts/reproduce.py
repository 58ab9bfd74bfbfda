"""Run the paper presets and write docs/reproductions.md from what the runs measured.

    python scripts/reproduce.py                          # every preset, full size (long)
    python scripts/reproduce.py --scale small            # the reduced sizes of the tests (~3 min)
    python scripts/reproduce.py --preset he2015_depth30 --preset selu2017

Each preset runs as a multirun (joblib, 2 jobs at a time) into multirun/reproduce/<scale>/<name>/;
its numbers are read back from the jobs' run directories, never typed by hand. Presets not run
this time keep their row from the previous file, and the notes after the table (from its first
``## `` heading on) are kept as they are.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "reproductions.md"
WORK = REPO / "multirun" / "reproduce"
Jobs = list[dict]


def pick(jobs: Jobs, **wanted: str) -> dict:
    def values(job: dict) -> dict[str, str]:
        return job["choices"] | dict(o.split("=", 1) for o in job["overrides"])
    found = [j for j in jobs if all(values(j).get(k.replace("__", ".")) == v
                                    for k, v in wanted.items())]
    if len(found) != 1:
        raise LookupError(f"expected one job with {wanted}, found {len(found)}")
    return found[0]


def acc(job: dict) -> float:
    """The final weights' test accuracy, as the papers report it (``test_last/acc``; runs
    tested once, on their final weights, have only ``test/acc``)."""
    metrics = job.get("metrics", {})
    return metrics.get("test_last/acc", metrics.get("test/acc", math.nan))


def layer_column(job: dict, column: str) -> dict[str, list[float]]:
    with open(Path(job["run_dir"]) / "gradflow" / "layers.csv") as f:
        out: dict[str, list[float]] = {}
        for row in csv.DictReader(f):
            out.setdefault(row["layer"], []).append(float(row[column] or "nan"))
        return out


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


# --------------------------------------------------------------------------- what each measures


TRAINS = 0.3  # "trains": at least 3x chance (10 classes); MNIST-1D MLPs top out near 60-70 %
CHANCE = 0.15  # "stays at chance": at most 1.5x chance


def he2015(jobs: Jobs) -> tuple[str, bool]:
    """Test accuracy per seed (Xavier at depth 30 stalls in some seeds and not in others, so one
    seed proves nothing). Reproduced: Xavier at chance in every seed, Kaiming above chance in
    every seed and trained in the median one (the lower median for an even count)."""
    def per_seed(init: str) -> list[float]:
        runs = sorted((j for j in jobs if j["choices"].get("init") == init),
                      key=lambda j: j.get("seed", 0))
        return [acc(j) for j in runs]
    x, k = per_seed("xavier_normal"), per_seed("kaiming_normal")
    seeds = sorted({j.get("seed", 0) for j in jobs})
    text = (f"test acc, seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}: "
            f"Xavier {', '.join(pct(a) for a in x)}; "
            f"Kaiming {', '.join(pct(a) for a in k)}")
    ok = bool(x and k) and all(a <= CHANCE for a in x) and all(a > CHANCE for a in k) and \
        sorted(k)[(len(k) - 1) // 2] >= TRAINS
    return text, ok


def batchnorm(jobs: Jobs) -> tuple[str, bool]:
    parts, ok = [], True
    for depth in sorted({pick_depth(j) for j in jobs}, key=int):
        plain = acc(pick(jobs, norm="none", model__depth=depth))
        bn = acc(pick(jobs, norm="batch", model__depth=depth))
        parts.append(f"depth {depth}: {pct(plain)} without, {pct(bn)} with BN")
        ok &= bn > plain and (depth != "10" or (plain <= CHANCE and bn >= TRAINS))
    return "; ".join(parts), ok


def pick_depth(job: dict) -> str:
    return dict(o.split("=", 1) for o in job["overrides"]).get("model.depth", "?")


def residual(jobs: Jobs) -> tuple[str, bool]:
    parts, ok = [], True
    for depth in sorted({pick_depth(j) for j in jobs}, key=int):
        cells = {(m, n): acc(pick(jobs, model=m, norm=n, model__depth=depth))
                 for m in ("mlp", "resmlp") for n in ("none", "layer")}
        parts.append(f"depth {depth}: plain {pct(cells['mlp', 'none'])}, plain+LN "
                     f"{pct(cells['mlp', 'layer'])}, residual {pct(cells['resmlp', 'none'])}, "
                     f"residual+LN {pct(cells['resmlp', 'layer'])}")
        ok &= cells["mlp", "none"] <= CHANCE and cells["resmlp", "layer"] >= TRAINS
    return "; ".join(parts), ok


def selu(jobs: Jobs) -> tuple[str, bool]:
    def deep_std(job: dict) -> list[float]:
        stds = layer_column(job, "act_std")
        return [v[0] for name, v in stds.items() if name != "output"][8:]
    s, r = deep_std(pick(jobs, activation="selu")), deep_std(pick(jobs, activation="relu"))
    return (f"activation std at init, layers 9-64: SELU {min(s):.2f}-{max(s):.2f}, "
            f"ReLU {min(r):.1e}-{max(r):.1e}"), all(0.9 < v < 1.1 for v in s) and r[-1] < 0.01


def glorot_init(jobs: Jobs) -> tuple[str, bool]:
    std, xav = pick(jobs, init="default"), pick(jobs, init="xavier_uniform")
    sv = [j["jacobian"]["mean_singular_value"] for j in (std, xav)]
    bp = [j["diagnosis"]["init"]["backprop_first_last_ratio"] for j in (std, xav)]
    return (f"mean singular value {sv[0]:.2f} vs {sv[1]:.2f}; first/last back-propagated "
            f"gradient {bp[0]:.2f} vs {bp[1]:.2f}"), abs(sv[0] - 0.5) < 0.1 and abs(
                sv[1] - 0.8) < 0.1


def glorot_saturation(jobs: Jobs) -> tuple[str, bool]:
    means = layer_column(pick(jobs, activation="sigmoid"), "act_mean")
    top, bottom = means["layer_04"], means["layer_01"]
    return (f"sigmoid mean activation, top layer {top[0]:.2f} -> {top[-1]:.2f}, bottom layer "
            f"{min(bottom):.2f}-{max(bottom):.2f}"), top[-1] < 0.25 and min(bottom) > 0.4


def baselines(jobs: Jobs) -> tuple[str, bool]:
    a = [acc(pick(jobs, model=m)) for m in ("linear", "mlp", "cnn1d")]
    return f"{pct(a[0])} / {pct(a[1])} / {pct(a[2])}", a[0] < a[1] < a[2]


def meanfield(jobs: Jobs) -> tuple[str, bool]:
    parts, ok = [], True
    for job in sorted(jobs, key=lambda j: j["theory"]["sigma_w2"]):
        norms = [v[0] for name, v in layer_column(job, "backprop_norm").items()
                 if name != "output"]
        chi = job["theory"]["chi1_layers"]
        measured = math.exp(sum(2 * math.log(norms[k] / norms[k + 1]) for k in range(5, 35)) / 30)
        predicted = math.exp(sum(math.log(chi[k + 1]) for k in range(5, 35)) / 30)
        parts.append(f"sigma_w2 {job['theory']['sigma_w2']:.2f}: {measured:.3f} vs chi_1 "
                     f"{predicted:.3f}")
        ok &= abs(measured / predicted - 1) < 0.05
    return "; ".join(parts), ok


AGREEMENT_BAR = 0.8  # schoenholz2017: the bound must call at least this share of cells right


def schoenholz2017(jobs: Jobs) -> tuple[str, bool]:
    """Agreement of "trains" (test acc above trainability.THRESHOLD) with depth < 6 xi_c over
    every cell; reproduced when it is at least AGREEMENT_BAR and the deepest near-critical net
    trains."""
    from gradprobe import trainability

    sweep = trainability.read_sweep(Path(j["run_dir"]) for j in jobs)
    score = trainability.agreement(sweep)
    deep, critical = sweep.depths[-1], sweep.critical_sigma_w2()
    near = min((c for c in sweep.cells if c.depth == deep),
               key=lambda c: abs(c.sigma_w2 - critical))
    text = (f"trains (test acc > {pct(score.threshold)}) iff depth < 6 xi_c in {score.text()}; "
            f"depth {deep}: {pct(near.acc)} at sigma_w2 {near.sigma_w2:g} (critical "
            f"{critical:.2f})")
    if score.wrong:
        text += "; not as predicted: " + ", ".join(
            f"sigma_w2 {c.sigma_w2:g} at depth {c.depth} ({pct(c.acc)}, 6 xi_c "
            f"{sweep.trainable_depth(c.sigma_w2):.0f})" for c in score.wrong)
    return text, score.share >= AGREEMENT_BAR and near.trains(score.threshold)


@dataclass
class Preset:
    name: str
    paper: str
    claim: str
    paper_number: str
    measure: Callable[[Jobs], tuple[str, bool]]
    small: list[str] = field(default_factory=list)
    figure: str = "grad_profile_init.png"
    launcher: list[str] = field(default_factory=lambda: ["hydra/launcher=joblib",
                                                         "hydra.launcher.n_jobs=2"])


PRESETS = [
    Preset("he2015_depth30", "He et al. 2015",
           "ReLU MLP, SGD + momentum, 3000 steps, 3 seeds: Xavier stays at chance, Kaiming "
           "trains (on MNIST-1D at depth 40; at depth 30 Xavier only plateaus, then trains in "
           "most seeds)",
           "30 layers: Xavier does not converge, Kaiming does (Fig. 3)", he2015,
           ["data=digits", "model.depth=30", "model.width=64", "data.batch_size=64",
            "trainer.max_steps=-1", "trainer.max_epochs=15", "seed=0"], "training_curves.png"),
    Preset("batchnorm2015", "Ioffe & Szegedy 2015",
           "sigmoid MLP: BatchNorm trains where plain stays near chance (depth 10)",
           "BN: faster and better (3 x 100)", batchnorm,
           ["data=digits", "model.depth=10", "trainer.max_epochs=5"], "training_curves.png"),
    Preset("residual_depth50", "He et al. 2016",
           "plain deep ReLU MLP at chance; residual + pre-LayerNorm trains",
           "deeper plain nets train worse; residual ones train", residual,
           ["data=digits", "model.depth=50", "model.width=64", "trainer.max_epochs=3"],
           "training_curves.png"),
    Preset("selu2017", "Klambauer et al. 2017",
           "SELU + LeCun init keeps activations at mean 0, variance 1 through 64 layers",
           "fixed point (0, 1)", selu, ["data=mnist1d", "trainer.max_steps=1"]),
    Preset("glorot2010_init", "Glorot & Bengio 2010",
           "standard vs normalized init: layer Jacobian mean singular value, gradient decay",
           "about 0.5 vs 0.8", glorot_init,
           ["model.width=300", "gradflow.jacobian_examples=8", "trainer.max_steps=1"]),
    Preset("glorot2010_saturation", "Glorot & Bengio 2010",
           "sigmoid: the top hidden layer saturates toward 0, lower layers stay near 0.5",
           "top layer mean to ~0 within the first epochs (Fig. 2)", glorot_saturation,
           ["model.width=256", "trainer.max_epochs=2", "activation=sigmoid,tanh"]),
    Preset("mnist1d_baselines", "Greydanus 2020",
           "logistic regression < MLP < CNN on MNIST-1D (authors' recipe)",
           "about 32 / 68 / 94 %", baselines, ["trainer.max_steps=600"], "training_curves.png"),
    Preset("meanfield_check", "Schoenholz et al. 2017",
           "per-layer gradient factor at init equals chi_1 (40 x 512 tanh)",
           "chi_1 = sigma_w2 E[phi'(z)^2]", meanfield),
    Preset("schoenholz2017_depth_scale", "Schoenholz et al. 2017",
           "tanh MLPs (sigma_b2 = 0.05) train only while depth < 6 xi_c: a band around the "
           "critical sigma_w2 that narrows with depth",
           "trainable iff depth < 6 xi_c (accuracy over sigma_w2 x depth)", schoenholz2017,
           ["data=digits", "model.width=64", "model.depth=8,48", "init.sigma_w2=0.75,1.76,6.0",
            "trainer.max_steps=300"], "trainable_depth.png", ["hydra/launcher=ensemble"]),
]


def run(preset: Preset, scale: str, work: Path, reuse: bool = False) -> tuple[Jobs, Path]:
    sweep_dir = work / scale / preset.name
    if reuse and list(sweep_dir.glob("*/summary.json")):
        return [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")], sweep_dir
    if sweep_dir.exists():
        shutil.rmtree(sweep_dir)
    overrides = preset.small if scale == "small" else []
    subprocess.run([sys.executable, "train.py", "-m", f"experiment={preset.name}", *overrides,
                    "logger=csv", *preset.launcher,
                    f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, check=False,
                   capture_output=True)
    return [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")], sweep_dir


def row(preset: Preset, scale: str, work: Path, docs: Path, reuse: bool = False) -> str:
    started = time.time()
    jobs, sweep_dir = run(preset, scale, work, reuse)
    try:
        measured, ok = preset.measure(jobs)
        verdict = "reproduced" if ok else "**not reproduced**"
    except Exception as err:  # a failed run is a result to report, not a crash
        measured, verdict = f"could not measure: {err}", "**failed**"
    figure = sweep_dir / "report_figures" / preset.figure
    image = ""
    if figure.exists():
        images = docs.parent / "img" / "reproductions"
        images.mkdir(parents=True, exist_ok=True)
        shutil.copy(figure, images / f"{preset.name}.png")
        image = f"[figure](img/reproductions/{preset.name}.png)"
    command = " ".join(["python train.py -m", f"experiment={preset.name}",
                        *(preset.small if scale == "small" else [])])
    print(f"{preset.name}: {measured} -> {verdict} ({time.time() - started:.0f} s)")
    return (f"| {preset.paper} | {preset.claim} | `{command}` | {preset.paper_number} | "
            f"{measured} | {verdict} | {image} |")


HEADER = ("| paper | claim | command | paper's number | measured | verdict | figure |\n"
          "|---|---|---|---|---|---|---|")


def split_notes(docs: Path) -> tuple[str, str]:
    """The file's table part and its notes: everything from the first ``## `` heading on is
    written by hand (how a result was reconciled, what it means) and is kept as it is."""
    text = docs.read_text() if docs.exists() else ""
    at = text.find("\n## ")
    return (text, "") if at < 0 else (text[:at], text[at:])


def previous_rows(table: str) -> dict[str, str]:
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| paper |")]
    return {p.name: r for r in rows for p in PRESETS if f"experiment={p.name}" in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", choices=[p.name for p in PRESETS])
    parser.add_argument("--scale", choices=["full", "small"], default="full")
    parser.add_argument("--out", type=Path, default=DOCS, help="the results table")
    parser.add_argument("--work", type=Path, default=WORK, help="where the runs go")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the runs already in --work instead of running again")
    args = parser.parse_args()
    chosen = set(args.preset or [p.name for p in PRESETS])
    docs = args.out
    table, notes = split_notes(docs)
    rows = previous_rows(table)
    for preset in PRESETS:
        if preset.name in chosen:
            rows[preset.name] = row(preset, args.scale, args.work, docs, args.reuse)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(
        "# Reproductions\n\nWritten by `python scripts/reproduce.py "
        f"--scale {args.scale}` on {time.strftime('%Y-%m-%d')} at commit {commit}; every "
        "number comes from the runs it started (multirun/reproduce/). At `--scale small` the "
        "presets run at the reduced sizes shown in the command column (digits instead of "
        "MNIST-1D, narrower nets, fewer steps), which are also what the tests check; the "
        "full-size numbers come from `--scale full`. Verdicts: \"trains\" means at least 30 % "
        "test accuracy (3x chance), \"stays at chance\" at most 15 %. Test accuracy is the "
        "final weights' (`test_last/acc`), as the papers report it.\n\n" + HEADER + "\n"
        + "\n".join(rows[p.name] for p in PRESETS if p.name in rows) + "\n" + notes)
    print(f"wrote {docs}")


if __name__ == "__main__":
    main()
