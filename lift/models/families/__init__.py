"""Per-family specifications of text-to-video models: what differs between CogVideoX and Wan2.1 (latents, text
conditioning, the training objective, which blocks to shard) lives in one module each, behind one registry.

A family module defines `SPEC = Family(...)`; stages look it up with `get(name)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch

_MODULES = {"cogvideox": "lift.models.families.cogvideox", "wan": "lift.models.families.wan"}


@dataclass(frozen=True)
class Family:
    name: str
    pipeline: str
    """diffusers pipeline class."""
    encode_text: Callable[..., torch.Tensor]
    """(pipe, prompts, device) -> prompt embeddings [B, L, D]."""
    encode_video: Callable[..., torch.Tensor]
    """(pipe, video [B, C, T, H, W] in [-1, 1]) -> training latents, as the transformer expects them."""
    loss: Callable[..., torch.Tensor]
    """(pipe, transformer, latents, embeds, noise_generators) -> per-sample loss [B] (the family's own objective)."""
    blocks: Callable[[torch.nn.Module], list]
    """transformer -> the blocks `fully_shard` wraps one by one."""
    text_length: Callable[..., int]
    """pipeline -> text tokens the transformer was trained with (the pipeline's `max_sequence_length`)."""
    vae_dtype: torch.dtype | None = None
    """The VAE's dtype whatever the pipeline computes in (Wan's reference recipe keeps its VAE in float32); None:
    the VAE computes in the pipeline's dtype like every other component."""

    def dtypes(self, compute: torch.dtype) -> dict[str, torch.dtype]:
        """Per-component dtypes (diffusers' `from_pretrained(dtype=...)` form) of a pipeline computing in `compute`."""
        return {"default": compute, "vae": self.vae_dtype or compute}


def get(name: str) -> Family:
    if name not in _MODULES:
        raise ValueError(f"unknown text-to-video family '{name}'; families: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).SPEC


def per_sample_noise(shape: tuple, generators: list[torch.Generator], device, dtype) -> torch.Tensor:
    """Noise drawn per sample from its own generator, so a sample's noise does not depend on its batch or rank."""
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in generators]).to(device)


def per_sample_uniform(generators: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.rand((), generator=g) for g in generators])
