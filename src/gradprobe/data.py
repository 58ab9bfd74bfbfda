"""Datasets as tensors in memory, and one datamodule that serves them as index slices.

Every source returns a :class:`Splits` of CPU tensors. The datamodule moves them once to the
training device; a batch is then ``x[idx], y[idx]`` for a list of indices from an ordinary
sampler (``Dataset.__getitems__``), so there is no per-sample ``__getitem__`` + collate and
Lightning can still swap in a ``DistributedSampler`` under DDP.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from gradprobe.engine.chunks import StepChunks
from gradprobe.errors import DataError
from gradprobe.instruments.files import atomic_file
from gradprobe.splits import check_split_sizes, held_out, planned_splits

Pair = tuple[Tensor, Tensor]
log = logging.getLogger("gradprobe")


@dataclass
class Splits:
    """Train/val/test tensors of one dataset and what the network needs to know about them."""

    train: Pair
    val: Pair
    test: Pair
    num_outputs: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


def data_root(root: str | None) -> Path:
    return Path(root or "~/.cache/gradprobe").expanduser()


def split_off(pair: Pair, fraction: float, seed: int) -> tuple[Pair, Pair]:
    """Split a random ``fraction`` off ``pair`` (a fixed ``seed``, independent of the run seed)."""
    x, y = pair
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_off = held_out(len(x), fraction)
    keep, off = order[n_off:], order[:n_off]
    return (x[keep], y[keep]), (x[off], y[off])


def _classification(x: np.ndarray, y: np.ndarray) -> Pair:
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


# --------------------------------------------------------------------------- sources


def mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42,
            val_fraction: float = 0.1, split_seed: int = 0, root: str | None = None) -> Splits:
    """MNIST-1D (Greydanus 2020) generated offline by ``mnist1d.make_dataset``; cached on disk."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True) | {"num_samples": num_samples,
                                              "train_split": train_split, "seed": seed}
    key = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    cache = data_root(root) / f"mnist1d-{key}.npz"

    def generate() -> None:
        from mnist1d.utils import ObjectView

        d = make_dataset(ObjectView(args))
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache, "wb") as f:  # parallel jobs never read a half-written file
            np.savez(f, x=d["x"], y=d["y"], x_test=d["x_test"], y_test=d["y_test"])

    if not cache.exists():
        generate()
    try:
        train, test = _read_mnist1d(cache)
    except Exception as err:  # damaged from outside (only whole files are ever written)
        # The cache is a pure function of ``args``: regenerating it (~1 s) loses nothing.
        log.warning("MNIST-1D cache %s is unreadable (%s); regenerating it", cache,
                    first_line(err))
        generate()
        try:
            train, test = _read_mnist1d(cache)
        except Exception as again:
            raise DataError(f"data error: MNIST-1D cache {cache} is unreadable even after "
                            f"regenerating it ({first_line(again)}); delete it to regenerate, "
                            "and check the disk") from again
    train, val = split_off(train, val_fraction, split_seed)
    return Splits(train, val, test, num_outputs=10)


def _read_mnist1d(cache: Path) -> tuple[Pair, Pair]:
    with np.load(cache) as d:
        return _classification(d["x"], d["y"]), _classification(d["x_test"], d["y_test"])


def first_line(err: BaseException) -> str:
    """An error as one line: its type and the first line of its message."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def digits(test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0) -> Splits:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rest, test = split_off(_classification(d.data / 16.0, d.target), test_fraction, split_seed)
    train, val = split_off(rest, val_fraction, split_seed + 1)
    return Splits(train, val, test, num_outputs=10)


def synthetic(n_train: int = 1000, n_val: int = 200, n_test: int = 200, in_features: int = 20,
              out_features: int = 1, inputs: str = "normal", target: str = "teacher",
              teacher_width: int = 32, noise: float = 0.1, seed: int = 1234) -> Splits:
    """Regression data: inputs N(0, 1) or U[0, 1); targets from a fixed random tanh teacher
    network plus noise, or independent U[0, 1) values (the origin article's toy)."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val + n_test
    if inputs == "uniform":
        x = torch.rand(n, in_features, generator=g)
    else:
        x = torch.randn(n, in_features, generator=g)
    if target == "random":
        y = torch.rand(n, out_features, generator=g)
    else:
        w1 = torch.randn(in_features, teacher_width, generator=g) / in_features**0.5
        w2 = torch.randn(teacher_width, out_features, generator=g) / teacher_width**0.5
        y = torch.tanh(x @ w1) @ w2 + noise * torch.randn(n, out_features, generator=g)
    train, val, test = (
        (x[a:b], y[a:b]) for a, b in
        ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, n))
    )
    return Splits(train, val, test, num_outputs=out_features)


