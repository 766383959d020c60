"""The tiny model zoo: randomly initialised models in exactly the folder layouts of the real checkpoints, built
offline from configs and a seed, so tests and the toy world exercise the same loading, training and export code
as Qwen2.5-VL-7B, CogVideoX-2B and Wan2.1 do on a cluster.

    lift models tiny OUT_URL [--seed 0]   ->  OUT_URL/critic, OUT_URL/cogvideox, OUT_URL/wan, OUT_URL/_SUCCESS
    lift models toy OUT_URL               ->  OUT_URL/critic-toy, OUT_URL/cogvideox-toy (shipped, toy-pretrained)

critic     Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration) with its processor: a byte-level BPE tokenizer trained on
           the LiFT questions, toy prompts, labels and reasons, Qwen's special tokens and chat template, image and
           video processors with patch 4 (a 32 px frame is 8x8 patches, 4x4 = 16 LLM tokens per 2 frames).
cogvideox  CogVideoXPipeline: 4-block transformer (4 heads x 32, patch 2), 3-block VAE (16/32/32 channels,
           16 latent channels as CogVideoX-2B's, 4x spatial and 4x temporal compression), tiny T5 encoder (32 tokens:
           call the pipeline with max_sequence_length=32, as lift's stages do; its default is CogVideoX-2B's 226),
           v-prediction zero-SNR DDIM.
wan        WanPipeline: 4-block transformer (4 heads x 16, patch 1x2x2), Wan VAE with 4x spatial and 4x temporal
           compression and 4 latent channels, tiny UMT5 encoder, UniPC flow-matching scheduler (shift 3).

Frame counts (both VAEs compress time 4x, as the real ones do): CogVideoX generates, encodes and decodes exactly
8k or 8k+1 frames (16 -> 4 latent frames -> 16, 17 -> 5 -> 17; 13 comes back as 16); Wan needs 4k+1 (its pipeline
rounds 16 up to 17, its VAE turns 16 frames into 13). So 9, 17, 25, ... (8k+1) suit both families.
Height and width: multiples of 8 px for CogVideoX (VAE 4 x patch 2), of 16 px for Wan (its pipeline's check).
Qwen2.5-VL places video tokens in time by seconds (tokens_per_second x temporal patch / fps): pass the sampled
frames' fps as `video_metadata` to the processor, else it assumes 24 fps and 8 frames of a 2 s clip share one
temporal position.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import tempfile
import time
from typing import Callable, TypeVar

import torch
from diffusers import (
    AutoencoderKLCogVideoX,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers import models as tokenizer_models
from transformers import (
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from lift import models
from lift.core import logs
from lift.data import hra
from lift.io import storage

log = logging.getLogger(__name__)
T = TypeVar("T")

# --- text the tokenizers are trained on: every word the toy world and LiFT's questions and answers use --------
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan", "magenta", "white", "black",
           "gray", "brown")
SHAPES = ("circle", "square", "triangle", "star", "disk", "ball", "box", "ring")
DIRECTIONS = ("left", "right", "up", "down")
REASONS = (
    "The video matches the prompt.",
    "The {shape} is {colour}, but the prompt asks for a {other} {shape}.",
    "The {shape} moves {direction} instead of {opposite}.",
    "The {shape} stays still although it should move {direction}.",
    "The motion is smooth and natural.",
    "The {shape} jitters from frame to frame.",
    "The video flickers: every other frame is darker.",
    "The video freezes for several frames.",
    "The frames are blurry and the edges are soft.",
    "The colours are washed out and there is a colour cast.",
    "There is heavy noise over the whole frame.",
    "The content is sharp and realistic with minimal artifacts.",
    "I see a {colour} {shape} moving {direction} on a {other} background.",
)
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# Qwen2-VL / Qwen2.5-VL's chat template, verbatim from the released tokenizer_config.json.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

# --- sizes: everything built below comes from these, and their hash seals OUT_URL/_SUCCESS --------------------
SPEC: dict = {
    "critic": {
        "vocab_size": 1024,  # upper bound of the BPE vocabulary, special tokens included
        "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "max_position_embeddings": 4096,
                 # head_dim 32 -> 16 rotary frequencies split over (time, height, width) as Qwen2.5-VL's 16/24/24 of 64
                 "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}},
        # tokens_per_second 4: a temporal patch (2 frames) of a 16-frame 2 s toy clip sampled at 8 fps advances
        # the temporal position by 1 (4 x 2 / 8), at 4 fps by 2 (as Qwen2.5-VL's 2 x 2 / 2 at its 2 fps); with 2,
        # pairs of temporal patches would share a position and the order of frames would be partly lost.
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "patch_size": 4,
                   "spatial_merge_size": 2, "temporal_patch_size": 2, "tokens_per_second": 4,
                   # window = 32 px (4x4 merged tokens, as 112 px is for patch 14); the last block attends globally
                   "window_size": 32, "fullatt_block_indexes": [1]},
        # frames are resized to multiples of 8 px (patch 4 x merge 2) with 16x16 .. 64x64 pixels each
        "pixels": {"min_pixels": 16 * 16, "max_pixels": 64 * 64, "patch_size": 4, "temporal_patch_size": 2,
                   "merge_size": 2},
    },
    "cogvideox": {
        "transformer": {"num_attention_heads": 4, "attention_head_dim": 32, "in_channels": 16, "out_channels": 16,
                        "time_embed_dim": 128, "text_embed_dim": 64, "num_layers": 4, "patch_size": 2,
                        # latent size of a 32x32x17 clip; 32 text tokens hold any toy prompt (CogVideoX-2B: 226,
                        # the pipeline's default, which would make most of a toy example's 290 tokens padding)
                        "sample_height": 8, "sample_width": 8, "sample_frames": 17, "temporal_compression_ratio": 4,
                        "max_text_seq_length": 32},
        "vae": {"block_out_channels": [16, 32, 32], "down_block_types": ["CogVideoXDownBlock3D"] * 3,
                "up_block_types": ["CogVideoXUpBlock3D"] * 3, "latent_channels": 16, "layers_per_block": 1,
                "norm_num_groups": 8, "temporal_compression_ratio": 4, "sample_height": 32, "sample_width": 32,
                "scaling_factor": 1.0},
        "text_encoder": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4,
                         "feed_forward_proj": "gated-gelu", "model_max_length": 32},
        # CogVideoX-2B's scheduler_config.json
        "scheduler": {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                      "clip_sample": False, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                      "set_alpha_to_one": True, "snr_shift_scale": 3.0, "steps_offset": 0,
                      "timestep_spacing": "trailing", "num_train_timesteps": 1000},
    },
    "wan": {
        "transformer": {"patch_size": [1, 2, 2], "num_attention_heads": 4, "attention_head_dim": 16,
                        "in_channels": 4, "out_channels": 4, "text_dim": 64, "freq_dim": 64, "ffn_dim": 128,
                        "num_layers": 4},
        "vae": {"base_dim": 16, "z_dim": 4, "dim_mult": [1, 2, 2], "num_res_blocks": 1,
                "temperal_downsample": [True, True], "latents_mean": [0.0] * 4, "latents_std": [1.0] * 4,
                "scale_factor_temporal": 4, "scale_factor_spatial": 4},
        "text_encoder": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4,
                         "feed_forward_proj": "gated-gelu", "model_max_length": 512},
        # Wan2.1-T2V-1.3B-Diffusers' scheduler_config.json (flow shift 3 for 480p)
        "scheduler": {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0,
                      "num_train_timesteps": 1000, "solver_order": 2, "solver_type": "bh2",
                      "final_sigmas_type": "zero"},
    },
}


def corpus() -> list[str]:
    """Training text of both tokenizers, in a fixed order (the BPE merges depend on it)."""
    lines = list(hra.QUESTIONS.values())
    opposite = dict(zip(DIRECTIONS, ("right", "left", "down", "up")))
    for i, (colour, shape, direction) in enumerate(itertools.product(COLOURS, SHAPES, DIRECTIONS)):
        other = COLOURS[(i + 1) % len(COLOURS)]
        lines.append(f"a {colour} {shape} moves {direction} on a {other} background")
        reason = REASONS[i % len(REASONS)].format(colour=colour, other=other, shape=shape, direction=direction,
                                                  opposite=opposite[direction])
        label = hra.LABELS[i % len(hra.LABELS)]
        lines += [f"{label}. {reason}", f"{reason} {label}."]
    return lines


def spec_hash(seed: int, model: str | None = None) -> str:
    """What the zoo is built from (seed, SPEC, tokenizer corpus); with `model`, that model's part of SPEC only, so
    a shipped model made from it goes stale only when its own part changes."""
    blob = json.dumps({"seed": seed, "spec": SPEC if model is None else SPEC[model], "corpus": corpus()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _seeded(seed: int, make: Callable[[], T]) -> T:
    """Build one module from its own seed, so it does not depend on build order; the caller's RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _qwen_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE over Qwen2's pre-tokenizer, trained on the corpus: any text encodes, the corpus compactly."""
    bpe = Tokenizer(tokenizer_models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=SPEC["critic"]["vocab_size"], special_tokens=list(QWEN_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], eos_token="<|im_end|>",
                          pad_token="<|endoftext|>", unk_token=None, extra_special_tokens=list(QWEN_SPECIALS[1:]))


def _t5_tokenizer(model_max_length: int) -> T5Tokenizer:
    """A Unigram vocabulary (T5's model) of the corpus words plus single characters, so any ASCII text encodes."""
    words = sorted({w for line in corpus() for w in line.replace(".", " ").replace(",", " ").split()})
    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -5.0)]
    vocab += [(c, -10.0) for c in chars] + [("\u2581" + w, -3.0) for w in words]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def build_critic(out_dir: str, seed: int = 0) -> int:
    """A tiny Qwen2.5-VL with its processor in `out_dir`; returns the parameter count."""
    spec = SPEC["critic"]
    tokenizer = _qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = {**spec["text"], "vocab_size": len(tokenizer), "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
    vision = {**spec["vision"], "out_hidden_size": spec["text"]["hidden_size"]}
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = _seeded(seed, lambda: Qwen2_5_VLForConditionalGeneration(config))
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    # The frames a stage passes are already sampled (LiFT: 8 per video), hence no resampling here.
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**spec["pixels"]),
        video_processor=Qwen2VLVideoProcessor(**spec["pixels"], do_sample_frames=False, cap_pixels_per_frame=True),
        tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return _params(model)


