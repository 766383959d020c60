"""LiFT-Critic: a video VLM taught to answer, per dimension, "<Label>. <reason>" (or reason first, then label).

Training (`lift critic`) is supervised fine-tuning with the loss on answer tokens only, LoRA through peft or full,
under FSDP2 (`fully_shard` per decoder and vision block). The prompt and answer formats, the label parser and
the batched label probabilities live here too, so training, `lift critic-eval` and `lift score` cannot drift.

    lift critic                                                   # one process, toy world, tiny critic
    torchrun --nproc-per-node 8 -m lift critic --config configs/cluster/critic-qwen2.5-vl-7b.yaml
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $MASTER:29500 -m lift critic ...
"""

from __future__ import annotations

import logging
import re

import torch
from omegaconf import DictConfig, OmegaConf

from lift import models
from lift.models import integrity
from lift.core import dist, logs
from lift.io import storage
from lift.models.critic import Collate, Examples, answer_loss, examples_from_manifest
from lift.train import loop, parallel

log = logging.getLogger(__name__)


def adapt(model, cfg: DictConfig):
    """Freeze the vision tower and projector (LiFT's recipe), then add LoRA to the language model, or not."""
    if cfg.model.freeze_vision:
        for name, p in model.named_parameters():
            if ".visual." in f".{name}":
                p.requires_grad_(False)
    if cfg.trainer.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if not cfg.lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    # Only the language model's projections: the vision tower has modules of the same names.
    targets = rf"^(?!.*visual).*\.({'|'.join(map(re.escape, cfg.lora.target_modules))})$"
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=targets)
    return get_peft_model(model, lora)


def blocks(model) -> list[torch.nn.Module]:
    """The modules to shard one by one, in the order the forward runs them (`parallel.shard_model`): the transformer
    blocks (the classes the model itself declares unsplittable: the vision tower's, then the language model's) and,
    when they are not tied, the input embeddings first and the output head last. Those two hold 1.09B of
    Qwen2.5-VL-7B's 8.3B parameters (152k tokens x 3584); left in the root's unit they would be gathered whole on
    every rank and held so for the whole step. Tied, they are one parameter and stay in the root's unit."""
    names = set(getattr(model, "_no_split_modules", None) or
                getattr(getattr(model, "base_model", None), "model", model)._no_split_modules or [])
    units = [m for m in model.modules() if type(m).__name__ in names]
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and head.weight is not embed.weight:
        units = [embed, *units, head]
    return units


def export(model, cfg: DictConfig, runtime: dist.Runtime) -> str:
    """Merged weights in transformers layout (safetensors + processor) at OUT/model, sealed with `_SUCCESS`, in the
    dtype the base model is stored in (the published Qwen-VL models: bfloat16). Rank 0 holds one full copy of the
    model, not two: with LoRA only the adapters are gathered (float32) and merged into the base read from its folder
    in its stored dtype (16.6 GB for the 7B, not 33), each weight's sum computed in float32 and rounded once, as a
    float32 merge then cast would; without, the gathered weights, cast one by one, become the parameters of a model
    built empty."""

    def build(weights):
        remote = cfg.model.trust_remote_code
        dtype = models.Checkpoint(models.local_dir(cfg.model.name_or_path), "model").dtype
        if cfg.lora.enabled:
            base, processor = models.load_critic(cfg.model.name_or_path, dtype=dtype, trust_remote_code=remote)
            base = adapt(base, cfg)  # peft keeps the adapters in float32 on a bfloat16 base (autocast_adapter_dtype)
            trained = {name for name, p in base.named_parameters() if p.requires_grad}
            unexpected = base.load_state_dict(weights, strict=False).unexpected_keys
            if unexpected or trained - weights.keys():
                raise RuntimeError(f"critic export: the trained adapters do not fit the base model (unexpected "
                                   f"{unexpected[:3]}, missing {sorted(trained - weights.keys())[:3]})")
            base = base.merge_and_unload()  # W += B @ A * scale: a float32 sum written into W's dtype
            base.activation_checkpointing_disable()
        else:
            base = parallel.assign(models.critic_skeleton(cfg.model.name_or_path, remote)[0], weights, dtype)
            base.tie_weights()  # assigning replaced the tied head's parameter
            processor = models.load_processor(cfg.model.name_or_path, remote)
        return [base, processor], {"parameters": sum(p.numel() for p in base.parameters())}

    return parallel.export(model, storage.join(cfg.out, "model"), "critic-model", build, runtime,
                           trainable_only=cfg.lora.enabled, base=cfg.model.name_or_path,
                           answer_format=cfg.model.answer_format,
                           frames=cfg.model.frames, sample_fps=cfg.model.sample_fps)


def fingerprint(cfg: DictConfig) -> dict:
    """What a checkpoint must share with the run resuming from it; lift/train/checkpoint.py refuses one that differs."""
    return {"base": cfg.model.name_or_path, "lora": OmegaConf.to_container(cfg.lora) if cfg.lora.enabled else None,
            "answer_format": cfg.model.answer_format, "freeze_vision": cfg.model.freeze_vision}


def check(cfg: DictConfig) -> None:
    """The manifest (every line, every video present, a train split) and the start model's folder; the runner
    checks the checkpoints a rerun would resume from."""
    examples_from_manifest(cfg.data, "train", cfg.model.answer_format, cfg.model.with_reasons)
    integrity.check_folder(cfg.model.name_or_path, "model.name_or_path")


def run(cfg: DictConfig) -> dict:
    """`lift critic`: SFT of the critic on the train split, then export."""
    runtime = dist.init()
    examples = examples_from_manifest(cfg.data, "train", cfg.model.answer_format, cfg.model.with_reasons)
    # Built empty, adapted and sharded, then each rank reads only its shard (parallel.EmptyModel)
    skeleton, weights = models.critic_skeleton(cfg.model.name_or_path, cfg.model.trust_remote_code)
    empty = parallel.EmptyModel(skeleton)
    torch.manual_seed(cfg.trainer.seed)  # adapters are initialised randomly: same seed, same run
    model = empty.adapt(lambda m: adapt(m, cfg))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logs.event(log, "critic model", base=cfg.model.name_or_path, trainable=trainable, examples=len(examples),
               answer_format=cfg.model.answer_format, lora=cfg.lora.enabled)
    model = parallel.shard_model(model, blocks(model), runtime, cfg.trainer,
                                 lambda m: empty.materialise(m, runtime.device, weights), stored=weights.dtype)

    def loss_fn(m, batch, step):
        inputs = {k: v.to(runtime.device) if torch.is_tensor(v) else v for k, v in batch["inputs"].items()}
        return answer_loss(m, inputs), {}

    counts = loop.fit(model=model, dataset=Examples(examples, cfg.model.frames),
                       collate=Collate(models.local_dir(cfg.model.name_or_path), cfg.model.sample_fps), loss_fn=loss_fn,
                       cfg=cfg.trainer, out_url=cfg.out, fingerprint=fingerprint(cfg), runtime=runtime)
    export(model, cfg, runtime)
    return counts
