"""DCP checkpoints of a training stage, one folder per step, through fsspec to any storage URL.

    OUT/checkpoints/step-00000120/   DCP shards + .metadata, then _SUCCESS (written last, by rank 0)

Resume picks the newest step folder that has `_SUCCESS`; a folder cut off mid-write is never taken. The marker
also records what the weights in it are a function of, so that a run of another config never resumes from it
(at the final step it would train nothing and seal the old weights under the new config):

- the stage's fingerprint (the model and what must match for the state dict to mean the same thing);
- the trainer settings (`trainer_settings`): every TrainerConfig key except those that leave the result as it is
  (`RESULT_NEUTRAL`: when checkpoints are taken and kept, how they are uploaded, logging, loader workers,
  activation recomputation);
- under `lift.stages.runner` (`stage`), the rest of the stage config: every value outside its TrainerConfig
  sections (the model, objective, LoRA, frames, resolution...) except where outputs go (`run`, `out`, `work`),
  with each sealed input folder (data, rollouts, scores, real set, base model) by its seal identity rather than
  its URL, so a rebuilt input counts as a change and a moved run folder does not.

The marker also records the world size and the global batch (batch_size x grad_accum x world size) the steps were
taken with. DCP reshards the weights and optimizer state to whatever world size loads them, so an elastic job that
restarts on fewer or more nodes resumes; to keep the steps the same, `grad_accum` then returns the accumulation that
keeps the recorded global batch at the new world size, or refuses (`ConfigError`) where none does.

A difference in any of them is a `ConfigError` naming each key with both values, the checkpoint, and the two ways
on: `--force` (discard the checkpoints, train from the start) or the old values (resume). A checkpoint written
before settings were recorded is resumed only by a restart of the config that started the output folder.

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

import contextlib
import dataclasses
import json
import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar

import torch
import torch.distributed as torch_dist
import torch.distributed.checkpoint as dcp
from omegaconf import DictConfig, ListConfig, OmegaConf
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

from lift.config import ConfigError
from lift.config.schema import TrainerConfig
from lift.core import dist, logs
from lift.io import storage
from lift.train import parallel

log = logging.getLogger(__name__)
_STEP = re.compile(r"^step-(\d{8})$")
_WRITE_STREAMS = 4  # objects (and upload threads) per rank and checkpoint: 2x faster saves and loads than 1 (measured)
# TrainerConfig keys a resume may change: they decide when checkpoints are taken, kept and how they are uploaded,
# what is logged, how many processes load the data, and whether activations are recomputed (the same values).
RESULT_NEUTRAL = ("checkpoint_every", "keep_checkpoints", "async_checkpoint", "log_every", "num_workers",
                  "activation_checkpointing")
_LOCATION = ("run", "out", "work")  # where a stage's outputs go: not what its weights are


@dataclasses.dataclass(frozen=True)
class StageRun:
    """What `lift.stages.runner` knows of the stage it runs, for the checkpoints of the training inside it."""

    config: DictConfig
    """The stage's resolved config (its TrainerConfig sections are the ones `fit` gets)."""
    inputs: dict[str, str]
    """Config key -> seal identity of each sealed folder the stage reads."""
    restart: bool
    """The output folder was started by this same config and inputs: a restart, not a changed config."""


_stage: ContextVar[StageRun | None] = ContextVar("lift_stage_run", default=None)


@contextlib.contextmanager
def stage(config: DictConfig, inputs: dict[str, str], restart: bool):
    """Run the block as the stage of `config`: its checkpoints record (and are checked against) that config."""
    token = _stage.set(StageRun(config, inputs, restart))
    try:
        yield
    finally:
        _stage.reset(token)


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _stage_leaves(node: DictConfig, prefix: str = ""):
    """(key, value) of every leaf of a stage config but the location keys; a TrainerConfig section is one leaf,
    its DictConfig."""
    for key in node:
        value, name = node[key], f"{prefix}{key}"
        if isinstance(value, DictConfig) and OmegaConf.get_type(value) is not TrainerConfig:
            yield from _stage_leaves(value, f"{name}.")
        elif key not in _LOCATION:
            yield name, value


def trainer_settings(trainer: TrainerConfig | DictConfig) -> tuple[dict, StageRun | None]:
    """The settings that shape the weights of a training with `trainer` (see the module docstring), each under its
    config key (`trainer.lr`), as JSON values; and the stage run they belong to, if any. Other TrainerConfig
    sections of the stage (the base stage trains its VAE, then its transformer) are left out: they train other
    weights, with checkpoints of their own."""
    run = _stage.get()
    section, rest = "trainer", {}
    for key, value in _stage_leaves(run.config) if run is not None else ():
        if isinstance(value, DictConfig) and OmegaConf.get_type(value) is TrainerConfig:
            section = key if value is trainer else section
        else:
            rest[key] = f"sealed {run.inputs[key]}" if key in run.inputs else _plain(value)
    values = _plain(trainer) if isinstance(trainer, DictConfig) else dataclasses.asdict(trainer)
    own = {f"{section}.{k}": v for k, v in values.items() if k not in RESULT_NEUTRAL}
    return json.loads(json.dumps({**rest, **own})), run


def _assignment(key: str, value) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"