def _text_encoder(config_cls: type[PreTrainedConfig], model_cls: type[PreTrainedModel], spec: dict, vocab_size: int,
                  seed: int) -> PreTrainedModel:
    """An encoder-only T5 or UMT5, as CogVideoX and Wan ship theirs (ids: <pad> 0, </s> 1, as the tokenizer)."""
    kwargs = {k: v for k, v in spec.items() if k != "model_max_length"}
    config = config_cls(vocab_size=vocab_size, is_encoder_decoder=False, use_cache=False, pad_token_id=0,
                        eos_token_id=1, **kwargs)
    return _seeded(seed, lambda: model_cls(config))


def build_cogvideox(out_dir: str, seed: int = 0) -> int:
    """A tiny CogVideoX(-2B-like) diffusers pipeline in `out_dir`; returns the parameter count."""
    spec = SPEC["cogvideox"]
    tokenizer = _t5_tokenizer(spec["text_encoder"]["model_max_length"])
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=_text_encoder(T5Config, T5EncoderModel, spec["text_encoder"], len(tokenizer), seed),
        vae=_seeded(seed, lambda: AutoencoderKLCogVideoX(**spec["vae"])),
        transformer=_seeded(seed, lambda: CogVideoXTransformer3DModel(**spec["transformer"])),
        scheduler=CogVideoXDDIMScheduler(**spec["scheduler"]),
    )
    pipe.save_pretrained(out_dir)
    return _params(pipe.text_encoder, pipe.vae, pipe.transformer)


