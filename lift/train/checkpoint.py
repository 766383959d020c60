"""DCP checkpoints of a training stage, one folder per step, through fsspec to any storage URL.

    OUT/checkpoints/step-00000120/   DCP shards + .metadata, then _SUCCESS (written last, by rank 0)

Resume picks the newest step folder that has `_SUCCESS`; a folder cut off mid-write is never taken. The marker
also holds a fingerprint of what must not change across a resume (model, parallel-invariant config), so a
checkpoint of another model or an incompatible config is refused with the differing key named.

Asynchronous saves (`trainer.async_checkpoint`, the default): `save` copies the state into CPU buffers kept from
one save to the next (pinned on GPU hosts; the only part that stalls training), then `dcp.async_save` uploads it
from a background thread over a separate gloo group while the next step runs; rank 0 writes `_SUCCESS` and prunes
as soon as every rank's upload is in (DCP's `.metadata` is written after all ranks' data). `wait`, called by the
training loop at the end of that next step, blocks for what is left: a checkpoint is committed at the latest one
step after it was taken, never before its data is complete, and a crash during the upload leaves an unsealed
folder that resume ignores.

Object-store costs (benchmarks/checkpoints.py): each rank writes its shard as `_WRITE_STREAMS` objects from as many
threads (one object per rank is one upload stream, and multipart parts of one stream go up one after another);
a rank reads its items in object and offset order (DCP reads them in plan order, which sends fsspec's read-ahead
cache back and forth and fetches one object several times); and the complete checkpoints are found with one
listing rather than a HEAD request per step folder.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch
import torch.distributed as torch_dist
import torch.distributed.checkpoint as dcp
from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint.staging import BlockingAsyncStager
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from lift.core import dist, logs
from lift.io import storage

log = logging.getLogger(__name__)
_STEP = re.compile(r"^step-(\d{8})$")
_WRITE_STREAMS = 4  # objects (and upload threads) per rank and checkpoint: 2x faster saves and loads than 1 (measured)


class TrainState(Stateful):
    """Model, optimizer, LR scheduler and counters as one DCP state dict (FSDP2 DTensors stay sharded)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, trainable_only: bool):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.options = StateDictOptions(ignore_frozen_params=trainable_only)
        # Frozen weights are not checkpointed (they come from the base model), so loading cannot be strict.
        self.load_options = StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)
        self.step = 0

    def state_dict(self) -> dict:
        return {
            "model": get_model_state_dict(self.model, options=self.options),
            "optim": get_optimizer_state_dict(self.model, self.optimizer, options=self.options),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        set_model_state_dict(self.model, state["model"], options=self.load_options)
        set_optimizer_state_dict(self.model, self.optimizer, state["optim"], options=self.load_options)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]


class _ReusedBuffers(BlockingAsyncStager):
    """Stages into one CPU copy of the state kept from save to save (pinned where there is a GPU to copy from;
    BlockingAsyncStager's own cache always pins, which fails on hosts without CUDA)."""

    def stage(self, state_dict: dict) -> dict:
        if self.state_dict_cache is None:
            self.state_dict_cache = _create_cpu_state_dict(state_dict, pin_memory=torch.cuda.is_available())
        return _copy_state_dict(state_dict, self.state_dict_cache, type_check=False)


class _InOrderReader(FsspecReader):
    """Reads each shard object front to back: the plan's items sorted by (object, offset)."""

    def read_data(self, plan, planner):
        def where(item):
            info = self.storage_data[item.storage_index]
            return info.relative_path, info.offset

        return super().read_data(dataclasses.replace(plan, items=sorted(plan.items, key=where)), planner)


