"""`lift generate`: roll out K videos per prompt from a text-to-video pipeline, sharded by prompt over ranks.

Video k of prompt p is sampled with a seed derived from (seed, prompt id, k), so any single video can be
regenerated exactly, whatever the batch, shard or rank that first made it. Output:

    OUT/videos/<prompt id>-<k>.mp4     OUT/part-*.jsonl (one per shard)     OUT/manifest.jsonl (merged)

    lift generate
    torchrun --nproc-per-node 8 -m lift generate model.name_or_path=THUDM/CogVideoX-2b \\
        sampling.height=480 sampling.width=720 sampling.frames=49 sampling.steps=50
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from lift.core import dist
from lift.data import hra
from lift.data.prompts import read_prompts
from lift.io import sharded, storage
from lift.models import integrity, sampling

log = logging.getLogger(__name__)


def check(cfg: DictConfig) -> None:
    """The prompt file and the model folder."""
    read_prompts(cfg.prompts)
    integrity.check_folder(cfg.model.name_or_path, "model.name_or_path")


def run(cfg: DictConfig) -> dict:
    runtime = dist.init()
    prompts = read_prompts(cfg.prompts)
    items = sampling.rollout_items(prompts, cfg.seed, cfg.videos_per_prompt)
    model = cfg.model

    def load():
        return sampling.load_pipeline(model.family, model.name_or_path, cfg.sampling, runtime.device,
                                      model.trust_remote_code)

    def record(item: dict, rel: str, _url: str) -> dict:
        return {**item, "video": rel, "family": model.family, "model": model.name_or_path}

    def work(pipe, mine: list[dict]):
        return sampling.render(pipe, model.family, mine, cfg.batch_size, cfg.sampling, runtime.device, cfg.out,
                               "videos", record)

    sharded.run_parts(storage.Shards.layout(cfg.out, cfg.num_shards, runtime.world_size), items, work, runtime,
                      hra.MANIFEST, "generate", load, what="generating", prompts=len(prompts), model=model.name_or_path)
    return {"videos": len(items), "prompts": len(prompts)}
