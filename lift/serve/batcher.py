"""Micro-batching: videos from any number of concurrent requests are rated together by one model.

The first video to arrive opens a batch; it runs when `batch_size` videos are waiting or `max_wait` seconds after
it opened, whichever comes first. While the model works on one batch in its own thread, the event loop keeps
accepting requests, so the next batch fills up meanwhile. At most `max_queue` videos wait; a request that would
overflow the queue is refused whole (`Busy`, answered 429) rather than letting the queue grow without bound.

A batch never fails for the videos that are fine: if rating it raises, each of its videos is rated alone and
only those that fail alone get the error.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


class Busy(Exception):
    """The queue cannot take a request now; `retry_after` is a whole number of seconds to wait."""

    def __init__(self, retry_after: int):
        super().__init__(f"queue full, retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Entry:
    job: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.monotonic)


class Batcher:
    """`rate(jobs) -> results` (one result per job, run in one worker thread) behind an asyncio queue.

    `observe(size, seconds)` is called after each batch and `depth(n)` whenever the queue changes (metrics).
    """

    def __init__(self, rate: Callable[[list], list], batch_size: int, max_wait: float, max_queue: int,
                 observe: Callable[[int, float], None] = lambda size, seconds: None,
                 depth: Callable[[int], None] = lambda n: None):
        if batch_size < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError(f"batcher: need batch_size >= 1, max_queue >= 1, max_wait >= 0; got {batch_size}, "
                             f"{max_queue}, {max_wait}")
        self.rate, self.batch_size, self.max_wait, self.max_queue = rate, batch_size, max_wait, max_queue
        self.observe, self.depth = observe, depth
        self.pending: collections.deque[_Entry] = collections.deque()
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="lift-critic")  # one model, one batch at a time
        self.batch_seconds = 1.0  # the last batch's duration: what Retry-After is estimated from
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, jobs: list) -> list[asyncio.Future]:
        """Queue every job of one request, or none of them (`Busy`) when the queue has no room for all."""
        if len(self.pending) + len(jobs) > self.max_queue:
            batches_ahead = math.ceil((len(self.pending) + len(jobs)) / self.batch_size)
            raise Busy(max(1, math.ceil(batches_ahead * self.batch_seconds)))
        loop = asyncio.get_running_loop()
        entries = [_Entry(job, loop.create_future()) for job in jobs]
        self.pending.extend(entries)
        self.depth(len(self.pending))
        self.arrived.set()
        return [e.future for e in entries]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
            deadline = self.pending[0].queued + self.max_wait
            while len(self.pending) < self.batch_size and (left := deadline - time.monotonic()) > 0:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except TimeoutError:
                    break
            batch = [self.pending.popleft() for _ in range(min(self.batch_size, len(self.pending)))]
            self.depth(len(self.pending))
            batch = [e for e in batch if not e.future.done()]  # requests that went away meanwhile
            if not batch:
                continue
            start = time.monotonic()
            outcomes = await loop.run_in_executor(self.executor, self._rate_each, [e.job for e in batch])
            self.batch_seconds = time.monotonic() - start
            self.observe(len(batch), self.batch_seconds)
            for entry, (ok, value) in zip(batch, outcomes):
                if entry.future.done():
                    continue
                if ok:
                    entry.future.set_result(value)
                else:
                    entry.future.set_exception(value)

    def _rate_each(self, jobs: list) -> list[tuple[bool, Any]]:
        """(True, result) per job; if the batch fails, each job is rated alone so only a failing one fails."""
        try:
            results = self.rate(jobs)
            return [(True, r) for r in results]
        except Exception as e:
            if len(jobs) == 1:
                log.warning("rating failed: %s", e)
                return [(False, e)]
            log.warning("a batch of %d failed (%s); rating its videos one by one", len(jobs), e)
            return [self._rate_each([job])[0] for job in jobs]
