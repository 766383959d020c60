"""`lift align`: fine-tune the text-to-video transformer with LiFT's reward-weighted objective under FSDP2.

    L = E_syn[ r * l(x, c) ] + lambda * E_real[ l(x, c) ]         (LiFT, Eq. 3)

l is the family's own denoising loss (lift/models/families). D_syn are the scored rollouts, D_real an optional
video-caption set. Both are mixed into one shuffled set whose per-example weights make the batch mean an unbiased
estimate of L: w = r * N / N_syn for rollouts and lambda * N / N_real for real clips. Variants: rejection
sampling (keep all-Good rollouts, unweighted), reward normalisation, and plain fine-tuning (reward_weighting=false,
which also trains the toy world's base model from a manifest that has no scores).

VAE latents and text embeddings are computed once per (content, encoder) and cached under OUT/cache/, so later
epochs and reruns run no VAE or text encoder.

    lift align
    torchrun --nproc-per-node 8 -m lift align --config configs/cluster/align-cogvideox-2b.yaml
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $MASTER:29500 -m lift align ...
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from lift import models
from lift.core import dist, logs
from lift.data import hra
from lift.io import jsonl, storage, video
from lift.models import families, integrity
from lift.models.scoring import SCORES, read_items
from lift.train import loop, parallel

log = logging.getLogger(__name__)


@dataclass
class AlignExample:
    id: str
    video: str  # URL
    prompt: str
    weight: float
    reward: float | None  # None for real clips


def _read_scores(url: str) -> dict[str, dict]:
    """Score records by id, each checked: an object with an 'id' (a non-empty string, as `jsonl.read` checks) and
    a 'reward' that is a finite number or null."""
    out = {}
    for n, rec, text in jsonl.read(url, keys=("id",)):
        reward = rec.get("reward", "missing")
        if not (reward is None or (type(reward) in (int, float) and math.isfinite(reward))):
            raise jsonl.JsonlError(url, n, "a score needs an 'id' and a 'reward' that is a finite number or null, "
                                           f"got {text.strip()[:200]}", text)
        out[rec["id"]] = rec
    return out


def _normalise(rewards: list[float], how: str) -> list[float]:
    if how == "none" or not rewards:
        return rewards
    mean = sum(rewards) / len(rewards)
    if how == "mean":
        return [r / mean for r in rewards] if mean > 0 else rewards
    std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5 or 1.0
    return [max(0.0, 1.0 + (r - mean) / std) for r in rewards]  # standardised around 1, never negative


def build_examples(cfg: DictConfig) -> tuple[list[AlignExample], dict]:
    """D_syn (weighted by the objective's variant) and D_real, mixed with weights that keep L unbiased."""
    obj = cfg.objective
    manifest = storage.join(cfg.rollouts, hra.MANIFEST)
    rollouts = read_items(manifest)  # checked line by line; videos may not leave the rollouts folder
    stats = {"rollouts": len(rollouts)}
    if obj.reward_weighting or obj.rejection_sampling:
        scores = _read_scores(storage.join(cfg.scores, SCORES))
        missing = [r.id for r in rollouts if r.id not in scores]
        if missing:
            raise ValueError(f"{cfg.scores}: no score for {len(missing)} rollouts, e.g. {missing[:5]}")
        scored = [(r, scores[r.id]) for r in rollouts if scores[r.id]["reward"] is not None]
        stats["unscored"] = len(rollouts) - len(scored)
        if obj.rejection_sampling:
            kept = [(r, s) for r, s in scored if all(s.get("labels", {}).get(d) == "Good" for d in hra.DIMENSIONS)]
            weights = [1.0] * len(kept)
        else:
            kept = scored
            weights = _normalise([s["reward"] for _, s in kept], obj.reward_norm)
        syn = [AlignExample(r.id, r.url, r.prompt, w, s["reward"]) for (r, s), w in zip(kept, weights)]
        stats["mean_reward"] = round(sum(s["reward"] for _, s in scored) / max(len(scored), 1), 6)
    else:
        syn = [AlignExample(r.id, r.url, r.prompt, 1.0, None) for r in rollouts]
    real = []
    if cfg.real and obj.lambda_real > 0:
        real_manifest = storage.join(cfg.real, hra.MANIFEST)
        real = [AlignExample(f"real/{r.id}", r.url, r.prompt, obj.lambda_real, None) for r in read_items(real_manifest)]
    if not syn and not real:
        raise ValueError(f"{manifest}: nothing to train on (no rollout kept by the objective and no real clips)")
    total = len(syn) + len(real)
    for group in (syn, real):
        for ex in group:
            ex.weight *= total / len(group)
    stats.update(syn=len(syn), real=len(real))
    return syn + real, stats


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


class LatentCache:
    """Latents per video content and embeddings per prompt, for one encoder: OUT/cache/<encoder>/{latents,text}/."""

    def __init__(self, out_url: str, cfg: DictConfig):
        model = cfg.model.name_or_path
        sealed = storage.read_marker(model) or {}
        encoder = _key(cfg.model.family, model, sealed.get("time"), sealed.get("config_hash"),
                       cfg.height, cfg.width, cfg.frames)
        self.url = storage.join(out_url, "cache", encoder)

    def latent_url(self, content_key: str) -> str:
        return storage.join(self.url, "latents", f"{content_key}.safetensors")

    def text_url(self, prompt: str) -> str:
        return storage.join(self.url, "text", f"{_key(prompt)}.safetensors")

    def fill(self, examples: list[AlignExample], pipe, family, cfg: DictConfig, runtime: dist.Runtime) -> list[str]:
        """Encode what is missing (each rank a strided share); returns every example's latent URL. A clip larger
        than the family's VAE tile is encoded in tiles (`Family.fit_vae`)."""
        family.fit_vae(pipe.vae, cfg.height, cfg.width)
        mine = range(runtime.rank, len(examples), runtime.world_size)
        # Content keys: each rank reads and hashes only its own share, then the ranks swap keys (a video is read
        # once per job for its key, not once per rank: 40k x 5 MB on 64 ranks is 200 GB, not 12.8 TB).
        keys: list[str] = [""] * len(examples)
        for part in dist.all_gather_objects(
                {i: hashlib.sha256(storage.read_bytes(examples[i].video)).hexdigest()[:24] for i in mine}):
            for i, key in part.items():
                keys[i] = key
        have_latents = set(storage.listdir(storage.join(self.url, "latents")))
        have_text = set(storage.listdir(storage.join(self.url, "text")))
        counts = torch.zeros(3, dtype=torch.long)  # vae encodes, text encodes, cache hits
        for i in logs.progress(mine, desc="cache", unit="video"):
            ex, key = examples[i], keys[i]
            if f"{key}.safetensors" in have_latents:
                counts[2] += 1
            else:
                frames = video.read_video(ex.video, cfg.frames, (cfg.height, cfg.width))
                pixels = video.to_float(frames, "CTHW").unsqueeze(0).to(runtime.device)
                with torch.no_grad():
                    latents = family.encode_video(pipe, pixels)[0].float().cpu()
                storage.write_bytes(self.latent_url(key), save_tensors({"latents": latents.contiguous()}))
                have_latents.add(f"{key}.safetensors")
                counts[0] += 1
            name = self.text_url(ex.prompt).rsplit("/", 1)[1]
            if name not in have_text:
                with torch.no_grad():
                    embeds = family.encode_text(pipe, [ex.prompt], runtime.device)[0].float().cpu()
                storage.write_bytes(self.text_url(ex.prompt), save_tensors({"embeds": embeds.contiguous()}))
                have_text.add(name)
                counts[1] += 1
        if torch_dist.is_initialized():
            torch_dist.all_reduce(counts)
        logs.event(log, "latent cache", vae_encodes=int(counts[0]), text_encodes=int(counts[1]),
                   cache_hits=int(counts[2]), url=self.url)
        self.counts = {"vae_encodes": int(counts[0]), "text_encodes": int(counts[1]), "cache_hits": int(counts[2])}
        return [self.latent_url(k) for k in keys]


class Cached(torch.utils.data.Dataset):
    def __init__(self, examples: list[AlignExample], latent_urls: list[str], cache: LatentCache):
        self.examples, self.latent_urls, self.cache = examples, latent_urls, cache

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        ex = self.examples[i]
        return {"latents": load_tensors(storage.read_bytes(self.latent_urls[i]))["latents"],
                "embeds": load_tensors(storage.read_bytes(self.cache.text_url(ex.prompt)))["embeds"],
                "weight": ex.weight, "reward": ex.reward, "index": i, "id": ex.id}


def collate(items: list[dict]) -> dict:
    return {"latents": torch.stack([i["latents"] for i in items]), "embeds": torch.stack([i["embeds"] for i in items]),
            "weight": torch.tensor([i["weight"] for i in items]),
            "reward": torch.tensor([i["reward"] if i["reward"] is not None else float("nan") for i in items]),
            "index": [i["index"] for i in items], "ids": [i["id"] for i in items]}


def weighted_loss(per_sample: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    """The batch mean of w_i * l_i; an example of weight 0 contributes no gradient at all."""
    weight = batch["weight"].to(per_sample.device)
    reward = batch["reward"]
    rewarded = ~torch.isnan(reward)
    metrics = {"loss_unweighted": per_sample.detach().mean().item(),
               "mean_reward": float(reward[rewarded].mean()) if rewarded.any() else 0.0}
    return (weight * per_sample).mean(), metrics


@dataclass
class TrainedPipeline:
    """The aligned pipeline as `parallel.export` saves it: the base pipeline's model_index.json and the trained
    transformer, with every other component of the base joining it unchanged and never loaded (`copies`)."""

    base: str  # the base pipeline's local folder (a hub snapshot, or lift's cache of a remote folder)
    transformer: torch.nn.Module
    copies: dict[str, str]  # component -> the folder it is copied from

    def save_pretrained(self, folder: str) -> None:
        shutil.copy2(os.path.join(self.base, "model_index.json"), folder)
        self.transformer.save_pretrained(os.path.join(folder, "transformer"))


def frozen_components(base_url: str, base: str, out: str) -> dict[str, str]:
    """Where the export copies each component of the base pipeline but the transformer from: the base's own
    folders where they share the export's object store (copied server-side: the text encoder alone, 4.8B parameters
    for CogVideoX and 5.7B for Wan, would otherwise be uploaded again by every run), else `base`, the local copy of
    `base_url` that training read; that copy too if the folder at `base_url` is no longer the version it holds
    (rewritten during the run: the export keeps the components the transformer was trained with)."""
    with open(os.path.join(base, "model_index.json")) as f:
        index = json.load(f)
    names = [n for n, entry in index.items() if n != "transformer" and isinstance(entry, list) and entry[0] is not None]
    remote = (storage.protocol_of(base_url) != "file" and storage.same_store(base_url, out)
              and models.cached_path(base_url)[0] == base)
    return {name: storage.join(base_url if remote else base, name) for name in names}


def export(transformer, cfg: DictConfig, runtime: dist.Runtime, base: str) -> str:
    """The full pipeline in diffusers layout at OUT/model: the base pipeline (`base`: the local folder training read
    the base from) with the trained transformer, stored in the dtype the base transformer is stored in. Rank 0 holds
    one copy of the transformer's weights (the gathered ones, cast one by one, become the parameters of a
    transformer built empty) and loads nothing else."""
    url = storage.join(cfg.out, "model")

    def build(weights):
        skeleton, stored = models.t2v_skeleton(cfg.model.family, base)
        trained = parallel.assign(skeleton, weights, stored.dtype)
        return [TrainedPipeline(base, trained, frozen_components(cfg.model.name_or_path, base, url))], {}

    return parallel.export(transformer, url, "align-model", build, runtime,
                           base=cfg.model.name_or_path, family=cfg.model.family)


def make_loss_fn(pipe, family, seed: int, device: torch.device, caption_dropout: float = 0.0,
                 empty: torch.Tensor | None = None) -> loop.LossFn:
    """`loop.fit`'s loss: the family's objective, noise (and whether the caption is dropped for `empty`, the
    empty prompt's embeddings) drawn per example from (seed, step, example index)."""

    def loss_fn(model, batch, step):
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + step * 100_019 + i) for i in batch["index"]]
        embeds = batch["embeds"].to(device)
        if caption_dropout > 0:
            dropped = (families.per_sample_uniform(generators) < caption_dropout).to(device)
            embeds = torch.where(dropped[:, None, None], empty.to(device, embeds.dtype), embeds)
        per_sample = family.loss(pipe, model, batch["latents"].to(device), embeds, generators)
        return weighted_loss(per_sample, batch)

    return loss_fn


