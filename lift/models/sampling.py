"""Sampling videos from a diffusers text-to-video pipeline, shared by `lift generate` and `lift evaluate`: the videos
to sample with their per-video seeds, the pipeline call with the family's text length, writing the clips, and
loading with VAE tiling and slicing.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Iterator

import numpy as np
import torch
from omegaconf import DictConfig

from lift import models
from lift.core import dist
from lift.io import storage, video
from lift.models import families

log = logging.getLogger(__name__)


def video_seed(seed: int, prompt_id: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{prompt_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rollout_items(prompts: list[dict], seed: int, videos_per_prompt: int) -> list[dict]:
    """The videos to sample, K per prompt: video k of prompt p has id "<p>-<k:03d>" and seed `video_seed(seed, p, k)`,
    so any single video can be regenerated exactly, whatever the batch, shard or rank that first made it."""
    return [{"prompt_id": p["id"], "prompt": p["prompt"], "index": k, "seed": video_seed(seed, p["id"], k),
             "id": f"{p['id']}-{k:03d}"} for p in prompts for k in range(videos_per_prompt)]


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


def render(pipe, family: str, items: list[dict], batch_size: int, cfg: DictConfig, device: torch.device, out: str,
           folder: str, record: Callable[[dict, str, str], dict]) -> Iterator[list[dict]]:
    """Sample `items` (of `rollout_items`) `batch_size` at a time and write item i to OUT/FOLDER/<id>.mp4; yields per
    batch the records `record(item, path relative to OUT, URL)`, called once the video is written."""
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        clips = sample(pipe, family, [b["prompt"] for b in batch], [b["seed"] for b in batch], cfg, device)
        records = []
        for item, clip in zip(batch, clips):
            rel = f"{folder}/{item['id']}.mp4"
            url = storage.join(out, rel)
            video.write_video(url, clip, cfg.fps)
            records.append(record(item, rel, url))
        yield records


def load_pipeline(family: str, name_or_path: str, sampling: DictConfig, device: torch.device,
                  trust_remote_code: bool = False):
    dtype = dist.compute_dtype(device)
    pipe = models.load_t2v(family, name_or_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    pipe.set_progress_bar_config(disable=True)
    families.get(family).fit_vae(pipe.vae, sampling.height, sampling.width, sampling.vae_tiling, sampling.vae_slicing)
    return pipe


