"""Chunks of optimizer steps per Lightning call: several steps' batches in one loader batch."""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler, Sampler


class StepChunks(Sampler):
    """Groups a sampler's order into chunks of batches, each yielded as one
    ``(batches, batch_size)`` index tensor: one Lightning call then trains several optimizer
    steps on exactly the batches it would have seen one by one (last partial batch dropped).
    ``limit`` is Lightning's ``limit_train_batches`` in batches: a count, or a fraction.

    Lightning validates after an epoch's last call but not when ``max_steps`` ends an epoch
    early. So every epoch has the same number of chunks (at least 2, of at most ``steps``
    batches where that allows), and the epoch that ``max_steps`` cuts short has a chunk boundary
    at the cut with at least one chunk after it: training then ends as with one batch per call.
    """

    def __init__(self, sampler: DistributedSampler, batch_size: int, steps: int,
                 limit: int | float = 1.0, max_steps: int = -1) -> None:
        self.sampler, self.batch_size, self.steps, self.limit = sampler, batch_size, steps, limit
        self.max_steps = max_steps

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: the instruments' ``MultiStepBatches`` protocol."""
        return self.batches

    @property
    def batches(self) -> int:
        full = len(self.sampler) // self.batch_size
        return min(full, self.limit) if isinstance(self.limit, int) else int(full * self.limit)

    def __len__(self) -> int:
        return min(self.batches, max(2, -(-self.batches // self.steps)))

    def sizes(self, epoch: int) -> list[int]:
        """The chunk sizes (in batches) of ``epoch``."""
        n, cut = len(self), self.max_steps - epoch * self.batches
        if not (self.max_steps >= 0 and 0 < cut < self.batches) or n < 2:
            return _even(self.batches, n)
        before = min(n - 1, max(1, -(-cut // self.steps)))
        return _even(cut, before) + _even(self.batches - cut, n - before)

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler))[:self.batches * self.batch_size]
        yield from order.view(-1, self.batch_size).split(self.sizes(self.sampler.epoch))


def _even(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes differing by at most one."""
    return [total // parts + (i < total % parts) for i in range(parts)]