class TrainState(Stateful):
    """Model, optimizer, LR scheduler and counters as one DCP state dict (FSDP2 DTensors stay sharded)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, trainable_only: bool):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.options = StateDictOptions(ignore_frozen_params=trainable_only)
        # Frozen weights are not checkpointed (they come from the base model), so loading cannot be strict.
        self.load_options = StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)
        self.step = 0

    def state_dict(self) -> dict:
        model = get_model_state_dict(self.model, options=self.options)
        return {
            "model": parallel.without_frozen(self.model, model) if self.options.ignore_frozen_params else model,
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
    """The checkpoints under `url` of one training: `fingerprint` (the stage's) and, given `trainer`, the
    settings of `trainer_settings` are recorded in each marker and must match for a resume."""

    def __init__(self, url: str, fingerprint: dict, keep: int = 2, async_save: bool = False,
                 trainer: TrainerConfig | DictConfig | None = None):
        self.url, self.keep, self.async_save = url, max(1, keep), async_save
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as the marker will hold it
        self.settings, run = trainer_settings(trainer) if trainer is not None else ({}, None)
        self.restart = run is not None and run.restart
        # Settings a command line can set back (not the seal of a rebuilt input folder)
        self.assignable = {k for k in self.settings if run is None or k not in run.inputs}
        self.world_size, self.global_batch = 1, 0  # what the steps are taken with (set by `grad_accum`)
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

    def newest(self) -> tuple[str, dict] | None:
        """(URL, marker) of the newest complete checkpoint, or None."""
        steps = self.complete_steps()
        if not steps:
            return None
        url = self._step_url(steps[-1])
        return url, storage.read_marker(url)

    def grad_accum(self, batch_size: int, grad_accum: int, world_size: int) -> int:
        """Micro-batches per optimizer step at `world_size`: `grad_accum` for a new training, else the number that
        keeps the newest checkpoint's global batch (a restart at another world size); refuses where none does."""
        self.world_size, self.global_batch = world_size, batch_size * grad_accum * world_size
        newest = self.newest()
        if newest is None or "global_batch" not in newest[1].get("counts", {}):
            return grad_accum
        url, marker = newest
        self._check(url, marker)
        recorded, before = marker["counts"]["global_batch"], marker["counts"]["world_size"]
        accum, rest = divmod(recorded, batch_size * world_size)
        if rest or accum < 1:
            raise ConfigError(
                f"{url}: checkpoint was trained with a global batch of {recorded} (world size {before}); at world "
                f"size {world_size} with trainer.batch_size={batch_size} no grad_accum keeps it (it needs "
                f"{recorded} / {batch_size * world_size}); run on a world size that divides {recorded // batch_size}, "
                f"or rerun with --force to train from the start at the new global batch")
        if accum != grad_accum:
            logs.event(log, "world size changed: accumulation adjusted to keep the global batch", checkpoint=url,
                       world_size=f"{before}->{world_size}", grad_accum=f"{grad_accum}->{accum}",
                       global_batch=recorded)
        self.global_batch = recorded
        return accum

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
        counts = {"step": step, "world_size": self.world_size, "global_batch": self.global_batch}
        storage.write_marker(url, "checkpoint", "", counts, fingerprint=self.fingerprint, settings=self.settings)
        self._prune(step)

    def load(self, state: TrainState) -> bool:
        """Restore the newest complete checkpoint into `state`; False when there is none."""
        newest = self.newest()
        if newest is None:
            return False
        url, marker = newest
        self._check(url, marker)
        opts = storage.storage_options(storage.protocol_of(url))
        dcp.load({"train": state}, storage_reader=_InOrderReader(url, **opts))
        logs.event(log, "resumed from checkpoint", step=state.step, url=url)
        return True

    def _check(self, url: str, marker: dict) -> None:
        """Refuse (ConfigError) a checkpoint whose recorded fingerprint or settings differ from this run's."""
        saved, ours = dict(marker.get("fingerprint", {})), dict(self.fingerprint)
        recorded = "settings" in marker
        if recorded:
            saved.update(marker["settings"])
            ours.update(self.settings)
        fix = f"rerun with --force to discard the checkpoints under {self.url} and train from the start"
        missing = object()
        changed = [(k, saved.get(k, missing), ours.get(k, missing)) for k in sorted(set(saved) | set(ours))
                   if saved.get(k, missing) != ours.get(k, missing)]
        if changed:
            shown = "; ".join(f"'{k}' was {'absent' if old is missing else repr(old)}, "
                              f"now {'absent' if new is missing else repr(new)}" for k, old, new in changed)
            back = [_assignment(k, old) for k, old, _ in changed if k in self.assignable and old is not missing]
            resume = f"set {' '.join(back)} to resume from them" if back else "restore the old settings to resume"
            raise ConfigError(f"{url}: checkpoint is incompatible with this run: {shown}; {fix}, or {resume}")
        if not recorded and self.settings and not self.restart:
            raise ConfigError(f"{url}: checkpoint records no training settings (written by an earlier lift), and "
                              f"this output folder was started by another config or outside a stage; {fix}, or "
                              f"rerun the config that wrote it")

    def check_settings(self) -> None:
        """Raise now the `ConfigError` that `load` would raise for the settings recorded by the newest complete
        checkpoint, without loading it: a stage's input check, before anything of its output is discarded (under
        the stage runner the settings hold every config key a stage's fingerprint is made of). A checkpoint that
        records no settings (an earlier lift's) is judged by `load`."""
        steps = self.complete_steps()
        marker = storage.read_marker(self._step_url(steps[-1])) if steps else None
        if marker and "settings" in marker:
            self._check(self._step_url(steps[-1]), {**marker, "fingerprint": self.fingerprint})

    def _prune(self, newest: int) -> None:
        """Drop complete checkpoints beyond `keep` and incomplete leftovers older than the newest."""
        folders = self._step_folders()
        complete = sorted(s for s, sealed in folders.items() if sealed)
        stale = set(complete[: -self.keep])
        for step, sealed in sorted(folders.items()):
            if step in stale or (step < newest and not sealed):
                storage.remove(self._step_url(step))
