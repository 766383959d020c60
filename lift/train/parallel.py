"""FSDP2 mechanics shared by the training stages: sharding blocks and the root, gathering a full state dict, and
exporting the trained model in its library's layout.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Callable

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
)

from lift.config.schema import TrainerConfig
from lift.core import dist
from lift.io import storage

log = logging.getLogger(__name__)


def shard_model(model: torch.nn.Module, blocks: list[torch.nn.Module], runtime: dist.Runtime,
                cfg: TrainerConfig) -> torch.nn.Module:
    """Parallelism in a fixed order: activation checkpointing is the caller's (library switch) ->
    `fully_shard` per block -> `fully_shard` on the root. bf16 parameters with fp32 reductions on GPU."""
    if not runtime.distributed:
        return model
    if not cfg.fsdp:
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy()
    if (dtype := dist.compute_dtype(runtime.device, cfg.mixed_precision)) != torch.float32:
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU weights on every rank (a collective: call it on all ranks), for exports."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export(model: torch.nn.Module, url: str, stage: str, build: Callable[[dict[str, torch.Tensor]], tuple[list, dict]],
           runtime: dist.Runtime, **fields) -> str:
    """Export a trained (maybe sharded) model to `url`, sealed with a `_SUCCESS` marker; a collective: every rank
    calls it, and returns when rank 0 has sealed the folder.

    Every rank gathers the full weights; on rank 0 `build(weights)` returns the objects to save (each with
    `save_pretrained`, e.g. the base model holding the weights and its processor) and the marker's counts. They are
    written into one local folder, uploaded with `storage.save_folder`, and sealed with a marker of `stage` carrying
    `fields`.
    """
    weights = full_state_dict(model)
    if runtime.is_main:
        parts, counts = build(weights)
        with tempfile.TemporaryDirectory(prefix=f"lift-{stage}-") as tmp:
            for part in parts:
                part.save_pretrained(tmp)
            storage.save_folder(tmp, url)
        storage.write_marker(url, stage, "", counts, **fields)
    dist.barrier()
    return url