def build_wan(out_dir: str, seed: int = 0) -> int:
    """A tiny Wan2.1 diffusers pipeline in `out_dir`; returns the parameter count."""
    spec = SPEC["wan"]
    tokenizer = _t5_tokenizer(spec["text_encoder"]["model_max_length"])
    transformer = {**spec["transformer"], "patch_size": tuple(spec["transformer"]["patch_size"])}
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=_text_encoder(UMT5Config, UMT5EncoderModel, spec["text_encoder"], len(tokenizer), seed),
        vae=_seeded(seed, lambda: AutoencoderKLWan(**spec["vae"])),
        transformer=_seeded(seed, lambda: WanTransformer3DModel(**transformer)),
        scheduler=UniPCMultistepScheduler(**spec["scheduler"]),
    )
    pipe.save_pretrained(out_dir)
    return _params(pipe.text_encoder, pipe.vae, pipe.transformer)


BUILDERS: dict[str, Callable[[str, int], int]] = {
    "critic": build_critic, "cogvideox": build_cogvideox, "wan": build_wan,
}


def write_tiny(out_url: str, seed: int = 0) -> None:
    """Build every tiny model locally and copy it to OUT_URL/<name>; `_SUCCESS` (hash of SPEC and seed) last.

    A folder already sealed with the same hash is left as it is, like a finished stage.
    """
    digest = spec_hash(seed)
    if storage.is_complete(out_url, digest):
        logs.event(log, "models tiny: already complete, skipping", out=out_url, config_hash=digest)
        return
    storage.remove(storage.join(out_url, storage.MARKER))  # unsealed while its contents change
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="lift-zoo-") as tmp:
        for name, build in BUILDERS.items():
            local = os.path.join(tmp, name)
            counts[f"{name}_params"] = build(local, seed)
            counts[f"{name}_bytes"] = sum(os.path.getsize(os.path.join(d, f))
                                          for d, _, files in os.walk(local) for f in files)
            storage.save_folder(local, storage.join(out_url, name))
    storage.write_marker(out_url, "models", digest, counts, seed=seed)
    logs.event(log, "models tiny: done", out=out_url, **counts)


