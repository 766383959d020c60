"""The one work loop of the sharded stages (generate, score, critic-eval, evaluate): each rank works through its
parts that are not committed yet, batch by batch, and commits each part whole when it ends; rank 0 then merges them.
A crashed or preempted run therefore redoes only the parts it had not committed, with any number of ranks.

The fault-injection hooks of the crash tests (lift/core/faults.py) fire here, after every batch
(LIFT_FAULT_KILL_AFTER_BATCHES, before the part holding the batch is committed), and in `Shards.commit`
(LIFT_FAULT_KILL_AFTER_PARTS).
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Iterable, TypeVar

from lift.core import dist, faults, logs
from lift.io import storage

log = logging.getLogger(__name__)
R = TypeVar("R")


def run_parts(shards: storage.Shards, items: list, work: Callable[[R, list], Iterable[list[dict]]],
              runtime: dist.Runtime, merge: str, desc: str, setup: Callable[[], R] = lambda: None,
              what: str | None = None, **fields) -> str | None:
    """Work and commit this rank's uncommitted parts of `shards`, then merge every part into `shards.url`/`merge`.

    Part s holds the records of `storage.shard_slice(items, s, shards.num_shards)`: `work(resource, part_items)`
    yields them a batch (a list of JSON-able records) at a time, each part's records become one line each.
    `setup()` (loading a model) runs once, and only on a rank that has parts to do; its result is `resource`.
    Logs `what` (default `desc`) with the item and shard counts and `fields`; shows a progress bar on rank 0.
    Returns the merged object's URL on rank 0 and None on the other ranks, after every rank finished.
    """
    todo = shards.todo(runtime.rank, runtime.world_size)
    logs.event(log, what or desc, videos=len(items), shards=shards.num_shards, my_shards=len(todo), **fields)
    if todo:
        resource = setup()
        parts = {s: storage.shard_slice(items, s, shards.num_shards) for s in todo}
        bar = logs.progress(total=sum(map(len, parts.values())), desc=desc, unit="video")
        for shard, mine in parts.items():
            lines = []
            for batch in work(resource, mine):
                lines += [json.dumps(record, sort_keys=True) + "\n" for record in batch]
                bar.update(len(batch))
                faults.batch_done()
            shards.commit(shard, "".join(lines).encode())
        bar.close()
        del resource  # a model loaded by `setup` is freed before the other ranks are waited for
    dist.barrier()
    return shards.merge(merge) if runtime.is_main else None