def torchvision_dataset(name: str, root: str | None = None, download: bool = True,
                        val_fraction: float = 0.1, split_seed: int = 0) -> Splits:
    """MNIST, FashionMNIST or CIFAR10 through torchvision (downloaded once into ``root``),
    standardised per channel with the training set's statistics."""
    import torchvision

    cls = getattr(torchvision.datasets, name)
    folder = str(data_root(root))
    try:
        train_set = cls(folder, train=True, download=download)
        test_set = cls(folder, train=False, download=download)
    except Exception as err:  # missing, truncated or garbled files, or a failed download
        files = Path(folder) / (getattr(cls, "base_folder", None) or name)
        fix = (f"delete {files} to download it again" if download else
               "set data.source.download=true, or put the files there")
        raise DataError(f"data error: torchvision {name} could not be loaded from {files} "
                        f"({first_line(err)}); {fix}") from err

    def as_pair(ds: Dataset) -> Pair:
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.float32) / 255.0
        x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x.unsqueeze(1)  # N, C, H, W
        return x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    train, test = as_pair(train_set), as_pair(test_set)
    mean = train[0].mean(dim=(0, 2, 3), keepdim=True)
    std = train[0].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    train, test = [((x - mean) / std, y) for x, y in (train, test)]
    train, val = split_off(train, val_fraction, split_seed)
    return Splits(train, val, test, num_outputs=len(train_set.classes))


def check_splits(splits: Splits, cfg: DictConfig) -> None:
    """Raise ``ConfigError`` (one line: keys, values, what is needed) where the loaded data
    cannot serve the run: an empty split, fewer than 2 examples where batch norm or R2 need
    them, a ``limit_*_batches`` that keeps no batch. ``schema.validate`` already checked the
    sources whose sizes the config alone decides; this sees the real sizes of every source."""
    plain: Any = OmegaConf.to_container(cfg, resolve=True)
    source = plain["data"]["source"]
    sizes = {name: len(getattr(splits, name)[0]) for name in ("train", "val", "test")}
    planned = planned_splits(source)
    if planned:
        keys = planned[1]
    else:
        named = [f"data.source.{k}" for k in ("name",) if k in source] or ["data.source._target_"]
        held = [f"data.source.{k}" for k in ("val_fraction",) if k in source]
        keys = {"train": named + held, "val": named + held, "test": named}
    check_split_sizes(plain, sizes, keys)


# --------------------------------------------------------------------------- serving


class IndexedTensors(Dataset):
    """A dataset that answers a whole batch of indices with one slice of each tensor."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Pair:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> Pair:
        idx = torch.as_tensor(indices, device=self.x.device)
        return self.x[idx], self.y[idx]


def _as_batch(batch: Pair) -> Pair:
    """The collate function: ``__getitems__`` already returned the batch."""
    return batch


class InMemoryDataModule(pl.LightningDataModule):
    """Serves a :class:`Splits` from the training device.

    Training order is ``DistributedSampler``'s: a permutation seeded by ``seed + epoch``, so a run
    resumed from a checkpoint sees the same batches as an uninterrupted one; under DDP each rank
    takes its own shard of it. With ``steps_per_call > 1`` a training batch is a
    :class:`StepChunks` chunk of that many batches (``limit``, Lightning's
    ``limit_train_batches``, then counts batches, not chunks).
    """

    def __init__(self, splits: Splits, batch_size: int, eval_batch_size: int, seed: int,
                 steps_per_call: int = 1, limit: int | float = 1.0,
                 max_steps: int = -1) -> None:
        super().__init__()
        self.splits, self.batch_size, self.eval_batch_size = splits, batch_size, eval_batch_size
        self.seed, self.steps_per_call, self.limit = seed, steps_per_call, limit
        self.max_steps = max_steps
        self.sets: dict[str, IndexedTensors] = {}

    def setup(self, stage: str) -> None:
        if self.sets:
            return
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        for name in ("train", "val", "test"):
            x, y = getattr(self.splits, name)
            self.sets[name] = IndexedTensors(x.to(device), y.to(device))

    def train_dataloader(self) -> DataLoader:
        data = self.sets["train"]
        # Lightning leaves a DistributedSampler alone, so it must shard by the real world size.
        replicas, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer \
            else (1, 0)
        sampler = DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=True,
                                     seed=self.seed)
        batch_size = min(self.batch_size, len(data))
        if self.steps_per_call > 1:
            chunks = StepChunks(sampler, batch_size, self.steps_per_call, self.limit,
                                self.max_steps)
            return DataLoader(data, batch_sampler=chunks, collate_fn=_as_batch)
        return DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=True,
                          collate_fn=_as_batch)

    def _eval_loader(self, name: str) -> DataLoader:
        return DataLoader(self.sets[name], batch_size=self.eval_batch_size, collate_fn=_as_batch)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
