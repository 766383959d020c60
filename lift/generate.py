"""`lift generate`: roll out K videos per prompt from a text-to-video pipeline, sharded by prompt over ranks.

Video k of prompt p is sampled with a seed derived from (seed, prompt id, k), so any single video can be
regenerated exactly, whatever the batch, shard or rank that first made it. Output:

    OUT/videos/<prompt id>-<k>.mp4     OUT/part-*.jsonl (one per shard)     OUT/manifest.jsonl (merged)

    lift generate
    torchrun --nproc-per-node 8 -m lift generate model.name_or_path=THUDM/CogVideoX-2b \\
        sampling.height=480 sampling.width=720 sampling.frames=49 sampling.steps=50
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import torch
from omegaconf import DictConfig

from lift import dist, families, faults, logs, models, storage, video

log = logging.getLogger(__name__)
MANIFEST = "manifest.jsonl"


def read_prompts(url: str) -> list[dict]:
    """Prompts from a .txt (one per line; ids are line numbers) or .jsonl file ({"id", "prompt"} per line)."""
    text = storage.read_text(url)
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if url.endswith(".txt"):
            prompts.append({"id": f"{n:06d}", "prompt": line.strip()})
            continue
        try:
            obj = json.loads(line)
            prompt = {"id": str(obj["id"]), "prompt": str(obj["prompt"])}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{url}:{n}: not a {{\"id\", \"prompt\"}} JSON line ({type(e).__name__}: {e})") from None
        if not prompt["id"].strip() or "/" in prompt["id"] or storage.unsafe_path(prompt["id"]):
            # an id names the prompt's video files, which may not land outside the output folder
            raise ValueError(f"{url}:{n}: prompt id {prompt['id']!r} cannot name a file (empty, '/', '\\' or '..')")
        prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{url}: the prompt file is empty")
    ids = [p["id"] for p in prompts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{url}: prompt id '{dup}' appears more than once")
    return prompts


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


def run(cfg: DictConfig) -> dict:
    runtime = dist.init()
    prompts = read_prompts(cfg.prompts)
    items = [{"prompt_id": p["id"], "prompt": p["prompt"], "index": k,
              "seed": video_seed(cfg.seed, p["id"], k), "id": f"{p['id']}-{k:03d}"}
             for p in prompts for k in range(cfg.videos_per_prompt)]
    shards = storage.Shards(cfg.out, cfg.num_shards or runtime.world_size)
    todo = shards.todo(runtime.rank, runtime.world_size)
    logs.event(log, "generating", videos=len(items), prompts=len(prompts), shards=shards.num_shards,
               my_shards=len(todo), model=cfg.model.name_or_path)
    if todo:
        pipe = load_pipeline(cfg.model.family, cfg.model.name_or_path, cfg.sampling, runtime.device,
                             cfg.model.trust_remote_code)
        bar = logs.progress(total=sum(len(storage.shard_slice(items, s, shards.num_shards)) for s in todo),
                            desc="generate", unit="video")
        for shard in todo:
            mine = storage.shard_slice(items, shard, shards.num_shards)
            lines = []
            for start in range(0, len(mine), cfg.batch_size):
                batch = mine[start:start + cfg.batch_size]
                clips = sample(pipe, cfg.model.family, [b["prompt"] for b in batch], [b["seed"] for b in batch],
                               cfg.sampling, runtime.device)
                for item, clip in zip(batch, clips):
                    rel = f"videos/{item['id']}.mp4"
                    video.write_video(storage.join(cfg.out, rel), clip, cfg.sampling.fps)
                    lines.append(json.dumps({**item, "video": rel, "family": cfg.model.family,
                                             "model": cfg.model.name_or_path}, sort_keys=True))
                bar.update(len(batch))
                faults.batch_done()
            shards.commit(shard, "".join(line + "\n" for line in lines).encode())
        bar.close()
    dist.barrier()
    if runtime.is_main:
        shards.merge(MANIFEST)
    return {"videos": len(items), "prompts": len(prompts)}