# --- the toy-pretrained models shipped with lift ---------------------------------------------------------------
PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
"""Made by scripts/make-toy-pretrained.py from the tiny zoo (about an hour on 2 cores), so the first
`lift pipeline` trains neither from random weights: `critic-toy` (the zoo critic pretrained on toy clips and their
captions, then taught to rate on a toy world of its own, as LiFT's critic starts from a pretrained VLM) and
`cogvideox-toy` (a toy base text-to-video pipeline, `lift base`)."""
PROVENANCE = "pretrained.json"  # in each shipped folder: its zoo, the script's arguments, counts, marker fields
TOY_MODELS = {"critic-toy": "critic", "cogvideox-toy": "cogvideox"}
"""Shipped folder -> the zoo model it was trained from."""


def write_toy(out_url: str, seed: int = 0, source: str = PRETRAINED) -> None:
    """Copy the toy-pretrained models shipped in `source` to OUT_URL/critic-toy and OUT_URL/cogvideox-toy, each
    sealed with `_SUCCESS` (a hash of its provenance); a folder sealed with the same hash is left as it is.

    Each was trained from the zoo of `seed` and its model's part of this SPEC: another seed, or a part changed
    since, is an error that says how to make it again.
    """
    for name, zoo_model in TOY_MODELS.items():
        src = os.path.join(source, name)
        provenance = os.path.join(src, PROVENANCE)
        if not os.path.isfile(provenance):
            raise FileNotFoundError(f"{provenance}: the shipped toy model is missing; make it with "
                                    "scripts/make-toy-pretrained.py")
        with open(provenance) as f:
            made = json.load(f)
        expected = spec_hash(seed, zoo_model)
        if made["zoo_seed"] != seed or made["zoo_spec_hash"] != expected:
            raise ValueError(f"{provenance}: made from the zoo of seed {made['zoo_seed']} and spec hash "
                             f"{made['zoo_spec_hash']}, not seed {seed} and {expected} (SPEC['{zoo_model}']); make "
                             f"it again with scripts/make-toy-pretrained.py --models {name}")
        url = storage.join(out_url, name)
        digest = hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:16]
        if storage.is_complete(url, digest):
            logs.event(log, f"models toy: {name} already complete, skipping", out=url, config_hash=digest)
            continue
        storage.save_folder(src, url)
        storage.write_marker(url, "models-toy", digest, made.get("counts", {}), **made.get("marker", {}))
        logs.event(log, f"models toy: {name} done", out=url)


# --- a tiny critic that has seen the toy world: pretrained on toy scenes and their captions -------------------
CAPTION_QUESTION = ("Please describe this video: the subject, its color, shape and number, how it moves, the "
                    "background, and any visual effects.")
"""Asked after a toy prompt that is the clip's own or another, so that the model learns to say what it sees, not
what the text before says, and to look back at the video from as far as the LiFT questions ask from."""
_ATTRIBUTES = ("colour", "shape", "count", "direction", "background")


