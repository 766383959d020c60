"""Seeded global batches split across ranks, so W ranks x batch b see what one process with batch W*b sees, and a
resumed run continues with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-rank slices of seeded global batches; `start` skips the batches a resumed run already consumed."""

    def __init__(self, size: int, batch_size: int, rank: int, world_size: int, seed: int):
        self.size, self.batch_size, self.rank, self.world_size, self.seed = size, batch_size, rank, world_size, seed
        self.global_batch = batch_size * world_size
        if size < self.global_batch:
            raise ValueError(f"dataset has {size} examples, fewer than one global batch ({self.global_batch})")
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for b in range(self.start, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * self.batch_size
            yield order[first : first + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


