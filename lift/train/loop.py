"""The training loop shared by `lift critic` and `lift align`: load checkpoint -> while not done: step, maybe save.

Stage modules bring the model, the dataset and a loss function; this module owns parallelism (FSDP2), the
optimizer and schedule, gradient accumulation and clipping, non-finite losses, checkpoints, logs and TensorBoard.

Determinism: the data order is a function of (seed, epoch), random draws of a step are a function of
(seed, step, rank), and each global batch is split across ranks in rank order, so a run with W ranks x batch b sees
the same examples per step as one process with batch W*b, and a resumed run continues with exactly the batches an
uninterrupted run would have seen.

Gradient accumulation: an optimizer step is `grad_accum` consecutive global batches of one epoch's order; an epoch
holds only whole steps and the examples past them sit out that epoch (lift/train/sampler.py), so with a loss that
is a mean over its micro-batch's examples, `grad_accum=k` over batch b gives the step of one batch of k*b, and a
step's position in the data is a function of the step number alone. A restart at another world size (an elastic job
that lost or gained a node) keeps the global batch of the newest checkpoint by adjusting the accumulation
(`Checkpointer.grad_accum`), so its steps are those of the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import math
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as torch_dist
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import DataLoader, Dataset

from lift.config.schema import TrainerConfig
from lift.core import dist, faults, logs
from lift.io import storage
from lift.train.checkpoint import Checkpointer, TrainState
from lift.train.optim import build_optimizer, build_scheduler, check_settings, total_steps
from lift.train.sampler import GlobalBatchSampler

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict, int], "tuple[torch.Tensor, dict[str, float]]"]














@dataclass
class _Board:
    """TensorBoard on rank 0; event files go to a local folder and are copied to object storage at checkpoints
    (for object storage the folder is temporary, removed by `close`)."""

    url: str
    enabled: bool

    def __post_init__(self):
        self.writer, self.staging = None, None
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        if storage.protocol_of(self.url) == "file":
            self.local = storage.filesystem(self.url)[1]
        else:
            self.staging = tempfile.TemporaryDirectory(prefix="lift-tb-")
            self.local = self.staging.name
        self.writer = SummaryWriter(self.local)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def sync(self) -> None:
        if not self.writer:
            return
        self.writer.flush()
        if self.staging:
            storage.upload_dir(self.local, self.url)

    def close(self) -> None:
        """The last events uploaded, the writer closed and the temporary folder removed."""
        self.sync()
        if self.writer:
            self.writer.close()
        if self.staging:
            self.staging.cleanup()


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    if not torch_dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch_dist.all_reduce(t)
    return {k: v / torch_dist.get_world_size() for k, v in zip(keys, t.tolist())}


@contextlib.contextmanager
def _gradient_sync(model: torch.nn.Module, last: bool) -> Iterator[None]:
    """Reduce gradients across ranks only on the last micro-batch of an accumulation window (FSDP2 keeps the
    unsharded gradients of the others locally; DDP's `no_sync`), so accumulation costs one reduction per step."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(last)
        yield
    elif isinstance(model, torch.nn.parallel.DistributedDataParallel) and not last:
        with model.no_sync():
            yield
    else:
        yield


def worker_init(_worker_id: int) -> None:
    """Hide the objects a forked worker inherits from the garbage collector. Otherwise the worker's first full
    collection (an S3 client's creation triggers one) walks the parent's ~0.5M objects, copying the memory pages
    they live on: 0.46 CPU-s per worker, the largest part of the s3:// loaders' extra CPU in
    benchmarks/video_loading.py. Objects are still freed by reference counting; only cycles among the inherited
    ones are never collected in the worker."""
    gc.freeze()


def make_loader(dataset: Dataset, sampler: GlobalBatchSampler, collate: Callable[[list], dict], cfg: TrainerConfig,
                device: torch.device) -> DataLoader:
    """The training DataLoader: `cfg.num_workers` forked worker processes (none for a dataset of one batch)."""
    workers = cfg.num_workers if len(dataset) > cfg.batch_size else 0
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                      worker_init_fn=worker_init if workers else None,
                      # fork is safe with fsspec/s3fs: fsspec resets its event loop and instance cache after fork
                      multiprocessing_context="fork" if workers else None)


