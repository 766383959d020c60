"""AdamW and the learning-rate schedule of a `TrainerConfig`, and the run's total optimizer steps.
"""

from __future__ import annotations

import logging

import torch

from lift.config.schema import TrainerConfig

log = logging.getLogger(__name__)


def total_steps(cfg: TrainerConfig, steps_per_epoch: int) -> int:
    """`trainer.max_steps`, or `trainer.epochs` x `steps_per_epoch` (whole accumulation windows per epoch, as
    `GlobalBatchSampler.steps_per_epoch` counts them)."""
    return cfg.max_steps if cfg.max_steps > 0 else max(1, cfg.epochs * steps_per_epoch)


def check_settings(cfg: TrainerConfig, steps: int) -> list[str]:
    """What in a trainer's settings makes no sense for a run of `steps` optimizer steps (logged as warnings when
    training starts): a warmup that never ends or takes most of the run."""
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(cfg.warmup_ratio * steps)
    if warmup >= steps:
        return [f"trainer warmup ({warmup} steps) is not shorter than the run ({steps} steps): the learning rate "
                "never reaches trainer.lr"]
    if warmup > steps // 2:
        return [f"trainer warmup ({warmup} steps) takes more than half of the run ({steps} steps)"]
    return []


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainerConfig, device: torch.device):
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                             fused=device.type == "cuda")


def build_scheduler(optimizer, cfg: TrainerConfig, steps: int):
    from transformers import get_scheduler

    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(cfg.warmup_ratio * steps)
    name = {"cosine": "cosine", "cosine_with_restarts": "cosine_with_restarts", "constant": "constant_with_warmup"}
    extra = {"num_cycles": cfg.num_cycles} if cfg.schedule == "cosine_with_restarts" else {}
    return get_scheduler(name[cfg.schedule], optimizer, num_warmup_steps=min(warmup, steps),
                         num_training_steps=steps, scheduler_specific_kwargs=extra)


