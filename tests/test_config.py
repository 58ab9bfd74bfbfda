"""Composition of every option of every group, and the promised errors for bad values."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from conftest import CONF_DIR, REPO, compose_config
from gradprobe.schema import ConfigError, validate

GROUP_OPTIONS = sorted(
    (path.parent.name, path.stem) for path in CONF_DIR.glob("*/*.yaml")
)


def test_every_group_has_options() -> None:
    groups = {g for g, _ in GROUP_OPTIONS}
    assert groups == {"data", "model", "activation", "norm", "init", "optimizer", "scheduler",
                      "accelerator", "logger", "experiment", "gradflow", "hparams_search",
                      "callbacks", "debug"}


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    cfg, choices = compose_config([f"{group}={option}"])
    validate(cfg)
    if group == "logger":
        assert set(cfg.logger) == ({option} - {"none"})
    else:
        assert choices[group] == option


def test_defaults() -> None:
    cfg, choices = compose_config([])
    assert choices == {"data": "mnist1d", "model": "mlp", "activation": "relu", "norm": "none",
                       "init": "default", "optimizer": "adam", "scheduler": "none",
                       "accelerator": "cpu", "gradflow": "default",
                       "callbacks": "default"}  # none for a list option
    assert cfg.seed == 0 and cfg.task == "classification"
    assert set(cfg.logger) == {"csv", "wandb"} and cfg.logger.wandb.mode == "offline"


def test_several_loggers_at_once() -> None:
    cfg, _ = compose_config(["logger=[csv,tensorboard,wandb]"])
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}


def test_gpu_with_devices_composes_for_ddp() -> None:
    cfg, _ = compose_config(["accelerator=gpu", "trainer.devices=4"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 4


def test_task_follows_data() -> None:
    assert compose_config(["data=synthetic"])[0].task == "regression"


BAD_VALUES = [
    ("model.depth=0", "model.depth=0", "an integer >= 1"),
    ("model.depth=2.5", "model.depth=2.5", "an integer >= 1"),
    ("model.width=-3", "model.width=-3", "an integer >= 1"),
    ("model.dropout=1.0", "model.dropout=1.0", "a number in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout=-0.1", "a number in [0, 1)"),
    ("optimizer.lr=0", "optimizer.lr=0", "a number > 0"),
    ("optimizer.lr=fast", "optimizer.lr='fast'", "a number > 0"),
    ("seed=-1", "seed=-1", "an integer >= 0"),
    ("data.batch_size=0", "data.batch_size=0", "an integer >= 1"),
    ("trainer.precision=17", "trainer.precision=17", "one of"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0", "an integer >= 1, or -1"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1", "null or a number > 0"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0", "integer >= 1"),
    ("engine.compile=cuda", "engine.compile='cuda'", "'none' or 'graph'"),
    ("engine.steps_per_call=0", "engine.steps_per_call=0", "integer >= 1"),
    ("task=clustering", "task='clustering'", "'classification' or 'regression'"),
]


@pytest.mark.parametrize(("override", "shown", "allowed"), BAD_VALUES)
def test_bad_values_name_key_value_and_rule(override: str, shown: str, allowed: str) -> None:
    cfg, _ = compose_config([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert "\n" not in message and shown in message and allowed in message


def test_group_specific_rules() -> None:
    for overrides, key in [(["activation=leaky_relu", "activation.negative_slope=-1"],
                            "activation.negative_slope"),
                           (["model=cnn1d", "model.kernel_size=4"], "model.kernel_size"),
                           (["init=normal", "init.weight.std=0"], "init.weight.std"),
                           (["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum")]:
        with pytest.raises(ConfigError, match=key):
            validate(compose_config(overrides)[0])


def test_unknown_option_lists_choices() -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_config(["activation=swish"])
    assert "Available options" in str(err.value) and "leaky_relu" in str(err.value)


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigCompositionException, match="detph"):
        compose_config(["model.detph=5"])


def test_cli_bad_value_fails_fast_without_torch() -> None:
    """The CLI path: exit 2, one line on stderr, torch never imported, well under a second of
    work after the interpreter starts (the elapsed time is printed, not asserted)."""
    probe = (
        "import sys, time; t = time.perf_counter(); sys.argv = ['train.py', 'model.depth=0'];"
        "from gradprobe.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules, round(time.perf_counter() - t, 2))"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    code, torch_loaded, seconds = out.stdout.split()
    print(f"config error reported in {seconds} s in-process, "
          f"{time.perf_counter() - start:.2f} s with interpreter start")
    assert (code, torch_loaded) == ("2", "False")
    assert out.stderr.strip().splitlines() == [
        "config error: model.depth=0 is not allowed; expected an integer >= 1 "
        "(only model=linear has no hidden layer)"]


def test_cli_help_does_not_import_torch() -> None:
    probe = ("import sys; sys.argv = ['train.py', '--help']; from gradprobe.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, 'hydra_plugins.gradprobe_ensemble' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert "== Config ==" in out.stdout and "engine" in out.stdout
    assert out.stdout.split()[-2:] == ["False", "True"]  # the launcher plugin loads torch-free


def test_slurm_launcher_preset_composes() -> None:
    from hydra import compose, initialize_config_dir

    from gradprobe.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.array_parallelism, launcher.timeout_min) == (1, 32, 60)


def test_tpu_accelerator_composes() -> None:
    cfg, _ = compose_config(["accelerator=tpu"])
    validate(cfg)
    assert cfg.trainer.accelerator == "tpu" and cfg.trainer.precision == "bf16-true"
