"""Each member's own training batches, one step of all of them per loader batch.

A solo run draws its batches from ``DistributedSampler(shuffle=True, seed=cfg.seed)``, reseeded
per epoch (:class:`gradprobe.data.InMemoryDataModule`). Here every member keeps such a sampler
with its own seed, and a step's batch is the ``(members, batch_size)`` stack of their index
batches: each member sees exactly what it would alone. Lightning sets the epoch (``set_epoch``),
applies ``limit_train_batches`` and stops at ``max_steps``; validation and test batches are the
solo run's, shared by all members.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from gradprobe.data import InMemoryDataModule, Splits


class MemberOrders:
    """The members' own samplers, reseeded together: Lightning calls ``set_epoch`` at every
    epoch start on a batch sampler's ``sampler``, as on a solo run's sampler."""

    def __init__(self, samplers: list[DistributedSampler]) -> None:
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samplers[0])

    def orders(self) -> Tensor:
        """``(members, examples)``: each member's order for this epoch."""
        return torch.stack([torch.as_tensor(list(s)) for s in self.samplers])


class MemberBatches(Sampler):
    """Yields ``(members, batch_size)`` index tensors: step ``k`` of every member's epoch (its
    last partial batch dropped, as the solo loader's ``drop_last``)."""

    def __init__(self, sampler: MemberOrders, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[Tensor]:
        orders = self.sampler.orders()[:, :len(self) * self.batch_size]
        yield from orders.view(len(orders), len(self), self.batch_size).unbind(1)


class EnsembleDataModule(InMemoryDataModule):
    """The solo datamodule, with training batches stacked over the members' ``seeds``."""

    def __init__(self, splits: Splits, batch_size: int, eval_batch_size: int,
                 seeds: list[int]) -> None:
        super().__init__(splits, batch_size, eval_batch_size, seeds[0])
        self.seeds = seeds

    def train_dataloader(self) -> DataLoader:
        solo = super().train_dataloader()  # member 0's loader: its data, sampler and batch size
        samplers = [DistributedSampler(solo.dataset, num_replicas=1, rank=0, shuffle=True,
                                       seed=seed) for seed in self.seeds]
        batches = MemberBatches(MemberOrders(samplers), solo.batch_size)
        return DataLoader(solo.dataset, batch_sampler=batches, collate_fn=solo.collate_fn)
