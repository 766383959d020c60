"""`lift base`: make the toy world's base text-to-video model, one worth aligning.

The tiny zoo's CogVideoX is random. A base model is made the way real ones are, from imperfect data: the VAE is
trained to reconstruct toy clips, its latents are rescaled to unit variance (the `scaling_factor` real VAEs ship
with), and the transformer is fine-tuned without rewards (`lift align` with `objective.reward_weighting=false`) on
the whole rated toy set, defects included, so it makes flawed clips at a measurable rate that alignment can lower.
A trained VAE is reused while the start's VAE, the data and the VAE settings stay the same: a new transformer in
the start pipeline trains only the transformer again.

    lift base                      # RUN/base from RUN/models/cogvideox and RUN/data (~25 min, 2 cores)
    lift base start=RUN/models/cogvideox-toy train=false   # the shipped toy base, as `lift pipeline` does
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile

import torch
from omegaconf import DictConfig, OmegaConf

from lift import config, models, stages
from lift.core import dist, logs
from lift.data import hra
from lift.io import storage, video
from lift.models import integrity
from lift.models.scoring import read_items
from lift.stages import runner
from lift.train import loop

log = logging.getLogger(__name__)


class Clips(torch.utils.data.Dataset):
    def __init__(self, urls: list[str], frames: int, size: int):
        self.urls, self.frames, self.size = urls, frames, size

    def __len__(self) -> int:
        return len(self.urls)

    def __getitem__(self, i: int) -> torch.Tensor:
        return video.to_float(video.read_video(self.urls[i], self.frames, self.size), "CTHW")


def _stack(items: list[torch.Tensor]) -> dict:
    return {"pixels": torch.stack(items), "ids": []}


def train_vae(cfg: DictConfig, pipe, urls: list[str], runtime: dist.Runtime) -> dict:
    """Reconstruction (MSE) with a small KL term, through the shared training loop."""
    vae = pipe.vae.to(runtime.device)
    vae.train()

    def loss_fn(model, batch, step):
        pixels = batch["pixels"].to(runtime.device)
        posterior = model.encode(pixels).latent_dist
        recon = model.decode(posterior.sample()).sample
        mse = torch.nn.functional.mse_loss(recon, pixels)
        return mse + cfg.kl_weight * posterior.kl().mean(), {"mse": mse.item()}

    counts = loop.fit(model=vae, dataset=Clips(urls, cfg.frames, cfg.size), collate=_stack, loss_fn=loss_fn,
                       cfg=cfg.vae, out_url=storage.join(cfg.work, "vae"), runtime=runtime,
                       fingerprint={"start": cfg.start, "frames": cfg.frames, "size": cfg.size})
    vae.eval()
    with torch.no_grad():
        sample = torch.stack([Clips(urls, cfg.frames, cfg.size)[i] for i in range(min(16, len(urls)))])
        std = float(vae.encode(sample.to(runtime.device)).latent_dist.mode().std())
    vae.register_to_config(scaling_factor=1.0 / std)
    logs.event(log, "vae trained", latent_std=round(std, 4), **counts)
    return {"vae_steps": counts["steps"], "latent_std": round(std, 4)}


OURS = (storage.MARKER, storage.STARTED, "config.yaml")  # our markers and saved run configs, not model content


def folder_digest(folder: str) -> str:
    """The content of a local model folder: relative paths and bytes."""
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if name not in OURS:
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, folder).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def check(cfg: DictConfig) -> None:
    """The start pipeline's folder, and with train=true every line of the data manifest."""
    integrity.check_folder(cfg.start, "start")
    if cfg.train:
        read_items(storage.join(cfg.data, hra.MANIFEST))


def run(cfg: DictConfig) -> dict:
    runtime = dist.init()
    if runtime.distributed:
        raise ValueError("lift base trains a few-MB toy model: run it as one process, not under torchrun")
    if not cfg.train:
        storage.save_folder(models.local_dir(cfg.start), cfg.out)
        logs.event(log, "base: taken as it is", start=cfg.start, out=cfg.out)
        return {"trained": 0}
    manifest = storage.join(cfg.data, hra.MANIFEST)
    urls = [item.url for item in read_items(manifest)]
    start = models.local_dir(cfg.start)
    # The VAE's training depends on the start's VAE, the data and its own settings only: a VAE trained before is
    # reused when just the start's transformer or text encoder changed.
    stage1 = storage.join(cfg.work, "stage1")
    vae_hash = config.config_hash(OmegaConf.merge(
        OmegaConf.masked_copy(cfg, ["data", "frames", "size", "kl_weight", "vae"]),
        {"start_vae": folder_digest(os.path.join(start, "vae")), "data_sealed": storage.seal(cfg.data)}))
    if not storage.is_complete(stage1, vae_hash):
        torch.manual_seed(cfg.vae.seed)
        pipe = models.load_t2v("cogvideox", cfg.start)
        counts = train_vae(cfg, pipe, urls, runtime)
        with storage.writing_folder(stage1) as tmp:
            pipe.save_pretrained(tmp)
        storage.write_marker(stage1, "base-vae", vae_hash, counts)
    vae_marker = storage.read_marker(stage1)
    # the transformer is trained in the start pipeline with the trained VAE in it
    with_vae = storage.join(cfg.work, "start")
    with_vae_hash = config.config_hash(OmegaConf.create({"start": folder_digest(start), "vae": vae_marker["time"]}))
    transformer = storage.join(cfg.work, "transformer")
    if not storage.is_complete(with_vae, with_vae_hash):
        storage.remove(transformer)  # checkpoints of a transformer trained from another start pipeline
        with tempfile.TemporaryDirectory(prefix="lift-base-") as tmp:
            local = os.path.join(tmp, "pipeline")
            shutil.copytree(start, local, ignore=shutil.ignore_patterns(*OURS))
            shutil.rmtree(os.path.join(local, "vae"))
            shutil.copytree(os.path.join(models.local_dir(stage1), "vae"), os.path.join(local, "vae"),
                            ignore=shutil.ignore_patterns(*OURS))
            storage.save_folder(local, with_vae)
        storage.write_marker(with_vae, "base-start", with_vae_hash, {})
    overrides = [f"run={cfg.run}", f"model.name_or_path={with_vae}", f"rollouts={cfg.data}", "real=null",
                 "objective.reward_weighting=false", f"caption_dropout={cfg.caption_dropout}", f"out={transformer}",
                 f"frames={cfg.frames}", f"height={cfg.size}", f"width={cfg.size}"]
    align_cfg = OmegaConf.merge(stages.load("align", None, overrides), {"trainer": cfg.transformer})
    align_counts = runner.run_stage("align", align_cfg)
    storage.save_folder(models.local_dir(storage.join(transformer, "model")), cfg.out)
    return {**vae_marker["counts"], "transformer_steps": align_counts["steps"], "clips": len(urls)}