def check(cfg: DictConfig) -> None:
    """The rollouts, scores and real clips (every line, every rollout scored) and the base model's folder; the
    runner checks the checkpoints a rerun would resume from."""
    build_examples(cfg)
    integrity.check_folder(cfg.model.name_or_path, "model.name_or_path")


def run(cfg: DictConfig) -> dict:
    runtime = dist.init()
    family = families.get(cfg.model.family)
    examples, stats = build_examples(cfg)
    logs.event(log, "alignment data", **stats)
    # The transformer trains from float32 weights (FSDP2's policy or autocast computes in bf16): it is built empty,
    # sharded, and each rank reads only its shard (parallel.EmptyModel). The encoders, which only fill the latent
    # cache, load straight into the family's compute dtypes on the device.
    base = models.local_dir(cfg.model.name_or_path)  # one version of the base for the whole run
    skeleton, weights = models.t2v_skeleton(cfg.model.family, base)
    built = parallel.EmptyModel(skeleton)
    pipe = models.load_t2v(cfg.model.family, base,
                           dtype=dist.compute_dtype(runtime.device, cfg.trainer.mixed_precision),
                           device=runtime.device, trust_remote_code=cfg.model.trust_remote_code, transformer=skeleton)
    cache = LatentCache(cfg.out, cfg)
    latent_urls = cache.fill(examples, pipe, family, cfg, runtime)
    empty = None
    if cfg.caption_dropout > 0:
        with torch.no_grad():
            empty = family.encode_text(pipe, [""], runtime.device)[0].float()
    dist.barrier()
    pipe.vae.to("cpu")
    pipe.text_encoder.to("cpu")
    transformer = pipe.transformer
    transformer.train()
    if cfg.trainer.activation_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer = parallel.shard_model(transformer, family.blocks(transformer), runtime, cfg.trainer,
                                       lambda m: built.materialise(m, runtime.device, weights))
    loss_fn = make_loss_fn(pipe, family, cfg.trainer.seed, runtime.device, cfg.caption_dropout, empty)
    fingerprint = {"base": cfg.model.name_or_path, "family": cfg.model.family,
                   "objective": OmegaConf.to_container(cfg.objective), "shape": [cfg.frames, cfg.height, cfg.width],
                   "caption_dropout": cfg.caption_dropout}
    counts = loop.fit(model=transformer, dataset=Cached(examples, latent_urls, cache), collate=collate,
                       loss_fn=loss_fn, cfg=cfg.trainer, out_url=cfg.out, fingerprint=fingerprint, runtime=runtime)
    export(transformer, cfg, runtime, base)
    return {**counts, **stats, **cache.counts}
