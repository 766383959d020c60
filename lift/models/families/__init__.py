"""Per-family specifications of text-to-video models: what differs between CogVideoX and Wan2.1 (latents, text
conditioning, the training objective, which blocks to shard) lives in one module each, behind one registry.

A family module defines `SPEC = Family(...)`; stages look it up with `get(name)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

_MODULES = {"cogvideox": "lift.models.families.cogvideox", "wan": "lift.models.families.wan"}
NAMES = tuple(_MODULES)


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
    vae_tiling: dict = field(default_factory=dict)
    """diffusers' `vae.enable_tiling` arguments (pixels): a frame larger than (tile_sample_min_height,
    tile_sample_min_width) goes through the VAE in overlapping tiles of that size, one clip of a batch at a time, so
    its memory is bounded at any resolution; a frame that fits goes whole."""

    def dtypes(self, compute: torch.dtype) -> dict[str, torch.dtype]:
        """Per-component dtypes (diffusers' `from_pretrained(dtype=...)` form) of a pipeline computing in `compute`."""
        return {"default": compute, "vae": self.vae_dtype or compute}

    def fit_vae(self, vae, height: int, width: int, tiling: bool = True, slicing: bool = True) -> bool:
        """Set diffusers' tiling and slicing of `vae` for clips of height x width pixels: both on (where allowed) when
        a frame is larger than the tile of `vae_tiling`, both off otherwise, so a clip that fits computes exactly as
        it would untiled. The one place lift decides it, for the latent-cache fill and for sampling. Returns whether
        it tiles."""
        tile = self.vae_tiling["tile_sample_min_height"], self.vae_tiling["tile_sample_min_width"]
        large = height > tile[0] or width > tile[1]
        if large and tiling:
            vae.enable_tiling(**self.vae_tiling)
        else:
            vae.disable_tiling()
        if large and slicing:
            vae.enable_slicing()
        else:
            vae.disable_slicing()
        return large and tiling


def get(name: str) -> Family:
    if name not in _MODULES:
        raise ValueError(f"unknown text-to-video family '{name}'; families: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).SPEC


def per_sample_noise(shape: tuple, generators: list[torch.Generator], device, dtype) -> torch.Tensor:
    """Noise drawn per sample from its own generator, so a sample's noise does not depend on its batch or rank."""
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in generators]).to(device)


def per_sample_uniform(generators: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.rand((), generator=g) for g in generators])