def fit(
    *,
    model: torch.nn.Module,
    dataset: Dataset,
    collate: Callable[[list], dict],
    loss_fn: LossFn,
    cfg: TrainerConfig,
    out_url: str,
    fingerprint: dict,
    runtime: dist.Runtime,
) -> dict:
    """Train until the configured number of optimizer steps; returns counters for the stage's marker.

    `loss_fn(model, batch, step)` returns the mean loss over the micro-batch's examples and scalar metrics; every
    micro-batch has `cfg.batch_size` examples, so the loss of a step is the mean of its micro-batches' losses (each
    scaled by 1/grad_accum before backward) and equals that of one batch of all their examples."""
    # Resumes only from checkpoints of the same settings (lift/train/checkpoint.py); refuses others (ConfigError).
    ckpt = Checkpointer(storage.join(out_url, "checkpoints"), fingerprint, cfg.keep_checkpoints, cfg.async_checkpoint,
                        trainer=cfg)
    # A restart at another world size (an elastic job that lost a node) keeps the checkpoint's global batch.
    accum = ckpt.grad_accum(cfg.batch_size, cfg.grad_accum, runtime.world_size)
    sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, runtime.rank, runtime.world_size, cfg.seed, accum)
    steps = total_steps(cfg, sampler.steps_per_epoch)
    for warning in check_settings(cfg, steps, len(dataset), runtime.world_size):
        log.warning("%s", warning)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg, runtime.device)
    state = TrainState(model, optimizer, build_scheduler(optimizer, cfg, steps),
                       trainable_only=len(params) < sum(1 for _ in model.parameters()))
    resumed = ckpt.load(state)
    board = _Board(storage.join(out_url, "tensorboard"), runtime.is_main)
    loader = make_loader(dataset, sampler, collate, cfg, runtime.device)
    # bf16 compute on GPU: FSDP2 casts through its MixedPrecisionPolicy; one process (or DDP) would otherwise train
    # in fp32 (no tensor-core bf16, ~10x slower matmuls on an H100), so it gets autocast instead.
    autocast = (dist.compute_dtype(runtime.device, cfg.mixed_precision) == torch.bfloat16
                and not (runtime.distributed and cfg.fsdp))
    skipped, window, t0 = 0, [], time.time()
    bar = logs.progress(total=steps, initial=state.step, desc="train", unit="step")
    logs.event(log, "training", steps=steps, resumed_at=state.step if resumed else 0, examples=len(dataset),
               global_batch=sampler.global_batch * accum, world_size=runtime.world_size,
               steps_per_epoch=sampler.steps_per_epoch)
    model.train()
    while state.step < steps:
        sampler.seek(state.step)
        batches = iter(loader)
        while state.step < steps:
            group = list(itertools.islice(batches, accum))
            if not group:
                break  # end of the epoch (a whole number of steps): the outer loop starts the next epoch's order
            loss_sum, metrics, nonfinite = 0.0, {}, False
            # Dropout and noise draw from a generator that is a function of (seed, step, rank): a resumed run
            # draws exactly what the uninterrupted run drew, with no RNG state to checkpoint.
            torch.manual_seed(cfg.seed * 1_000_003 + state.step * 1_009 + runtime.rank)
            for i, batch in enumerate(group):
                with _gradient_sync(model, i == len(group) - 1):
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                        loss, extra = loss_fn(model, batch, state.step)
                    nonfinite |= not bool(torch.isfinite(loss.detach()))
                    (loss / accum).backward()
                loss_sum += float(loss.detach()) / accum
                for k, v in extra.items():
                    metrics[k] = metrics.get(k, 0.0) + float(v) / accum
            flag = torch.tensor(float(nonfinite))
            if torch_dist.is_initialized():
                torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
            if flag.item():
                ids = [i for b in group for i in b.get("ids", [])]
                if cfg.on_nonfinite == "stop":
                    raise FloatingPointError(f"non-finite loss at step {state.step} (rank {runtime.rank}, "
                                             f"batch ids {ids}); set trainer.on_nonfinite=skip to skip such steps")
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                log.warning("skipped step %d: non-finite loss (batch ids %s)", state.step, ids)
                state.step += 1
                state.scheduler.step()
                bar.update()
                ckpt.wait()
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.scheduler.step()
            state.step += 1
            bar.update()
            ckpt.wait()  # an asynchronous checkpoint taken after the previous step is committed now
            faults.kill_point(faults.KILL_AT_STEP, state.step)  # crash tests: lift/core/faults.py
            window.append(loss_sum)
            if state.step % cfg.log_every == 0 or state.step == steps:
                elapsed = time.time() - t0
                scalars = _mean_across_ranks({"loss": sum(window) / len(window), **metrics})
                scalars.update(lr=state.scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                               samples_per_s=len(window) * accum * sampler.global_batch / max(elapsed, 1e-9),
                               peak_memory_gb=_peak_memory_gb(runtime.device))
                board.scalars(state.step, scalars)
                logs.event(log, "step", step=state.step, **{k: f"{v:.4g}" for k, v in scalars.items()})
                bar.set_postfix(loss=f"{scalars['loss']:.4f}")
                window, t0 = [], time.time()
            if cfg.checkpoint_every > 0 and state.step % cfg.checkpoint_every == 0 and state.step < steps:
                ckpt.save(state)
                board.sync()
    bar.close()
    ckpt.save(state, block=True)
    board.close()
    return {"steps": state.step, "skipped_steps": skipped, "examples": len(dataset), "resumed": bool(resumed)}

