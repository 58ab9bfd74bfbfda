"""``gradprobe-eval`` (``python eval.py``): test a saved run's checkpoint again, on its own test
split or on another data option of the same input shape, without training.

    python eval.py <run dir> [checkpoint=best|last] [data=<option>] [data.<key>=<value> ...]

(``run=<run dir>`` works as well as the bare directory.)

The result goes to ``<run dir>/eval/<time>.json`` (a new file; nothing of the run is changed)
and one line is printed. A run directory that is not a run, a missing checkpoint, or data the
network cannot read is refused with one line, exit 2, and nothing written. The checkpoint is
data: it is loaded only through :func:`gradprobe.build.load_module` (``weights_only``, and a
config naming only gradprobe's components). Torch is imported after every check on the
arguments and the config.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from gradprobe.config import compose, register_resolvers
from gradprobe.errors import ConfigError, DataError
from gradprobe.instruments.files import write_json
from gradprobe.record import RESOLVED_CONFIG, RunDirError
from gradprobe.resume import load_resolved
from gradprobe.schema import validate

USAGE = ("usage: python eval.py <run dir> [checkpoint=best|last] [data=<option>] "
         "[data.<key>=<value> ...]")
WEIGHTS = ("best", "last")
MISSING = object()


def parse(argv: list[str]) -> tuple[Path, str, list[str]]:
    """The run dir, which checkpoint, and the data overrides; ConfigError for anything else."""
    run, weights, data = None, "best", []
    if argv and "=" not in argv[0]:  # the run directory, bare
        run, argv = Path(argv[0]), argv[1:]
    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except Exception as err:
        raise ConfigError(f"config error: {' '.join(argv)} cannot be parsed ({err}); "
                          f"{USAGE}") from None
    for text, override in zip(argv, parsed, strict=True):
        key = override.key_or_group
        if key == "run":
            run = Path(str(override.value()))
        elif key == "checkpoint":
            weights = str(override.value())
            if weights not in WEIGHTS:
                raise ConfigError(f"config error: checkpoint={weights!r} is not allowed; "
                                  "expected 'best' or 'last'")
        elif key == "data" or key.startswith("data."):
            data.append(text)
        else:
            raise ConfigError(f"config error: {text} is not an eval argument; {USAGE}")
    if run is None:
        raise ConfigError(f"config error: run= is missing; {USAGE}")
    return run, weights, data


def checkpoint_of(run_dir: Path, weights: str) -> Path:
    """``checkpoints/last.ckpt``, or the run's best (``best-epochNNN.ckpt``)."""
    if not run_dir.is_dir() or not (run_dir / RESOLVED_CONFIG).is_file():
        raise RunDirError(f"run={run_dir}: not a gradprobe run directory (no {RESOLVED_CONFIG})")
    folder = run_dir / "checkpoints"
    found = ([folder / "last.ckpt"] if weights == "last"
             else sorted(folder.glob("best-epoch*.ckpt")))
    found = [p for p in found if p.is_file()]
    if not found:
        wanted = "last.ckpt" if weights == "last" else "best-epoch*.ckpt"
        raise RunDirError(f"run={run_dir}: no {wanted} in {folder} (a run with checkpoints off, "
                          "without validation for best, or not yet checkpointed)")
    return found[-1]


def config_for(run_dir: Path, data: list[str]) -> tuple[DictConfig, str]:
    """The run's own config with its ``data`` changed: ``data=<option>`` composes that option
    afresh (with the ``data.*`` overrides); ``data.*`` alone changes the run's own data config.
    Checked by the schema. Also the data's name, for the printed line."""
    cfg = load_resolved(run_dir)
    if not data:
        return cfg, "the run's own data"
    parsed = OverridesParser.create().parse_overrides(data)
    if any(o.key_or_group == "data" for o in parsed):
        composed, choices = compose(data)
        with open_dict(cfg):
            cfg.data = composed.data
            cfg.task = composed.data.task
        name = f"data={choices['data']}"
    else:
        with open_dict(cfg):
            for override in parsed:
                key = override.key_or_group
                if OmegaConf.select(cfg, key, default=MISSING) is MISSING:
                    raise ConfigError(f"config error: {key} is not a key of the run's data "
                                      "config; expected one of its data.* keys, or data=<option>")
                OmegaConf.update(cfg, key, override.value())
        name = " ".join(data)
    validate(cfg)
    return cfg, name


def evaluate(run_dir: Path, weights: str = "best", data: list[str] = ()) -> dict[str, Any]:
    """Test the run's checkpoint; returns (and writes) the result."""
    checkpoint = checkpoint_of(run_dir, weights)
    cfg, data_name = config_for(run_dir, list(data))
    from gradprobe.build import load_module
    from gradprobe.run import load_splits  # torch and Lightning from here on

    module = load_module(checkpoint)
    splits = load_splits(cfg)
    shape = module.hparams.data_shape
    if (list(splits.input_shape) != list(shape["input_shape"])
            or splits.num_outputs != shape["num_outputs"] or cfg.task != module.hparams[
                "run_config"]["task"]):
        raise DataError(f"data error: {data_name} data ({cfg.task}, inputs "
                        f"{tuple(splits.input_shape)}, {splits.num_outputs} outputs) does not "
                        f"fit the network of {checkpoint} ({module.hparams['run_config']['task']}"
                        f", inputs {tuple(shape['input_shape'])}, {shape['num_outputs']} outputs)")
    metrics = test(module, splits, cfg)
    result = {"run_dir": str(run_dir), "checkpoint": str(checkpoint), "weights": weights,
              "data": data_name, "overrides": list(data), "metrics": metrics,
              "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    result["file"] = str(write_new(run_dir / "eval", result))
    return result


def test(module: Any, splits: Any, cfg: DictConfig) -> dict[str, float]:
    """One ``trainer.test`` on the CPU, nothing logged or saved; the ``test/*`` metrics."""
    import pytorch_lightning as pl

    from gradprobe.data import InMemoryDataModule
    from gradprobe.record import numbers

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         limit_test_batches=cfg.trainer.get("limit_test_batches"))
    datamodule = InMemoryDataModule(splits, cfg.data.batch_size, cfg.data.eval_batch_size,
                                    cfg.seed)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return numbers({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})


def write_new(folder: Path, result: dict[str, Any]) -> Path:
    """``<folder>/<time>.json``, written atomically and never over an existing file."""
    folder.mkdir(exist_ok=True)
    while True:
        path = folder / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{time.time_ns() % 10**9:09d}.json"
        try:
            write_json(path, result, new=True)
            return path
        except FileExistsError:
            continue


def main(argv: list[str] | None = None) -> None:
    """The command: one line, exit 0; a refusal: one line on stderr, exit 2."""
    register_resolvers()
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):  # the command's one line
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        run_dir, weights, data = parse(list(sys.argv[1:] if argv is None else argv))
        result = evaluate(run_dir, weights, data)
    except (ConfigError, DataError, RunDirError) as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(result["metrics"].items()))
    print(f"{shown} ({Path(result['checkpoint']).name} on {result['data']}) -> "
          f"{result['file']}")


if __name__ == "__main__":
    main()
