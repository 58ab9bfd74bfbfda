"""Tiny stand-ins for torchvision's downloaded files, in the exact on-disk formats it reads."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def idx_files(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> None:
    """MNIST-format idx files (as after torchvision's download and gunzip)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, n) + labels.tobytes())


def cifar10_files(root: Path, n_per_batch: int = 12, seed: int = 0) -> None:
    """CIFAR-10's python pickles: five training batches, a test batch and the label names."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8),
                 "labels": [i % 10 for i in range(n_per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def vision_root(root: Path) -> Path:
    idx_files(root / "MNIST" / "raw")
    idx_files(root / "FashionMNIST" / "raw", seed=1)
    cifar10_files(root)
    return root
