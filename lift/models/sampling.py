"""Sampling videos from a diffusers text-to-video pipeline, shared by `lift generate` and `lift evaluate`: the per-video
seed, the pipeline call with the family's text length, and loading with VAE tiling and slicing.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch
from omegaconf import DictConfig

from lift import models
from lift.models import families

log = logging.getLogger(__name__)


def video_seed(seed: int, prompt_id: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{prompt_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Pipeline output in [0, 1] (B, T, H, W, C) -> uint8 frames."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sample(pipe, family: str, prompts: list[str], seeds: list[int], cfg: DictConfig,
           device: torch.device) -> np.ndarray:
    """One batched pipeline call; each video gets its own generator, so batching never changes a video."""
    generators = [torch.Generator("cpu").manual_seed(x) for x in seeds]
    out = pipe(prompt=prompts, height=cfg.height, width=cfg.width, num_frames=cfg.frames,
               num_inference_steps=cfg.steps, guidance_scale=cfg.guidance, generator=generators, output_type="np",
               max_sequence_length=families.get(family).text_length(pipe))
    return to_uint8(np.asarray(out.frames))


def load_pipeline(family: str, name_or_path: str, sampling: DictConfig, device: torch.device,
                  trust_remote_code: bool = False):
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = models.load_t2v(family, name_or_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":
        if sampling.vae_tiling:
            pipe.vae.enable_tiling()
        if sampling.vae_slicing:
            pipe.vae.enable_slicing()
    return pipe


