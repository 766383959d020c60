"""Wan2.1 (Wan-AI/Wan2.1-T2V-1.3B-Diffusers, -14B): UMT5 text, the Wan VAE, flow matching.

The objective is rectified flow as Wan trains it: x_t = (1 - s) x_0 + s noise, predict (noise - x_0), with the
timestep shifted like the model's scheduler (shift 3 at 480p).
"""

from __future__ import annotations

import torch

from lift.models.families import Family, per_sample_noise, per_sample_uniform

TEXT_LENGTH = 512  # UMT5 tokens Wan2.1 is trained with (its pipeline's default)


def encode_text(pipe, prompts: list[str], device) -> torch.Tensor:
    embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device,
                                   max_sequence_length=TEXT_LENGTH)
    return embeds


def encode_video(pipe, video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] pixels -> [B, C', T', H', W'] latents normalised by the VAE's statistics."""
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
    return ((latents - mean) / std).contiguous()


def loss(pipe, transformer, latents: torch.Tensor, embeds: torch.Tensor, generators) -> torch.Tensor:
    b = latents.shape[0]
    noise = per_sample_noise(latents.shape, generators, latents.device, latents.dtype)
    u = per_sample_uniform(generators).to(latents.device)
    shift = getattr(pipe.scheduler.config, "flow_shift", None) or 1.0
    sigma = shift * u / (1 + (shift - 1) * u)
    s = sigma.view(b, 1, 1, 1, 1).to(latents.dtype)
    noisy = (1 - s) * latents + s * noise
    timestep = sigma * pipe.scheduler.config.num_train_timesteps
    out = transformer(hidden_states=noisy, timestep=timestep, encoder_hidden_states=embeds, return_dict=False)[0]
    return ((out.float() - (noise - latents).float()) ** 2).reshape(b, -1).mean(dim=1)


SPEC = Family(
    name="wan", pipeline="WanPipeline", encode_text=encode_text, encode_video=encode_video, loss=loss,
    blocks=lambda transformer: list(transformer.blocks), text_length=lambda pipe: TEXT_LENGTH,
    vae_dtype=torch.float32,  # the Wan reference recipe keeps its VAE in float32
    vae_tiling={"tile_sample_min_height": 256, "tile_sample_min_width": 256,  # AutoencoderKLWan's own tiles
                "tile_sample_stride_height": 192, "tile_sample_stride_width": 192},
)
