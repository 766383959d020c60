"""Seeded global batches split across ranks, so W ranks x batch b see what one process with batch W*b sees, and a
resumed run continues with exactly the batches an uninterrupted run would have seen.

An optimizer step is `grad_accum` consecutive global batches of one epoch's order. An epoch uses the largest
multiple of `grad_accum` global batches that fits; the examples past them (fewer than one step's
batch_size x world_size x grad_accum) sit out that epoch, just as with a single batch of that size and no
accumulation, so `grad_accum=k` over batch b trains on what `grad_accum=1` over batch k*b trains on. The order is
reshuffled each epoch, so different examples sit out each time. Every step lies inside one epoch and its position
is a function of the step alone, which is what makes a resume exact.
"""

from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-rank slices of seeded global batches, `grad_accum` of them per optimizer step; `start` skips the batches
    a resumed run already consumed."""

    def __init__(self, size: int, batch_size: int, rank: int, world_size: int, seed: int, grad_accum: int = 1):
        self.size, self.batch_size, self.rank, self.world_size, self.seed = size, batch_size, rank, world_size, seed
        self.global_batch, self.grad_accum = batch_size * world_size, grad_accum
        if grad_accum < 1:
            raise ValueError(f"trainer.grad_accum must be at least 1, got {grad_accum}")
        if size < self.global_batch * grad_accum:
            raise ValueError(f"dataset has {size} examples, fewer than one global batch of an optimizer step "
                             f"({self.global_batch * grad_accum} = batch_size {batch_size} x world size "
                             f"{world_size} x grad_accum {grad_accum})")
        self.epoch, self.start = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch: whole accumulation windows only."""
        return self.size // (self.global_batch * self.grad_accum)

    @property
    def batches_per_epoch(self) -> int:
        """Global batches yielded per epoch: `steps_per_epoch` x `grad_accum`."""
        return self.steps_per_epoch * self.grad_accum

    def seek(self, step: int) -> None:
        """Position at the first batch of optimizer step `step`, counted from the start of training."""
        epoch, within = divmod(step, self.steps_per_epoch)
        self.set_position(epoch, within * self.grad_accum)

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for b in range(self.start, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * self.batch_size
            yield order[first : first + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


