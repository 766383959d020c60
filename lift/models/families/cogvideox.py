"""CogVideoX (THUDM/CogVideoX-2b and -5b): T5 text, a 3D VAE, v-prediction on a zero-SNR DDPM schedule.

The objective is the model's own fine-tuning recipe (diffusers' CogVideoX training example): predict the clean
latents through the scheduler's velocity, weighted by 1 / (1 - alpha_bar_t).
"""

from __future__ import annotations

import torch

from lift.models.families import Family, per_sample_noise, per_sample_uniform


def text_length(pipe) -> int:
    return pipe.transformer.config.max_text_seq_length


def encode_text(pipe, prompts: list[str], device) -> torch.Tensor:
    embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device,
                                   max_sequence_length=text_length(pipe))
    return embeds


def encode_video(pipe, video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] pixels -> [B, T', C', H', W'] scaled latents (the distribution's mean: deterministic)."""
    latents = pipe.vae.encode(video.to(pipe.vae.dtype)).latent_dist.mode() * pipe.vae.config.scaling_factor
    return latents.permute(0, 2, 1, 3, 4).contiguous()


def loss(pipe, transformer, latents: torch.Tensor, embeds: torch.Tensor, generators) -> torch.Tensor:
    scheduler = pipe.scheduler
    b, frames, _, h, w = latents.shape
    noise = per_sample_noise(latents.shape, generators, latents.device, latents.dtype)
    steps = scheduler.config.num_train_timesteps
    t = (per_sample_uniform(generators) * steps).long().clamp(max=steps - 1).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    rotary = None
    if transformer.config.use_rotary_positional_embeddings:
        scale = pipe.vae_scale_factor_spatial
        rotary = pipe._prepare_rotary_positional_embeddings(h * scale, w * scale, frames, latents.device)
    out = transformer(hidden_states=noisy, encoder_hidden_states=embeds, timestep=t, image_rotary_emb=rotary,
                      return_dict=False)[0]
    predicted = scheduler.get_velocity(out, noisy, t)  # v-prediction -> the clean latents
    alpha_bar = scheduler.alphas_cumprod.to(latents.device)[t]
    weight = (1.0 / (1.0 - alpha_bar)).view(b, 1, 1, 1, 1)
    return (weight * (predicted.float() - latents.float()) ** 2).reshape(b, -1).mean(dim=1)


SPEC = Family(
    name="cogvideox", pipeline="CogVideoXPipeline", encode_text=encode_text, encode_video=encode_video, loss=loss,
    blocks=lambda transformer: list(transformer.transformer_blocks), text_length=text_length,
    # diffusers' tile for the published VAE: half its 480x720 sample size (its overlap factors are diffusers')
    vae_tiling={"tile_sample_min_height": 240, "tile_sample_min_width": 360},
)
