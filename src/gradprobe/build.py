"""Config -> network -> LightningModule (and the network's mean-field prediction), and the same
way back from a checkpoint.

The ``model`` group's builder, fed the ``activation`` and ``norm`` groups' factories, initialised
by the ``init`` group; then the task's loss and torchmetrics, and the generic module.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanSquaredError, R2Score

from gradprobe import record, theory, trusted
from gradprobe.data import Splits
from gradprobe.init import implied_variances, initialize
from gradprobe.instruments.stats import pairwise_cosine
from gradprobe.module import GradprobeModule
from gradprobe.nets import DepthNet


def build_network(cfg: DictConfig, input_shape: tuple[int, ...], num_outputs: int) -> DepthNet:
    """The ``model`` group's builder, fed factories from the ``activation`` and ``norm`` groups,
    then initialised by the ``init`` group."""
    net = instantiate(cfg.model, activation=instantiate(cfg.activation),
                      norm=instantiate(cfg.norm), in_shape=input_shape, out_features=num_outputs)
    bias = cfg.init.bias  # null, a constant, or an init function's config
    initialize(net, instantiate(cfg.init.weight),
               instantiate(bias) if OmegaConf.is_config(bias) else bias)
    return net


def loss_and_metrics(task: str, num_outputs: int) -> tuple[nn.Module, MetricCollection]:
    if task == "classification":
        # validate_args=False: the argument checks would sync host and device on every step.
        return nn.CrossEntropyLoss(), MetricCollection(
            {"acc": MulticlassAccuracy(num_outputs, average="micro", validate_args=False)})
    return nn.MSELoss(), MetricCollection({"mse": MeanSquaredError(),
                                           "r2": R2Score(multioutput="uniform_average")})


def build_module(cfg: DictConfig, input_shape: tuple[int, ...], num_outputs: int,
                 steps_per_call: int = 1, compile: str = "none") -> GradprobeModule:
    net = build_network(cfg, input_shape, num_outputs)
    loss, metrics = loss_and_metrics(cfg.task, num_outputs)
    plain = OmegaConf.to_container(cfg, resolve=True)
    return GradprobeModule(net, loss, metrics, optimizer=plain["optimizer"],
                           scheduler=plain["scheduler"] or None, run_config=plain,
                           data_shape={"input_shape": list(input_shape),
                                       "num_outputs": num_outputs},
                           steps_per_call=steps_per_call, compile=compile)


def load_module(checkpoint: str | Path) -> GradprobeModule:
    """Rebuild network, loss and metrics from the config saved in a checkpoint, then load it.
    The checkpoint is data: it loads with ``weights_only``, and its config may name only the
    components gradprobe's ``conf/`` declares (:mod:`gradprobe.trusted`); anything else, or an
    unreadable file, is refused with one line (``record.RunDirError``)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        hparams = state["hyper_parameters"]
        cfg, shape = OmegaConf.create(hparams["run_config"]), hparams["data_shape"]
    except Exception as err:
        raise record.RunDirError(f"checkpoint {checkpoint} is unreadable or not a gradprobe "
                                 f"checkpoint ({type(err).__name__}: {err})") from None
    trusted.check(hparams, f"checkpoint {checkpoint}")
    net = build_network(cfg, tuple(shape["input_shape"]), shape["num_outputs"])
    loss, metrics = loss_and_metrics(cfg.task, shape["num_outputs"])
    return GradprobeModule.load_from_checkpoint(checkpoint, map_location="cpu", net=net,
                                                loss=loss, metrics=metrics, weights_only=True)


INPUT_PROBE = 1024  # examples whose mean square and pairwise cosine feed the prediction


def predict_init(cfg: DictConfig, choices: dict[str, str], net: DepthNet,
                 splits: Splits) -> dict[str, Any]:
    """The mean-field prediction for this run: from the variances its init actually drew, the
    training inputs' mean square and mean pairwise cosine (on the first ``INPUT_PROBE``
    examples), next to which the init probe's measurement is put."""
    implied = implied_variances(net)
    inputs = splits.train[0][:INPUT_PROBE].float()
    q_input = float(inputs.pow(2).mean())
    c_input = float(pairwise_cosine(inputs[None]))
    in_features = math.prod(splits.input_shape)
    prediction = theory.for_config(cfg, choices, implied["sigma_w2"], implied["sigma_b2"],
                                   q_input, in_features, c_input=c_input)
    return prediction | {"implied_sigma_w2": implied["sigma_w2"],
                         "implied_sigma_b2": implied["sigma_b2"], "q_input": q_input,
                         "c_input": c_input}