def _attribute_values() -> dict[str, list]:
    from lift.toy import world

    return {"colour": list(world.COLOURS), "shape": list(world.SHAPES), "count": list(world.COUNTS),
            "direction": list(world.DIRECTIONS), "background": list(world.BACKGROUNDS)}


EFFECTS = {
    "jitter": "It jitters.", "freeze": "It freezes.", "speed": "It speeds up.", "flicker": "It flickers.",
    "noise": "The frames are grainy.", "blur": "The frames are blurry.", "cast": "The frames have a {tint} tint.",
}
"""How a pretraining caption names a visual effect of the clip: what is seen, never how bad it is."""
NO_EFFECT = {"motion": "It moves smoothly.", "fidelity": "The frames are clean."}
"""The answer to a LiFT question about a clip without an effect of that dimension."""


def _effect_names(dimension: str) -> list[str]:
    from lift.toy import world

    return ["none"] + [d.name for d in world.DEFECTS if d.dimension == dimension]


_RGB_TO_YUV = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def _as_stored(frames):
    """uint8 frames (T, H, W, 3) as the stages read them back from mp4: colour at half resolution (yuv420p, BT.601),
    so rendered clips look like the decoded ones (shape edges get the same colour fringes); within about a quarter
    of a level of what `write_video` + `read_video` give."""
    import numpy as np

    matrix = np.asarray(_RGB_TO_YUV)
    yuv = frames.astype(np.float64) @ matrix.T
    t, h, w, _ = yuv.shape
    chroma = yuv[:, :h - h % 2, :w - w % 2, 1:].reshape(t, h // 2, 2, w // 2, 2, 2).mean(axis=(2, 4))
    yuv[:, :h - h % 2, :w - w % 2, 1:] = chroma.repeat(2, axis=1).repeat(2, axis=2)
    return np.clip(np.rint(yuv @ np.linalg.inv(matrix).T), 0, 255).astype(np.uint8)


class _Captions(torch.utils.data.Dataset):
    """Toy clips rendered on the fly with their captions; clip i is a pure function of (seed, i). Frames are
    picked from the clip as `lift.video.read_video` picks them from a file.

    The caption is the scene's prompt; with `effects`, each clip also has, with probability 1/2 each, one motion
    and one fidelity effect of the toy world at a strength drawn uniformly from half its Normal strength to its
    Bad strength, and the caption names it (EFFECTS). With probability `questions` the clip is asked one of
    LiFT's three questions instead, and the answer is what is seen for that dimension alone: the SEEN sentence
    of the scene, the effect's words, or NO_EFFECT. Items: (frames TCHW uint8, answer, scene, effect names, the
    user text: a prompt, the clip's own or half the time another scene's, then the question).
    """

    def __init__(self, count: int, seed: int, frames: int, clip_frames: int, size: int, effects: bool = False,
                 questions: float = 0.0):
        self.count, self.seed, self.frames, self.clip_frames, self.size = count, seed, frames, clip_frames, size
        self.effects, self.questions = effects, questions

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        import numpy as np

        from lift.io import video
        from lift.toy import world

        rng = np.random.default_rng([self.seed, 7, i])
        scene = world.Scene.sample(rng)
        faults, names, words, seen = [], {}, [], {"semantic": world.SEEN.format(caption=scene.prompt)}
        for dimension in ("motion", "fidelity"):
            names[dimension], seen[dimension] = "none", NO_EFFECT[dimension]
            if not self.effects or rng.random() < 0.5:
                continue
            defect = [d for d in world.DEFECTS if d.dimension == dimension][int(rng.integers(4 if dimension ==
                                                                                           "motion" else 3))]
            strength = rng.uniform(defect.normal / 2, defect.bad) * (self.size / 32 if defect.unit == "pixels" else 1)
            strength = float(max(1, round(strength))) if defect.name == "freeze" else strength
            tint = world.CAST_TINTS[int(rng.integers(len(world.CAST_TINTS)))] if defect.name == "cast" else None
            faults.append(world.Fault(defect.name, strength, tint))
            names[dimension] = defect.name
            words.append(EFFECTS[defect.name].format(tint=tint))
            seen[dimension] = words[-1]
        clip = world.render(scene, faults, rng, self.clip_frames, self.size)
        clip = torch.from_numpy(_as_stored(clip[video.uniform_indices(self.clip_frames, self.frames)]))
        caption = " ".join([scene.prompt + ("." if words else ""), *words])
        context = scene.prompt if rng.random() < 0.5 else world.Scene.sample(rng).prompt
        question = CAPTION_QUESTION
        if self.questions and rng.random() < self.questions:
            dimension = hra.DIMENSIONS[int(rng.integers(len(hra.DIMENSIONS)))]
            question = hra.QUESTIONS[dimension]
            caption = seen[dimension]
        return clip.permute(0, 3, 1, 2), caption, scene, names, f"{context} {question}"


class _SceneCollate:
    """Stage 1 batches: the video processor's patches and each clip's scene attributes (and effects) as class
    indices."""

    def __init__(self, processor, effects: bool):
        self.processor, self.values, self.effects = processor, _attribute_values(), effects

    def __call__(self, items: list) -> dict:
        enc = self.processor.video_processor(videos=[item[0] for item in items], return_tensors="pt")
        targets = [[self.values[a].index(getattr(item[2], a)) for a in _ATTRIBUTES] for item in items]
        if self.effects:
            for row, (*_, names, _) in zip(targets, items):
                row += [_effect_names(d).index(names[d]) for d in ("motion", "fidelity")]
        return {"pixel_values_videos": enc["pixel_values_videos"], "video_grid_thw": enc["video_grid_thw"],
                "targets": torch.tensor(targets)}


class _CaptionCollate:
    """Stage 2 batches: chat turns (video, CAPTION_QUESTION) -> caption, loss on the caption only."""

    def __init__(self, processor, fps: float):
        self.processor, self.fps = processor, fps

    def __call__(self, items: list) -> dict:
        from lift.models import critic

        texts = [self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"},
                                          {"type": "text", "text": item[4]}]},
             {"role": "assistant", "content": [{"type": "text", "text": item[1]}]}], tokenize=False)
            for item in items]
        enc = critic.encode(self.processor, texts, [item[0] for item in items], self.fps)
        return {**enc, "labels": critic.answer_labels(enc["input_ids"], self.processor.tokenizer)}


