"""DCP checkpoints of a training stage, one folder per step, through fsspec to any storage URL.

    OUT/checkpoints/step-00000120/   DCP shards + .metadata, then _SUCCESS (written last, by rank 0)

Resume picks the newest step folder that has `_SUCCESS`; a folder cut off mid-write is never taken. The marker
also holds a fingerprint of what must not change across a resume (model, parallel-invariant config), so a
checkpoint of another model or an incompatible config is refused with the differing key named.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from lift import dist, logs, storage

log = logging.getLogger(__name__)
_STEP = re.compile(r"^step-(\d{8})$")


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


class Checkpointer:
    def __init__(self, url: str, fingerprint: dict, keep: int = 2):
        self.url, self.fingerprint, self.keep = url, fingerprint, max(1, keep)

    def _step_url(self, step: int) -> str:
        return storage.join(self.url, f"step-{step:08d}")

    def complete_steps(self) -> list[int]:
        steps = [int(m.group(1)) for name in storage.listdir(self.url) if (m := _STEP.match(name))]
        return sorted(s for s in steps if storage.exists(storage.join(self._step_url(s), storage.MARKER)))

    def save(self, state: TrainState) -> str:
        url = self._step_url(state.step)
        if storage.exists(storage.join(url, storage.MARKER)):
            return url  # this step is already committed (a resumed run that had nothing left to do)
        opts = storage.storage_options(storage.protocol_of(url))
        dcp.save({"train": state}, storage_writer=FsspecWriter(url, sync_files=False, **opts))
        dist.barrier()
        if dist.init().is_main:
            storage.write_marker(url, "checkpoint", "", {"step": state.step}, fingerprint=self.fingerprint)
            self._prune(state.step)
        dist.barrier()
        logs.event(log, "checkpoint saved", step=state.step, url=url)
        return url

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
        dcp.load({"train": state}, storage_reader=FsspecReader(url, **opts))
        logs.event(log, "resumed from checkpoint", step=state.step, url=url)
        return True

    def _prune(self, newest: int) -> None:
        """Drop complete checkpoints beyond `keep` and incomplete leftovers older than the newest."""
        complete = self.complete_steps()
        stale = set(complete[: -self.keep])
        for name in storage.listdir(self.url):
            m = _STEP.match(name)
            if m and (int(m.group(1)) in stale or (int(m.group(1)) < newest and int(m.group(1)) not in complete)):
                storage.remove(storage.join(self.url, name))
