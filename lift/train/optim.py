"""AdamW and the learning-rate schedule of a `TrainerConfig`, and the run's total optimizer steps.
"""

from __future__ import annotations

import functools
import logging
import math

import torch

from lift.config.schema import TrainerConfig

log = logging.getLogger(__name__)


def total_steps(cfg: TrainerConfig, steps_per_epoch: int) -> int:
    """`trainer.max_steps`, or `trainer.epochs` x `steps_per_epoch` (whole accumulation windows per epoch, as
    `GlobalBatchSampler.steps_per_epoch` counts them)."""
    return cfg.max_steps if cfg.max_steps > 0 else max(1, cfg.epochs * steps_per_epoch)


def check_settings(cfg: TrainerConfig, steps: int, examples: int | None = None, world_size: int = 1) -> list[str]:
    """What in a trainer's settings makes no sense for a run of `steps` optimizer steps over `examples` examples on
    `world_size` ranks (logged as warnings when training starts): a warmup that never ends or takes most of the run;
    an optimizer step's batch (trainer.batch_size per rank x world size x trainer.grad_accum) larger than the data,
    so an epoch has no step; or one that leaves more than a tenth of the examples out of every epoch (an epoch is
    whole steps only, lift/train/sampler.py). The global batch is a multiple of the world size by construction:
    trainer.batch_size is per rank."""
    out = []
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(cfg.warmup_ratio * steps)
    if warmup >= steps:
        out.append(f"trainer warmup ({warmup} steps) is not shorter than the run ({steps} steps): the learning rate "
                   "never reaches trainer.lr")
    elif warmup > steps // 2:
        out.append(f"trainer warmup ({warmup} steps) takes more than half of the run ({steps} steps)")
    if examples is not None:
        per_step = cfg.batch_size * world_size * cfg.grad_accum
        batch = (f"trainer.batch_size {cfg.batch_size} x world size {world_size} x trainer.grad_accum "
                 f"{cfg.grad_accum} = {per_step} examples per optimizer step")
        if examples < per_step:
            out.append(f"{batch}, more than the {examples} examples: an epoch has no optimizer step; lower "
                       "trainer.batch_size or trainer.grad_accum")
        elif (left := examples % per_step) > examples / 10:
            out.append(f"{batch}: {left} of the {examples} examples ({left / examples:.0%}) sit out every epoch; "
                       "choose trainer.batch_size and trainer.grad_accum so that it divides the data more evenly")
    return out


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainerConfig, device: torch.device):
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                             fused=device.type == "cuda")


def lr_factor(step: int, *, schedule: str, warmup: int, steps: int, num_cycles: int = 1) -> float:
    """trainer.lr's multiplier at optimizer step `step`: a linear warmup from 0 over `warmup` steps, then a half
    cosine down to 0 at `steps` ("cosine"), `num_cycles` such cosines each restarting at trainer.lr
    ("cosine_with_restarts"), or 1 ("constant"). These are transformers' schedules (`get_scheduler`'s "cosine",
    "cosine_with_restarts" and "constant_with_warmup"; tests/test_train.py checks every step equal), written out
    because importing transformers.optimization costs every training process seconds (it imports the Trainer's
    utilities and peft)."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))


def build_scheduler(optimizer, cfg: TrainerConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else int(cfg.warmup_ratio * steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, schedule=cfg.schedule, warmup=min(warmup, steps), steps=steps, num_cycles=cfg.num_cycles))
