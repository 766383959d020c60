"""`lift plan STAGE`: the per-rank GPU memory of a training stage, computed from the real model before a job is
submitted.

The stage's model is built at full depth on the meta device from its published config (lift/models/real.py),
adapted the way the stage adapts it (LoRA, frozen vision tower) and sharded the way it shards it (`fully_shard`
per block, then the root) over torch's fake process group of the job's world size, so the parameter, gradient and
AdamW state bytes are those FSDP2 really places on one rank. Activations are an estimate: Korthikanti et al.
(2022)'s 34·b·s·h bytes per layer in bf16 with flash attention (no s² term), or with activation checkpointing
2·b·s·h per layer plus one layer recomputed, and for a critic its logits over the vocabulary at the answer's
positions (`lift.models.critic.answer_loss` applies the head nowhere else); a GPU run measures the real peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from lift.core import dist
from lift.models import real

GIB = 1024 ** 3
WORKSPACE_GIB = 2.0  # CUDA context, NCCL buffers and allocator slack, assumed
PLANNED = ("align", "critic")


@dataclass
class Plan:
    stage: str
    model: str
    world: int
    parameters: int
    trainable: int
    local_parameters: int  # on rank 0 after sharding (FSDP2 pads dim 0 to the world size)
    local_trainable: int
    bytes: dict[str, float]  # per rank: parameters, gradients, optimizer, gathered block, activations, workspace
    gpu_memory_gib: float
    batch_size: int
    max_batch_size: int  # the largest per-rank batch that fits at these settings (0: not even one)
    advice: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.bytes.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_memory_gib * GIB

    def render(self) -> str:
        lines = [f"lift plan {self.stage}: {self.model} on {self.world} ranks, batch {self.batch_size} per rank",
                 f"  parameters {self.parameters / 1e9:.3f}B, trainable {self.trainable / 1e9:.4f}B; "
                 f"on one rank {self.local_parameters / 1e6:.1f}M, trainable {self.local_trainable / 1e6:.1f}M"]
        lines += [f"  {k:<16} {v / GIB:8.2f} GiB" for k, v in self.bytes.items()]
        lines.append(f"  {'total':<16} {self.total / GIB:8.2f} GiB of {self.gpu_memory_gib:.1f} GiB: "
                     + ("fits" if self.fits else "does NOT fit"))
        lines.append(f"  largest batch per rank that fits: {self.max_batch_size}")
        lines += [f"  - {a}" for a in self.advice]
        return "\n".join(lines) + "\n"


ANSWER_TOKENS = 128
"""The answer positions a critic example's loss reads logits at, at most: a reason and its verdict (the scoring
stages decode up to 96 tokens)."""


def plan(stage: str, cfg: DictConfig, world: int, gpu_memory_gib: float) -> Plan:
    """The memory plan of `stage` (align or critic) at `cfg` on `world` ranks of `gpu_memory_gib` each."""
    from lift.train import parallel

    if stage not in PLANNED:
        raise ValueError(f"lift plan knows the training stages {', '.join(PLANNED)}, not {stage!r}")
    name = _real_name(cfg.model.name_or_path)
    if stage == "align":
        model = real.transformer(name)
        stored = None  # every parameter trains
        from lift.models import families

        blocks = families.get(cfg.model.family).blocks(model)
        tokens, layers, hidden = _align_shape(name, cfg)
    else:
        from lift.stages import critic

        model = critic.adapt(real.critic(name), cfg)
        blocks = critic.blocks(model)
        tokens, layers, hidden = _critic_shape(name, cfg)
        stored = getattr(torch, real.config(name)["torch_dtype"])  # the published weights' dtype
    parameters = real.parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    largest_block = max(real.parameters(b) for b in blocks)
    compute = dist.compute_dtype("cuda", cfg.trainer.mixed_precision)  # the job's GPUs, not this process's CPU
    if cfg.trainer.fsdp:
        shards = _shard(model, blocks, world, cfg.trainer, compute, stored)
    else:  # DDP: every rank holds the whole model, its frozen parameters in the compute dtype as the stage does
        parallel.keep_frozen_in(model, compute)
        shards = list(model.parameters())
    local = sum(p.numel() for p in shards)
    local_trainable = sum(p.numel() for p in shards if p.requires_grad)
    # trainable weights in fp32 (AdamW's master copy, bf16 compute through FSDP2's MixedPrecisionPolicy or
    # autocast), frozen ones in the compute dtype or, sharded, the published one where narrower (`shard_model`)
    fixed = {"parameters": sum(p.numel() * p.element_size() for p in shards), "gradients": 4 * local_trainable,
             "optimizer": 8 * local_trainable,  # AdamW: exp_avg and exp_avg_sq in fp32
             # FSDP's bf16 all-gather of a block and the prefetched next one
             "gathered blocks": 2 * 2 * largest_block if cfg.trainer.fsdp else 0,
             "workspace": WORKSPACE_GIB * GIB}
    ac = bool(cfg.trainer.activation_checkpointing)
    vocab = real.config(name).get("text_config", real.config(name)).get("vocab_size", 0) if stage == "critic" else 0

    def activations(batch: int) -> float:
        per_layer = batch * tokens * hidden
        layers_bytes = (2 * per_layer * layers + 34 * per_layer) if ac else 34 * per_layer * layers
        return layers_bytes + batch * ANSWER_TOKENS * vocab * (2 + 4)  # logits in bf16, upcast for the loss

    batch = int(cfg.trainer.batch_size)
    room = gpu_memory_gib * GIB - sum(fixed.values())
    max_batch = max(0, int(room // activations(1))) if room > 0 else 0
    p = Plan(stage=stage, model=real.hub_id(name), world=world, parameters=parameters, trainable=trainable,
             local_parameters=local, local_trainable=local_trainable,
             bytes={**fixed, "activations": activations(batch)}, gpu_memory_gib=gpu_memory_gib, batch_size=batch,
             max_batch_size=max_batch)
    if not p.fits:
        if not ac and activations(batch) > room:
            p.advice.append("set trainer.activation_checkpointing=true")
        if max_batch:
            accum = math.ceil(batch * cfg.trainer.grad_accum / max_batch)
            p.advice.append(f"trainer.batch_size={max_batch} trainer.grad_accum={accum} keeps about the same "
                            "global batch")
        if room <= 0:
            p.advice.append("more ranks: parameters, gradients and optimizer state shrink with the world size"
                            if cfg.trainer.fsdp else
                            "set trainer.fsdp=true: parameters, gradients and optimizer state are sharded over the "
                            "ranks")
    return p


def _real_name(name_or_path: str) -> str:
    ids = {real.hub_id(n): n for n in real.MODELS}
    if name_or_path not in ids:
        raise ValueError(f"model.name_or_path={name_or_path!r}: lift plan knows the published models "
                         f"{', '.join(ids)}")
    return ids[name_or_path]


def _align_shape(name: str, cfg: DictConfig) -> tuple[int, int, int]:
    """(sequence length, layers, hidden size) of the align transformer at the config's clip size."""
    t = real.config(name, "transformer/config.json")
    patch = t["patch_size"] if isinstance(t["patch_size"], list) else [t.get("patch_size_t") or 1,
                                                                         t["patch_size"], t["patch_size"]]
    latent_frames = (cfg.frames - 1) // 4 + 1  # both families' VAEs: 4x in time (first frame alone), 8x in space
    video = (math.ceil(latent_frames / patch[0]) * (cfg.height // 8 // patch[1]) * (cfg.width // 8 // patch[2]))
    text = t.get("max_text_seq_length", 0)  # CogVideoX joins text and video in one sequence; Wan cross-attends
    return video + text, t["num_layers"], t["num_attention_heads"] * t["attention_head_dim"]


def _critic_shape(name: str, cfg: DictConfig, text_tokens: int = 512) -> tuple[int, int, int]:
    """(sequence length, layers, hidden size) of the critic's language model for `model.frames` frames of
    480x720 (the recipe's clips): Qwen-VL merges 2 frames and 2x2 patches of 14 px into one token."""
    c = real.config(name)
    text = c.get("text_config", c)
    vision = c["vision_config"]
    side = vision.get("patch_size", 14) * vision.get("spatial_merge_size", 2)
    video = math.ceil(cfg.model.frames / vision.get("temporal_patch_size", 2)) * round(480 / side) * round(720 / side)
    return video + text_tokens, text["num_hidden_layers"], text["hidden_size"]


def _shard(model: torch.nn.Module, blocks: list[torch.nn.Module], world: int, trainer: DictConfig,
           compute: torch.dtype, stored: torch.dtype | None) -> list[torch.Tensor]:
    """Rank 0's shards of the parameters of `model` (on the meta device), sharded by the stages' own
    `parallel.shard_model` over a fake process group of `world` ranks for a job computing in `compute` from
    weights stored in `stored`."""
    import torch.distributed as torch_dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from lift.train import parallel

    if torch_dist.is_initialized():
        raise RuntimeError("lift plan runs in its own process, outside torchrun")
    torch_dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        runtime = dist.Runtime(rank=0, world_size=world, local_rank=0, device=torch.device("cpu"))
        parallel.shard_model(model, blocks, runtime, trainer, mesh=init_device_mesh("cpu", (world,)),
                             compute=compute, stored=stored)
        return [p.to_local() for p in model.parameters()]  # a trainable parameter's shard requires grad too
    finally:
        torch_dist.destroy_process_group()
