"""FSDP2 mechanics shared by the training stages: sharding blocks and the root, and gathering a full state dict.
"""

from __future__ import annotations

import logging

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lift.config.schema import TrainerConfig
from lift.core import dist

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
    if runtime.device.type == "cuda" and cfg.mixed_precision == "bf16":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU weights on every rank (a collective: call it on all ranks), for exports."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


