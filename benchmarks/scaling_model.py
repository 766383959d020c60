"""The arithmetic behind docs/SCALING.md: GPU-hours and object-storage bandwidth of the real recipe, from analytic
FLOP counts (the CogVideoX formula of benchmarks/align_step.py, checked there against torch's FLOP counter) and the
assumptions below. A calculator, not a benchmark: it measures nothing and runs in a second.

    .venv/bin/python benchmarks/scaling_model.py            # tables as in docs/SCALING.md
    .venv/bin/python benchmarks/scaling_model.py --mfu 0.45 --peak 989e12

Every assumption is a named constant or option here, so a reader can change one and get the tables again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from align_step import COGVIDEOX_2B, COGVIDEOX_5B, analytic_forward_flops  # noqa: E402

# --- Qwen2.5-VL-7B (config.json of Qwen/Qwen2.5-VL-7B-Instruct) ---------------------------------------------------
LLM = {"hidden": 3584, "intermediate": 18944, "layers": 28, "heads": 28, "kv_heads": 4, "vocab": 152064}
VIT = {"hidden": 1280, "intermediate": 3420, "depth": 32, "patch": 14, "merge": 2, "temporal_patch": 2,
       "window_px": 112, "full_attention_blocks": 4, "out_hidden": 3584}
# 8 frames of 480 x 720, resized by Qwen's rules to multiples of 28: 476 x 728 -> 34 x 52 patches of 14 px
FRAMES, PATCHES_PER_FRAME = 8, 34 * 52
TEXT_TOKENS_TRAIN = 150  # system prompt, caption, LiFT question (~80 tokens), answer "<Label>. <reason>" (~60)
TEXT_TOKENS_SCORE = 90   # the same without the answer
EXAMPLES_PER_ANNOTATION = 3  # one (video, dimension) example per rated dimension
CRITIC_EPOCHS = 20
# --- alignment data (LIFT.md): 40k scored rollouts + 20k real video-caption pairs per epoch -------------------------
SYN, REAL = 40_000, 20_000
ROLLOUTS, SAMPLING_STEPS, CFG = 40_000, 50, 2  # CFG doubles every denoising forward (cond + uncond)
VAE_DECODE_S = 8.0       # assumption: CogVideoX VAE decode of 13 -> 49 frames at 480 x 720 (tiled), H100 seconds
VAE_ENCODE_S = 1.5       # assumption: VAE encode of one 49 x 480 x 720 clip for the latent cache, H100 seconds
VIDEO_MB = 5.0           # a 49-frame 480 x 720 mp4 as generate writes it (crf 4 keeps defects: 2-8 MB)
DECODE_FPS_PER_CORE = 75  # measured ~300 frames/s/core at 240 x 360 (benchmarks/video_loading.py), x 1/4 for 4x pixels


def vit_flops() -> float:
    """Forward FLOPs of the Qwen2.5-VL vision tower for one 8-frame video (frozen in training: forward only)."""
    h, m = VIT["hidden"], VIT["intermediate"]
    groups = FRAMES // VIT["temporal_patch"]
    tokens = groups * PATCHES_PER_FRAME
    per_token = 2 * (4 * h * h + 3 * h * m)  # qkv + proj; SwiGLU MLP
    window = (VIT["window_px"] // VIT["patch"]) ** 2
    windowed = (VIT["depth"] - VIT["full_attention_blocks"]) * 4 * tokens * window * h
    full = VIT["full_attention_blocks"] * groups * 4 * PATCHES_PER_FRAME ** 2 * h
    merged = tokens // VIT["merge"] ** 2
    merger = 2 * merged * ((4 * h) ** 2 + 4 * h * VIT["out_hidden"])
    return VIT["depth"] * tokens * per_token + windowed + full + merger


def video_tokens() -> int:
    return FRAMES // VIT["temporal_patch"] * PATCHES_PER_FRAME // VIT["merge"] ** 2


def llm_forward_flops(tokens: int, logits: int) -> float:
    """Qwen2.5-7B forward over `tokens` tokens, vocabulary logits at `logits` positions, full (not causal-halved)
    attention as an upper bound."""
    d, kv = LLM["hidden"], LLM["hidden"] // LLM["heads"] * LLM["kv_heads"]
    per_layer = 2 * (2 * d * d + 2 * d * kv + 3 * d * LLM["intermediate"])
    attention = 4 * tokens * tokens * d
    return LLM["layers"] * (tokens * per_layer + attention) + 2 * logits * d * LLM["vocab"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peak", type=float, default=989e12, help="bf16 dense peak FLOP/s per GPU (H100 SXM)")
    ap.add_argument("--mfu", type=float, default=0.35, help="model FLOPs utilisation of training")
    ap.add_argument("--inference-mfu", type=float, default=0.40, help="of generation and scoring forwards")
    ap.add_argument("--batch", type=int, default=8, help="alignment samples per GPU per step (LiFT: 8)")
    a = ap.parse_args()
    hours = lambda flops, util: flops / (util * a.peak) / 3600  # noqa: E731

    print(f"assumptions: peak {a.peak / 1e12:.0f} TFLOP/s, training MFU {a.mfu:.0%}, inference MFU "
          f"{a.inference_mfu:.0%}; critic LoRA with activation checkpointing: 3 x forward executed (forward, "
          f"input-gradient backward, recompute), 2 x forward of model FLOPs")
    # --- critic training ---------------------------------------------------------------------------------------
    vit = vit_flops()
    seq = video_tokens() + TEXT_TOKENS_TRAIN
    llm = llm_forward_flops(seq, seq)
    model_per_example = vit + 2 * llm
    hw_per_example = vit + 3 * llm
    print(f"\ncritic example: {video_tokens()} video + {TEXT_TOKENS_TRAIN} text tokens; ViT forward {vit / 1e12:.1f} "
          f"TFLOP, LLM forward {llm / 1e12:.1f} TFLOP; executed {hw_per_example / 1e12:.0f} TFLOP, model "
          f"{model_per_example / 1e12:.0f} TFLOP per example")
    for n in (10_000, 20_000):
        examples = n * EXAMPLES_PER_ANNOTATION * CRITIC_EPOCHS
        gh = hours(examples * model_per_example, a.mfu)
        print(f"  {n:>6} annotations x {EXAMPLES_PER_ANNOTATION} dims x {CRITIC_EPOCHS} epochs = {examples:,} "
              f"examples: {gh:6.0f} GPU-h  ({gh / 8:5.1f} h on 8 GPUs); full fine-tune instead of LoRA: "
              f"{hours(examples * (vit + 3 * llm), a.mfu):5.0f} GPU-h")
    per_ex_s = model_per_example / (a.mfu * a.peak)
    print(f"  per GPU {1 / per_ex_s:.1f} examples/s -> per node of 8: {8 / per_ex_s * VIDEO_MB:.0f} MB/s of video, "
          f"{8 / per_ex_s * 49 / DECODE_FPS_PER_CORE:.0f} cores decoding (49 frames decoded per example)")
    # --- rollouts ----------------------------------------------------------------------------------------------
    print("\nrollouts (generate): 50 steps x CFG (2 transformer forwards per step) + VAE decode")
    for name, cfg in (("CogVideoX-2B", COGVIDEOX_2B), ("CogVideoX-5B", COGVIDEOX_5B)):
        fwd = analytic_forward_flops(cfg, 13, 60, 90, 226)["forward"]
        per_video = SAMPLING_STEPS * CFG * fwd / (a.inference_mfu * a.peak) + VAE_DECODE_S
        total = ROLLOUTS * per_video / 3600
        print(f"  {name}: {SAMPLING_STEPS * CFG * fwd / 1e15:.1f} PFLOP + VAE -> {per_video:.0f} s/video; "
              f"{ROLLOUTS:,} videos: {total:,.0f} GPU-h = " +
              ", ".join(f"{total / g:.1f} h on {g}" for g in (8, 32, 128)))
    # --- scoring -----------------------------------------------------------------------------------------------
    score_seq = video_tokens() + TEXT_TOKENS_SCORE
    ours = vit + 3 * llm_forward_flops(score_seq, 1)
    before = 3 * vit + 3 * llm_forward_flops(score_seq, score_seq)
    s = ours / (a.inference_mfu * a.peak)
    print(f"\nscoring (logits mode, Qwen2.5-VL-7B critic): {ours / 1e12:.0f} TFLOP/video (vision once, last-position "
          f"logits; {before / 1e12:.0f} without) -> {s:.2f} s/video; {ROLLOUTS:,} videos: "
          f"{ROLLOUTS * s / 3600:.1f} GPU-h; per node of 8: {8 / s * VIDEO_MB:.0f} MB/s, "
          f"{8 / s * 49 / DECODE_FPS_PER_CORE:.0f} cores decoding")
    decode_s = 1536 * 15.2e9 / 3.35e12  # 3 x 512 sampled tokens, each reading 15.2 GB of bf16 weights at 3.35 TB/s
    print(f"  LiFT's released scorer shape (3 x 512 sampled tokens per video, batch 1): >= {decode_s:.1f} s/video "
          f"-> {ROLLOUTS * decode_s / 3600:.0f} GPU-h")
    # --- alignment ---------------------------------------------------------------------------------------------
    print(f"\nalignment epoch: {SYN:,} rollouts + {REAL:,} real clips, 49 x 480 x 720, activation checkpointing, "
          f"batch {a.batch}/GPU")
    for name, cfg in (("CogVideoX-2B", COGVIDEOX_2B), ("CogVideoX-5B", COGVIDEOX_5B)):
        f = analytic_forward_flops(cfg, 13, 60, 90, 226)
        params = cfg["num_layers"] * (12 * (cfg["num_attention_heads"] * cfg["attention_head_dim"]) ** 2 +
                                      2 * cfg["time_embed_dim"] * 6 * cfg["num_attention_heads"] *
                                      cfg["attention_head_dim"])
        per_sample = 3 * f["forward"] / (a.mfu * a.peak)
        epoch = (SYN + REAL) * per_sample / 3600
        step = a.batch * per_sample
        ckpt_gb = 12 * params / 1e9  # fp32 weights + AdamW's 2 moments, as DCP saves them
        print(f"  {name} (~{params / 1e9:.1f}B in blocks): {3 * f['forward'] / 1e12:.0f} TFLOP/sample "
              f"(+{f['blocks'] / 1e12:.0f} recompute) -> {per_sample:.2f} s/sample, step {step:.1f} s; epoch "
              f"{epoch:.1f} GPU-h = " + ", ".join(f"{epoch / g * 60:.0f} min on {g}" for g in (8, 32, 128)))
        latent_mb = 13 * 16 * 60 * 90 * 4 / 1e6 + 226 * 4096 * 4 / 1e6  # fp32 latents + T5 embeddings
        print(f"    reads {8 * a.batch / step * latent_mb:.0f} MB/s per node of cached latents+embeddings "
              f"({latent_mb:.1f} MB/sample); checkpoint {ckpt_gb:.0f} GB, to upload within one step (async, "
              f"committed at the next step's end): " +
              ", ".join(f"{ckpt_gb / (g // 8) / step:.2f} GB/s per node at {g} GPUs" for g in (8, 32, 128)))
    print(f"  latent cache fill (once; reruns and later epochs: 0): {(SYN + REAL) * VAE_ENCODE_S / 3600:.0f} GPU-h of "
          f"VAE encodes")


if __name__ == "__main__":
    main()
