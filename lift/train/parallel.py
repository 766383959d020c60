"""FSDP2 mechanics shared by the training stages: sharding blocks and the root, materialising a model built on the
meta device rank by rank (each rank allocates and reads only its shard), gathering a full state dict, and
exporting the trained model in its library's layout.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh

from lift.config.schema import TrainerConfig
from lift.core import dist
from lift.io import storage

log = logging.getLogger(__name__)

READ_BYTES = 64 << 20  # at most this much of a tensor is read at once: the load's overhead beyond the shard


class Source(Protocol):
    """Where an `EmptyModel`'s weights come from, by the names they have in the model as built (e.g. a
    checkpoint's files): rows [start, stop) of a tensor, or all of it when start is None."""

    def __contains__(self, name: str) -> bool: ...

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor: ...


class EmptyModel:
    """A model built with its parameters on the meta device and its buffers computed, remembered as built.

    torchtitan's way to load a model too big for one device: build it empty, adapt and `fully_shard` it, then let
    each rank allocate and fill only its shard (`materialise`). What the model was built as is kept by module
    identity, which adaptation (peft wraps modules, FSDP2 swaps their class) and `to_empty` keep: each module's
    name as built (the checkpoint's names, whatever wrappers are added), its buffers' values (`to_empty` leaves
    rotary frequencies and sincos tables that are not in any checkpoint as garbage) and its tied parameters.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.names = {module: name for name, module in model.named_modules()}
        self.buffers = {(module, name): b for module in model.modules()
                        for name, b in module.named_buffers(recurse=False)}
        self.created: dict[tuple[torch.nn.Module, str], torch.Tensor] = {}
        owners: dict[torch.Tensor, list[tuple[torch.nn.Module, str]]] = {}
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                owners.setdefault(p, []).append((module, name))
        self.ties = [o for o in owners.values() if len(o) > 1]  # e.g. an lm_head sharing the embeddings

    def _tie(self) -> None:
        """Share each tied parameter again: `to_empty` and `to` give each module its own copy (FSDP2 does not)."""
        for (module, name), *others in self.ties:
            for other, other_name in others:
                if getattr(other, other_name) is not getattr(module, name):
                    setattr(other, other_name, getattr(module, name))

    def adapt(self, fn: Callable[[torch.nn.Module], torch.nn.Module]) -> torch.nn.Module:
        """`fn(model)` (e.g. peft's LoRA) with the parameters it creates initialised exactly as on a loaded model.

        peft initialises adapters from the CPU generator and moves them to their base layer's device, where meta
        would drop the values: so `fn` runs on CPU storage that is allocated but never written (`to_empty`; the OS
        backs only pages that are touched), the values of the parameters it created are kept for `materialise`,
        and the adapted model goes back to meta.
        """
        self.model.to_empty(device="cpu")
        self._tie()
        built = {(m, n) for m in self.model.modules() for n, _ in m.named_parameters(recurse=False)}
        adapted = fn(self.model)
        self.created = {(m, n): p.detach().clone() for m in adapted.modules()
                        for n, p in m.named_parameters(recurse=False) if (m, n) not in built}
        self.model = adapted.to("meta")
        self._tie()
        return self.model

    def materialise(self, model: torch.nn.Module, device: torch.device, weights: Source) -> None:
        """Allocate `model` (this model, maybe sharded) on `device` and fill it: every parameter and persistent
        buffer with this rank's rows of it from `weights` by its name as built, parameters `adapt` created with
        their initial values, other buffers as built. A tied parameter is filled once, from whichever of its names
        `weights` has; a parameter found nowhere is an error naming it."""
        model.to_empty(device=device)
        self._tie()
        aliases: dict[torch.Tensor, list[str]] = {}
        with torch.no_grad():
            for module in model.modules():
                built = self.names.get(module)
                prefix = f"{built}." if built else ""
                for name, buf in module.named_buffers(recurse=False):
                    if (module, name) in self.buffers:
                        buf.copy_(self.buffers[(module, name)])
                    if built is not None and name not in module._non_persistent_buffers_set \
                            and prefix + name in weights:
                        _fill(buf, weights, prefix + name)
                for name, param in module.named_parameters(recurse=False):
                    if (module, name) in self.created:
                        _fill(param, _Values(self.created[(module, name)]), "")
                    elif built is not None:
                        aliases.setdefault(param, []).append(prefix + name)
            for param, names in aliases.items():
                found = next((n for n in names if n in weights), None)
                if found is None:
                    raise KeyError(f"{' / '.join(names)}: no such weight in the checkpoint")
                _fill(param, weights, found)


class _Values:
    """A `Source` of one tensor (an adapter's initial values)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def __contains__(self, name: str) -> bool:
        return True

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        return self.tensor if start is None else self.tensor[start:stop]


def _fill(tensor: torch.Tensor, weights: Source, name: str) -> None:
    """Copy this rank's rows of `name` into `tensor` (a DTensor sharded on dim 0 by FSDP2, or a whole tensor),
    reading at most READ_BYTES at a time."""
    from torch.distributed.tensor import DTensor, Shard

    local, start = tensor, 0
    if isinstance(tensor, DTensor):
        if tuple(tensor.placements) != (Shard(0),):
            raise ValueError(f"{name}: sharded as {tensor.placements}; only FSDP2's Shard(0) is loaded by rows")
        local = tensor.to_local()
        step = -(-tensor.shape[0] // tensor.device_mesh.size())  # torch.chunk's split, as FSDP2 shards
        start = min(tensor.device_mesh.get_local_rank() * step, tensor.shape[0])
    if local.dim() == 0:
        local.copy_(weights.read(name))
        return
    rows = max(1, READ_BYTES // max(1, local[:1].numel() * local.element_size()))
    for a in range(0, local.shape[0], rows):
        b = min(a + rows, local.shape[0])
        local[a:b].copy_(weights.read(name, start + a, start + b))


def keep_frozen_in(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store the frozen floating-point parameters of `model` in `dtype`: the dtype the model computes in, or a
    narrower one its checkpoint holds them in (`shard_model`).

    A frozen weight never changes, so a float32 copy of one computed in bfloat16 only doubles its memory: the LoRA
    critic's 8.3B-parameter base takes 15.4 GiB, not 30.9, over its ranks (the published weights are bfloat16, so
    nothing is rounded), and DDP with autocast uses them without a cast per forward. Trainable parameters stay float32
    (AdamW's master weights). A parameter tied under several names stays one parameter. On the meta device this
    only changes what `materialise` will allocate."""
    converted: dict[torch.Tensor, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None or p.requires_grad or not p.is_floating_point() or p.dtype == dtype:
                continue
            if p not in converted:
                converted[p] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
            module._parameters[name] = converted[p]


def shard_model(model: torch.nn.Module, blocks: list[torch.nn.Module], runtime: dist.Runtime,
                cfg: TrainerConfig, materialise: Callable[[torch.nn.Module], None] | None = None,
                mesh: DeviceMesh | None = None, compute: torch.dtype | None = None,
                stored: torch.dtype | None = None) -> torch.nn.Module:
    """Parallelism in a fixed order: activation checkpointing is the caller's (library switch) -> frozen
    parameters stored in the compute dtype (`keep_frozen_in`) -> `fully_shard` per block -> `fully_shard` on the
    root. bf16 parameters with fp32 reductions on GPU. Under FSDP2, which casts each shard to the compute dtype as it
    gathers it, frozen parameters stay in `stored`, the dtype the checkpoint holds them in, where that is narrower:
    a bfloat16 checkpoint trained in float32 (on CPU, or `trainer.mixed_precision=fp32`) keeps half the bytes per
    shard and computes exactly as from float32 shards, as its values are bfloat16 either way (the 7B critic at one
    block on 2 CPU ranks: 1.4 GB less held per rank; its peak falls by 0.3 GB, as a gathered unit's shard is cast
    to float32 whole before the all-gather).

    `blocks` are in the order the forward runs them. The last stays gathered after the forward: the backward starts
    with it, so resharding it would only gather it again at once (torchtitan's choice; one all-gather of it saved
    per micro-batch, the 7B critic's untied 152k-token head among them).

    A model built on the meta device is given its weights by `materialise(model)` (e.g. `EmptyModel.materialise`):
    after `fully_shard`, so each rank allocates and reads only its shard, or before DDP, which broadcasts rank 0's.
    `mesh` is FSDP2's device mesh, by default one of every rank on this process's device, and `compute` the dtype
    the model computes in, by default `dist.compute_dtype` of this process's device (`lift plan` passes a CPU mesh
    over its fake process group and the GPU's dtype).
    """
    compute = compute or dist.compute_dtype(runtime.device, cfg.mixed_precision)
    fsdp = runtime.distributed and cfg.fsdp
    frozen = stored if fsdp and stored is not None and stored.itemsize < compute.itemsize else compute
    keep_frozen_in(model, frozen)
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy()
        if compute != torch.float32 or frozen != compute:
            mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
        for i, block in enumerate(blocks):
            fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
        fully_shard(model, mesh=mesh, mp_policy=mp)
    if materialise is not None:
        materialise(model)
    if runtime.distributed and not cfg.fsdp:
        return torch.nn.parallel.DistributedDataParallel(model)
    return model


def without_frozen(model: torch.nn.Module, state: dict) -> dict:
    """`state`, a state dict of `model`, without any name of a frozen parameter. torch's `ignore_frozen_params`
    finds frozen parameters under one name each, so a frozen parameter tied under a second name would stay under
    that one (Qwen2-VL's head is its embeddings: 233M parameters for the 2B)."""
    frozen = {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return {k: v for k, v in state.items() if k not in frozen}


def full_state_dict(model: torch.nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """Unsharded CPU weights on rank 0, an empty dict on the others (a collective: call it on all ranks), for
    exports; `trainable_only` keeps only the parameters that train (a LoRA run's adapters)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    state = get_model_state_dict(model, options=options)
    return without_frozen(model, state) if trainable_only else state


def assign(model: torch.nn.Module, weights: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.nn.Module:
    """`weights` (a full state dict, `full_state_dict`'s on rank 0) become the parameters of `model`, one built
    empty, each cast to `dtype`: the float32 tensor is freed as its cast replaces it, so an export holds one copy of
    the model. Assigning unties tied parameters: a model with ties ties them again after."""
    for name in list(weights):
        weights[name] = weights[name].to(dtype)
    model.load_state_dict(weights, assign=True)
    return model


def export(model: torch.nn.Module, url: str, stage: str, build: Callable[[dict[str, torch.Tensor]], tuple[list, dict]],
           runtime: dist.Runtime, trainable_only: bool = False, **fields) -> str:
    """Export a trained (maybe sharded) model to `url`, sealed with a `_SUCCESS` marker; a collective: every rank
    calls it, and returns when rank 0 has sealed the folder.

    The ranks gather the full weights (`trainable_only`: only those that train) to rank 0, where `build(weights)`
    returns the objects to save (each with `save_pretrained`, e.g. the base model holding the weights and its
    processor) and the marker's counts. They are written into one folder (`storage.writing_folder`: in place on
    local disk, uploaded to object storage), with the folders an object names in its `copies` (subfolder -> URL)
    copied in unchanged, and sealed with a marker of `stage` carrying `fields`.
    """
    weights = full_state_dict(model, trainable_only)
    if runtime.is_main:
        parts, counts = build(weights)
        copies = {name: source for part in parts for name, source in getattr(part, "copies", {}).items()}
        with storage.writing_folder(url, copies) as tmp:
            for part in parts:
                part.save_pretrained(tmp)
        storage.write_marker(url, stage, "", counts, **fields)
    dist.barrier()
    return url
