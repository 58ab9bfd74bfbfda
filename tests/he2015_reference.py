"""He et al. 2015's depth-30 experiment in plain PyTorch: an independent reference for
``experiment=he2015_depth30`` (no gradprobe import anywhere in this file).

What it implements, each from the definition rather than from gradprobe's code:

- data: MNIST-1D generated offline by the ``mnist1d`` package (5000 samples, 80 % train, seed 42;
  the package itself centres the whole set and scales it to standard deviation 1), inputs as
  float32; 10 % of the 4000 training sequences (400) held out for validation by a permutation
  from ``torch.Generator().manual_seed(0)`` (the first 400 indices), so 3600 train / 400 val /
  1000 test. Nothing is downloaded.
- network: ``depth`` hidden layers Linear -> ReLU of ``width`` units, then a Linear output layer
  (so ``depth + 1`` weight layers). Built right after ``torch.manual_seed(seed)``; then every
  weight layer, the output layer included, is drawn in depth order by ``init`` (``xavier``:
  ``xavier_normal_``, gain 1; ``kaiming``: ``kaiming_normal_``, fan_in, relu) with zero biases.
- training: SGD (momentum, no dampening, no Nesterov, no weight decay, constant learning rate) on
  the mean cross-entropy of batches of ``batch``. Epoch ``e``'s order is
  ``torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + e))``, cut into whole
  batches (the last partial batch is dropped); ``steps`` optimizer steps in all, the last epoch
  cut short where ``steps`` ends.

``train`` returns the accuracies of the final weights on the whole train, val and test splits,
the running accuracy over the last (possibly cut) epoch's batches as they were trained on (what
a Lightning epoch metric reports as ``train/acc``), and every step's loss.

    python tests/he2015_reference.py --init xavier --seed 0 1 2 3 4   # one process, 1 thread
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

INITS = {
    "xavier": lambda w: nn.init.xavier_normal_(w, gain=1.0),
    "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0.0, mode="fan_in", nonlinearity="relu"),
}


@functools.lru_cache(maxsize=1)
def mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D as the ``mnist1d`` package generates it (deterministic, offline, ~1 s)."""
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    state = np.random.get_state()  # make_dataset reseeds numpy's global generator
    try:
        args = get_dataset_args(as_dict=True) | {"num_samples": 5000, "train_split": 0.8,
                                                  "seed": 42}
        d = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def splits(val_fraction: float = 0.1, split_seed: int = 0) -> dict[str, tuple[torch.Tensor,
                                                                          torch.Tensor]]:
    """train / val / test as (float32 inputs, int64 labels)."""
    x, y, x_test, y_test = mnist1d_arrays()
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    n_val = round(val_fraction * len(x))
    val, train = order[:n_val], order[n_val:]
    return {"train": (x[train], y[train]), "val": (x[val], y[val]),
            "test": (torch.tensor(x_test, dtype=torch.float32),
                     torch.tensor(y_test, dtype=torch.long))}


def network(init: str, depth: int, width: int, in_features: int = 40,
            classes: int = 10) -> nn.Sequential:
    """``depth`` Linear -> ReLU blocks and a Linear output, initialised in depth order."""
    sizes = [in_features] + [width] * depth
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(width, classes))
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.Linear):
                INITS[init](layer.weight)
                layer.bias.zero_()
    return nn.Sequential(*layers)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (net(x).argmax(1) == y).float().mean().item()


def train(init: str, seed: int, width: int = 128, depth: int = 30, batch: int = 100,
          steps: int = 3000, lr: float = 0.01, momentum: float = 0.9,
          eval_at: tuple[int, ...] = ()) -> dict:
    """One run; see the module docstring for exactly what it does. ``eval_at``: step counts
    after which the train and test accuracies are also recorded (under ``"curve"``)."""
    data = splits()
    x, y = data["train"]
    torch.manual_seed(seed)
    net = network(init, depth, width)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, dampening=0.0,
                          nesterov=False, weight_decay=0.0)
    per_epoch = len(x) // batch
    losses: list[float] = []
    curve: dict[int, dict[str, float]] = {}
    correct = seen = 0
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        if k == 0:
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
            batches = order[:per_epoch * batch].view(per_epoch, batch)
            correct = seen = 0  # the running accuracy covers the current epoch only
        idx = batches[k]
        out = net(x[idx])
        loss = F.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        correct += int((out.detach().argmax(1) == y[idx]).sum())
        seen += len(idx)
        if step + 1 in eval_at:
            curve[step + 1] = {"train_acc": accuracy(net, *data["train"]),
                               "test_acc": accuracy(net, *data["test"])}
    return {"init": init, "seed": seed, "width": width, "depth": depth, "batch": batch,
            "steps": steps, "lr": lr, "momentum": momentum,
            "train_acc": accuracy(net, *data["train"]),
            "train_acc_last_epoch": correct / max(seen, 1),
            "val_acc": accuracy(net, *data["val"]), "test_acc": accuracy(net, *data["test"]),
            "first_loss": losses[0] if losses else float("nan"),
            "last_loss": losses[-1] if losses else float("nan"), "curve": curve,
            "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", choices=sorted(INITS), default="xavier")
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--losses", action="store_true", help="print every step's loss too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for seed in args.seed:
        started = time.time()
        result = train(args.init, seed, args.width, args.depth, args.batch, args.steps, args.lr,
                       args.momentum)
        result["wall_time_s"] = round(time.time() - started, 1)
        if not args.losses:
            del result["losses"]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
