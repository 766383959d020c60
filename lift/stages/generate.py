"""`lift generate`: roll out K videos per prompt from a text-to-video pipeline, sharded by prompt over ranks.

Video k of prompt p is sampled with a seed derived from (seed, prompt id, k), so any single video can be
regenerated exactly, whatever the batch, shard or rank that first made it. Output:

    OUT/videos/<prompt id>-<k>.mp4     OUT/part-*.jsonl (one per shard)     OUT/manifest.jsonl (merged)

    lift generate
    torchrun --nproc-per-node 8 -m lift generate model.name_or_path=THUDM/CogVideoX-2b \\
        sampling.height=480 sampling.width=720 sampling.frames=49 sampling.steps=50
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from lift.core import dist, faults, logs
from lift.data.prompts import read_prompts
from lift.io import storage, video
from lift.models.sampling import load_pipeline, sample, video_seed

log = logging.getLogger(__name__)
MANIFEST = "manifest.jsonl"












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