class Checkpointer:
    def __init__(self, url: str, fingerprint: dict, keep: int = 2, async_save: bool = False):
        self.url, self.fingerprint, self.keep, self.async_save = url, fingerprint, max(1, keep), async_save
        self._pending: tuple[int, str, Future, float] | None = None  # (step, url, upload [+ commit], start time)
        self._group = self._stager = self._committer = None
        if async_save:
            if torch_dist.is_initialized():
                # The upload's collectives run in a background thread: they get their own gloo group (a CPU backend,
                # as async_save needs, and no interleaving with the training loop's collectives). All ranks call it.
                self._group = torch_dist.new_group(backend="gloo")
            # One CPU copy of this rank's state, reused by every save (a save starts after the previous upload).
            self._stager = _ReusedBuffers()
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lift-checkpoint-commit")

    def _step_url(self, step: int) -> str:
        return storage.join(self.url, f"step-{step:08d}")

    def _step_folders(self) -> dict[int, bool]:
        """Step folder -> has `_SUCCESS`, from one listing of everything under the checkpoints folder."""
        fs, root = storage.filesystem(self.url)
        root = root.rstrip("/")
        fs.invalidate_cache(root)  # other ranks and earlier runs write here: ask the store itself
        try:
            paths = fs.find(root, withdirs=True)
        except FileNotFoundError:
            paths = []
        folders: dict[int, bool] = {}
        for path in paths:
            if not path.startswith(root + "/"):
                continue
            parts = path[len(root) + 1:].strip("/").split("/")
            if (m := _STEP.match(parts[0])):
                step = int(m.group(1))
                folders[step] = folders.get(step, False) or parts[1:] == [storage.MARKER]
        return folders

    def complete_steps(self) -> list[int]:
        return sorted(s for s, sealed in self._step_folders().items() if sealed)

    def save(self, state: TrainState, block: bool = False) -> str:
        """Checkpoint `state` at its step. Asynchronous (unless `block`): returns once the state is copied to
        CPU memory; `wait` commits it. A save still in flight is committed first."""
        self.wait()
        url = self._step_url(state.step)
        if storage.exists(storage.join(url, storage.MARKER)):
            return url  # this step is already committed (a resumed run that had nothing left to do)
        opts = storage.storage_options(storage.protocol_of(url))
        writer = FsspecWriter(url, sync_files=False, thread_count=_WRITE_STREAMS, **opts)
        if self.async_save and not block:
            started, step = time.perf_counter(), state.step
            upload = dcp.async_save({"train": state}, storage_writer=writer, process_group=self._group,
                                    async_stager=self._stager)
            if dist.init().is_main:  # rank 0's upload ends after every rank's data and the .metadata are written
                upload = self._committer.submit(self._seal, step, url, upload)
            self._pending = (step, url, upload, started)
            logs.event(log, "checkpoint staged", step=step, seconds=f"{time.perf_counter() - started:.3f}")
            return url
        dcp.save({"train": state}, storage_writer=writer)
        dist.barrier()
        if dist.init().is_main:
            self._seal(state.step, url)
        dist.barrier()
        logs.event(log, "checkpoint saved", step=state.step, url=url)
        return url

    def wait(self) -> None:
        """Block until the save in flight (if any) is uploaded and sealed. A collective: every rank calls it."""
        if self._pending is None:
            return
        step, url, future, started = self._pending
        self._pending = None
        future.result()  # re-raises an upload failure here, in the training loop
        dist.barrier()  # no rank goes on (or dies) before the marker exists
        logs.event(log, "checkpoint saved", step=step, url=url, upload_s=f"{time.perf_counter() - started:.3f}")

    def _seal(self, step: int, url: str, upload: Future | None = None) -> None:
        """Rank 0: write `_SUCCESS` (after the upload, if one is given) and prune."""
        if upload is not None:
            upload.result()
        storage.write_marker(url, "checkpoint", "", {"step": step}, fingerprint=self.fingerprint)
        self._prune(step)

    def load(self, state: TrainState) -> bool:
        """Restore the newest complete checkpoint into `state`; False when there is none."""
        steps = self.complete_steps()
        if not steps:
            return False
        url = self._step_url(steps[-1])
        saved = storage.read_marker(url).get("fingerprint", {})
        for key in sorted(set(saved) | set(self.fingerprint)):
            if saved.get(key) != self.fingerprint.get(key):
                raise ValueError(
                    f"{url}: checkpoint is incompatible with this run: '{key}' was {saved.get(key)!r}, "
                    f"now {self.fingerprint.get(key)!r}; use a new output folder or restore the old setting"
                )
        opts = storage.storage_options(storage.protocol_of(url))
        dcp.load({"train": state}, storage_reader=_InOrderReader(url, **opts))
        logs.event(log, "resumed from checkpoint", step=state.step, url=url)
        return True

    def _prune(self, newest: int) -> None:
        """Drop complete checkpoints beyond `keep` and incomplete leftovers older than the newest."""
        folders = self._step_folders()
        complete = sorted(s for s, sealed in folders.items() if sealed)
        stale = set(complete[: -self.keep])
        for step, sealed in sorted(folders.items()):
            if step in stale or (step < newest and not sealed):
                storage.remove(self._step_url(step))