def _scene_loss(visual, heads: torch.nn.ModuleDict, batch: dict) -> torch.Tensor:
    """Cross-entropy of linear probes on the mean of each clip's merged vision tokens, summed over attributes."""
    grid = batch["video_grid_thw"]
    tokens = visual(batch["pixel_values_videos"], grid_thw=grid)
    tokens = getattr(tokens, "pooler_output", tokens)  # merged tokens, (sum of T*H*W/merge^2, hidden)
    merge = visual.spatial_merge_size ** 2
    pooled = torch.stack([t.mean(0) for t in tokens.split((grid.prod(-1) // merge).tolist())])
    return sum(torch.nn.functional.cross_entropy(head(pooled), batch["targets"][:, i])
               for i, head in enumerate(heads.values()))


def _fit(params, loss_of, loader, steps: int, lr: float, what: str, start: float) -> float:
    """AdamW with 5% warmup and cosine decay over `loader`'s batches; returns the mean loss of the last 25 steps."""
    from lift.train.optim import lr_factor

    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_factor, schedule="cosine", warmup=max(1, steps // 20), steps=steps))
    window: list[float] = []
    last = float("nan")
    for step, batch in enumerate(logs.progress(loader, total=steps, desc=what, unit="step"), 1):
        loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        window.append(float(loss.detach()))
        if step % 25 == 0 or step == steps:
            last, window = sum(window) / len(window), []
            logs.event(log, what, step=step, loss=f"{last:.4f}", seconds=round(time.time() - start, 1))
    return last


def pretrain_critic(base_url: str, out_url: str, *, scene_steps: int = 6000, caption_steps: int = 500,
                    scene_lr: float = 3e-3, caption_lr: float = 1e-3, batch_size: int = 32, frames: int = 4,
                    clip_frames: int = 16, clip_fps: float = 8.0, size: int = 32, effects: bool = True,
                    questions: float = 0.5, seed: int = 0, num_workers: int = 1) -> dict:
    """A tiny critic that has seen the toy world before it learns to judge it, as LiFT's critic starts from a
    pretrained VLM: the zoo critic at `base_url` trained on toy clips and their captions, written to `out_url` in
    the same transformers layout and sealed with `_SUCCESS`. A folder sealed by the same arguments and base is kept.

    Stage 1 (`scene_steps`, batches of `batch_size`): the vision tower, with linear probes on its mean merged
    token (discarded afterwards), learns the scene's colour, shape, count, direction and background, and with
    `effects` which motion and fidelity effect the clip shows, as a vision encoder is pretrained before it goes
    into a VLM (a ViT this small learns shapes, motion and textures far faster from direct targets than through a
    language model; it is still improving at 6,000 steps, and a critic from 1,000 never sees grain or blur:
    docs/RESULTS.md). Stage 2 (`caption_steps`, batches of half that): the whole model learns to answer
    CAPTION_QUESTION with the caption ("a red circle moves left on a black background. It flickers."), or with
    probability `questions` a LiFT question with what is seen for that dimension ("The frames are grainy."),
    loss on the answer only. Answers say what is seen; none rates a clip or says how strong an effect is, and
    effect strengths are drawn from a continuous range, not the toy ratings' two levels: rating is left to
    `lift critic`. Clips are `clip_frames` frames of `size` px at `clip_fps`, `frames` of them picked uniformly
    as the critic stages pick them. AdamW, 5% warmup, cosine decay. Returns the marker's counts.
    """
    base_marker = storage.read_marker(base_url) or storage.read_marker(storage.parent(base_url)) or {}
    args = {"scene_steps": scene_steps, "caption_steps": caption_steps, "scene_lr": scene_lr,
            "caption_lr": caption_lr, "batch_size": batch_size, "frames": frames, "clip_frames": clip_frames,
            "clip_fps": clip_fps, "size": size, "effects": effects, "seed": seed, "question": CAPTION_QUESTION,
            "questions": questions}
    digest = hashlib.sha256(json.dumps({"base": [base_url, base_marker.get("config_hash")], **args},
                                       sort_keys=True).encode()).hexdigest()[:16]
    if storage.is_complete(out_url, digest):
        logs.event(log, "pretrain critic: already complete, skipping", out=out_url, config_hash=digest)
        return storage.read_marker(out_url)["counts"]
    storage.remove(storage.join(out_url, storage.MARKER))
    start, cpu = time.time(), time.process_time()
    torch.manual_seed(seed)
    model, processor = models.load_critic(base_url)
    processor.tokenizer.padding_side = "right"
    model.train()

    def loader(stage: int, steps: int, batch: int, collate) -> torch.utils.data.DataLoader:
        clips = _Captions(steps * batch, seed * 1000 + stage, frames, clip_frames, size, effects,
                          questions if stage == 2 else 0.0)
        return torch.utils.data.DataLoader(clips, batch_size=batch, collate_fn=collate, num_workers=num_workers,
                                           multiprocessing_context="fork" if num_workers else None)

    counts: dict = {}
    if scene_steps:
        visual = model.model.visual
        hidden = model.config.vision_config.out_hidden_size
        classes = {a: len(v) for a, v in _attribute_values().items()}
        if effects:
            classes.update({f"{d}_effect": len(_effect_names(d)) for d in ("motion", "fidelity")})
        heads = torch.nn.ModuleDict({a: torch.nn.Linear(hidden, n) for a, n in classes.items()})
        counts["scene_loss"] = round(_fit([*visual.parameters(), *heads.parameters()],
                                          lambda b: _scene_loss(visual, heads, b),
                                          loader(1, scene_steps, batch_size, _SceneCollate(processor, effects)),
                                          scene_steps, scene_lr, "pretrain critic: scenes", start), 5)
    if caption_steps:
        fps = frames * clip_fps / clip_frames  # the rate of the picked frames
        half = max(1, batch_size // 2)
        counts["caption_loss"] = round(_fit(model.parameters(), lambda b: model(**b).loss,
                                            loader(2, caption_steps, half, _CaptionCollate(processor, fps)),
                                            caption_steps, caption_lr, "pretrain critic: captions", start), 5)
    model.eval()
    with storage.writing_folder(out_url) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    counts.update(seconds=round(time.time() - start, 1), cpu_seconds=round(time.process_time() - cpu, 1))
    storage.write_marker(out_url, "critic-pretrain", digest, counts, base=base_url, **args)
    logs.event(log, "pretrain critic: done", out=out_url, **counts)
    return counts
