"""The text-to-video side at real shapes: the published text-encoder and tokenizer configs, the VAE's tiling decision
and each family's tiled encode against its untiled one, and a real-width pipeline folder
(`lift.models.real.write_t2v`: 1 transformer block, the published VAE, a 1-layer text encoder at real width) run
through `lift generate`, `lift score`, `lift align` (torchrun, 2 ranks) and `lift evaluate` for CogVideoX-2b
(sincos positions), CogVideoX-5b (rotary) and Wan2.1-1.3B (flow matching), at 9 frames of 16x32 (the smallest clip
every VAE, patch size and frame rule admits), with the tiny zoo critic for the scores. Only Wan's align checkpoints
mid-run (it is killed after step 2 and resumed from step 1's checkpoint); CogVideoX's aligns one step.

Prompts, rollouts, scores and evaluation results go through s3:// on the loopback endpoint; the multi-GB model
folders (the base, the align output with its export and checkpoints) stay on local disk, because the moto server
takes objects in at about 50 MB/s, CPU-bound in its request handling (the base folder, 1.1-2.1 GB in float32, is
half a minute per upload; each run's checkpoints as much again). A model folder read from s3:// goes through the
same download-to-cache as the toy models in tests/test_pipeline.py (every model of the run on s3://) and the
real-width critic in tests/test_critic_real.py, and an export to the base's store copies the frozen components
server-side as tests/test_align.py checks.
"""

from __future__ import annotations

import dataclasses
import json

import diffusers
import numpy as np
import pytest
import torch

from lift import cli, models, stages
from lift.io import storage, video
from lift.models import families, real
from lift.stages import runner

# the published encoders' sizes (T5 v1.1 XXL and UMT5-XXL encoders) and their analytic count
ENCODERS = {"cogvideox-2b": 4_762_310_656, "wan2.1-1.3b": 5_680_910_336}
SHAPE = ["sampling.frames=9", "sampling.height=16", "sampling.width=32", "sampling.steps=2"]
PROMPTS = [{"id": "p0", "prompt": "a red circle moves left on a blue background"},
           {"id": "p1", "prompt": "a cat rides a skateboard at sunset"}]


@pytest.mark.parametrize("name", list(ENCODERS))
def test_text_encoder_at_full_depth_has_the_published_size(name):
    cfg = real.config(name, "text_encoder/config.json")
    d, inner, ff, layers = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"], cfg["num_layers"]
    # UMT5 keeps a relative-position bias per layer, T5 one in the first layer
    bias = cfg["relative_attention_num_buckets"] * cfg["num_heads"] * (layers if cfg["model_type"] == "umt5" else 1)
    analytic = cfg["vocab_size"] * d + layers * (4 * d * inner + 3 * d * ff + 2 * d) + bias + d
    model = real.text_encoder(name)
    assert real.parameters(model) == analytic == ENCODERS[name]
    assert {p.device.type for p in model.parameters()} == {"meta"}
    cut = real.text_encoder(name, layers=1, vocab_size=300)
    assert (cut.config.d_model, cut.config.d_ff, cut.config.num_heads, cut.config.num_layers) == (4096, 10240, 64, 1)


@pytest.mark.parametrize("name,length,sentinels", [("cogvideox-5b", 226, 100), ("wan2.1-14b", 512, 300)])
def test_tokenizer_has_the_published_special_tokens_and_text_length(name, length, sentinels):
    tok = real.tokenizer(name)
    assert type(tok).__name__ == real.config(name, "tokenizer/tokenizer_config.json")["tokenizer_class"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    # T5's layout: the sentinels last, <extra_id_0> the highest id
    assert tok.convert_tokens_to_ids([f"<extra_id_{sentinels - 1}>", "<extra_id_0>"]) == [len(tok) - sentinels,
                                                                                         len(tok) - 1]
    ids = tok("A red circle, moves LEFT!", padding="max_length", max_length=tok.model_max_length).input_ids
    assert tok.model_max_length == length and len(ids) == length
    assert tok.unk_token_id not in ids and ids[ids.index(tok.eos_token_id) + 1:] == [0] * (length - ids.index(1) - 1)
    assert tok.decode(ids, skip_special_tokens=True) == "A red circle, moves LEFT!"


def test_a_real_model_without_its_published_files_is_refused_by_name(tmp_path, capsys):
    assert cli.main(["models", "real", "wan2.1-14b", str(tmp_path / "out")]) == 1
    assert "wan2.1-14b: no scheduler/scheduler_config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="qwen2-vl-2b: not a text-to-video model"):
        real.write_t2v("qwen2-vl-2b", str(tmp_path / "out"))


@pytest.mark.parametrize("family", families.NAMES)
def test_vae_is_tiled_and_sliced_only_for_a_clip_larger_than_its_tile(family, zoo_dir):
    spec = families.get(family)
    tile = spec.vae_tiling["tile_sample_min_height"], spec.vae_tiling["tile_sample_min_width"]
    vae = models.load_t2v(family, f"{zoo_dir}/{family}").vae
    assert not spec.fit_vae(vae, *tile) and not vae.use_tiling and not vae.use_slicing
    assert spec.fit_vae(vae, tile[0], tile[1] + 16) and vae.use_tiling and vae.use_slicing
    assert (vae.tile_sample_min_height, vae.tile_sample_min_width) == tile
    assert not spec.fit_vae(vae, 480, 720, tiling=False, slicing=True) and not vae.use_tiling and vae.use_slicing
    assert not spec.fit_vae(vae, 32, 32) and not vae.use_tiling, "a small clip after a large one goes whole again"


def _encode_whole_then_tiled(spec: families.Family, vae, clip: torch.Tensor):
    """`spec.encode_video` of `clip` untiled, then tiled as `spec.fit_vae` decides for its size; returns both latents
    and the (height, width) of every input the VAE's encoder saw in each pass."""
    pipe = type("Pipe", (), {"vae": vae})
    seen: list[tuple[int, int]] = []
    hook = vae.encoder.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    height, width = clip.shape[-2:]
    with torch.no_grad():
        assert not spec.fit_vae(vae, height, width, tiling=False)
        whole = spec.encode_video(pipe, clip)
        whole_seen, seen[:] = set(seen), []
        assert spec.fit_vae(vae, height, width)
        tiled = spec.encode_video(pipe, clip)
    hook.remove()
    return whole, tiled, whole_seen, set(seen)


def test_wan_tiled_encode_matches_the_untiled_encode():
    """The published Wan VAE's layout (8x spatial, 4x temporal compression, causal frames) at reduced channels, with
    the family's tile scaled down by 4 so a 72x72 clip needs four tiles."""
    cfg = {**real.config("wan2.1-1.3b", "vae/config.json"), "base_dim": 4, "num_res_blocks": 1}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = diffusers.AutoencoderKLWan.from_config(cfg).eval()
        clip = torch.rand(1, 3, 5, 72, 72) * 2 - 1  # stationary content: each tile's statistics are the clip's
    wan = families.get("wan")
    spec = dataclasses.replace(wan, vae_tiling={k: v // 4 for k, v in wan.vae_tiling.items()})
    whole, tiled, whole_seen, tiles = _encode_whole_then_tiled(spec, vae, clip)
    assert whole_seen == {(72, 72)}
    assert tiles == {(64, 64), (64, 24), (24, 64), (24, 24)}, "four overlapping tiles, none larger than 64 px"
    assert tiled.shape == whole.shape == (1, 16, 2, 9, 9)
    assert float((tiled - whole).norm() / whole.norm()) < 0.15


def test_cogvideox_tiled_encode_matches_the_untiled_encode():
    """The published CogVideoX VAE's layout (8x spatial, 4x temporal compression) at reduced channels, with the
    family's own tile: diffusers' overlaps (1/6 of its height, 1/5 of its width) keep the tiles on the 8-pixel
    latent grid only at that size (strides of 200 and 288 pixels), and a scaled-down tile is narrower than the
    encoder's receptive field, so every latent would see a tile edge. A 256x392 clip needs four tiles."""
    cfg = {**real.config("cogvideox-2b", "vae/config.json"), "block_out_channels": [4] * 4, "norm_num_groups": 4,
           "layers_per_block": 1}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = diffusers.AutoencoderKLCogVideoX.from_config(cfg).eval()
        clip = torch.rand(1, 3, 5, 256, 392) * 2 - 1  # stationary content: each tile's statistics are the clip's
    spec = families.get("cogvideox")
    whole, tiled, whole_seen, tiles = _encode_whole_then_tiled(spec, vae, clip)
    assert whole_seen == {(256, 392)}
    assert tiles == {(240, 360), (240, 104), (56, 360), (56, 104)}, "four overlapping tiles, none over 240x360"
    assert tiled.shape == whole.shape == (1, 2, 16, 32, 49)
    assert float((tiled - whole).norm() / whole.norm()) < 0.15


# ------------------------------------------------------------------------------------- every stage at real width


def _transformer_weights(name: str, folder: str) -> dict[str, torch.Tensor]:
    cls = getattr(diffusers, real.config(name, "transformer/config.json")["_class_name"])
    return cls.from_pretrained(folder, subfolder="transformer").state_dict()


def _check_flow_matching_loss(pipe, spec: families.Family) -> None:
    """Wan's objective at real shapes in bf16 (the VAE in float32): finite and positive for the transformer, zero
    for a model that predicts the true velocity (noise - x0) from the noisy latents and the timestep it is given."""
    with torch.no_grad():
        latents = spec.encode_video(pipe, torch.rand(1, 3, 9, 16, 32) * 2 - 1).to(torch.bfloat16)
        embeds = torch.randn(1, spec.text_length(pipe), pipe.transformer.config.text_dim, dtype=torch.bfloat16)
        loss = spec.loss(pipe, pipe.transformer, latents, embeds, [torch.Generator().manual_seed(0)])

        def oracle(hidden_states, timestep, encoder_hidden_states, return_dict):
            s = (timestep / pipe.scheduler.config.num_train_timesteps).view(-1, 1, 1, 1, 1)
            noise = (hidden_states.float() - (1 - s) * latents.float()) / s
            return (noise - latents.float(),)

        exact = spec.loss(pipe, oracle, latents, embeds, [torch.Generator().manual_seed(0)])
    assert latents.shape == (1, 16, 3, 2, 4) and torch.isfinite(loss).all() and float(loss) > 0.1
    assert float(exact) < 1e-3 * float(loss)


def _align(torchrun_lift, name: str, base: str, s3: str, out: str, steps: int, checkpoint_every: int,
           env: dict | None = None):
    """No warmup: the first step already moves each weight by about the learning rate (Adam's first step)."""
    return torchrun_lift("align", f"rollouts={s3}/rollouts", f"scores={s3}/scores", f"out={out}", "real=null",
                         f"model.family={real.t2v_family(name)}", f"model.name_or_path={base}", "frames=9",
                         "height=16", "width=32", f"trainer.max_steps={steps}", "trainer.batch_size=1",
                         f"trainer.checkpoint_every={checkpoint_every}", "trainer.num_workers=0",
                         "trainer.log_every=1", "trainer.warmup_steps=0", "trainer.lr=1e-2", env=env)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cogvideox-2b", "cogvideox-5b", "wan2.1-1.3b"])
def test_generate_align_evaluate_at_real_width(name, zoo_dir, s3_url, torchrun_lift, tmp_path):
    """generate -> score (zoo critic) -> align (torchrun, 2 ranks) -> evaluate (base vs the aligned export). Wan's
    align is killed after step 2, before that step's checkpoint, and resumed from step 1's; CogVideoX's runs one
    step, with no checkpoint before the final one (resume is Wan's to check)."""
    family = real.t2v_family(name)
    spec = families.get(family)
    base = str(tmp_path / name)
    assert cli.main(["models", "real", name, base]) == 0
    storage.write_text(f"{s3_url}/prompts.jsonl", "".join(json.dumps(p) + "\n" for p in PROMPTS))

    runner.run_stage("generate", stages.load("generate", None, [
        f"prompts={s3_url}/prompts.jsonl", f"out={s3_url}/rollouts", f"model.family={family}",
        f"model.name_or_path={base}", "videos_per_prompt=1", "batch_size=2", *SHAPE]))
    rollouts = [json.loads(x) for x in storage.read_text(f"{s3_url}/rollouts/manifest.jsonl").splitlines()]
    clips = [video.read_video(f"{s3_url}/rollouts/{r['video']}").numpy() for r in rollouts]
    assert [c.shape for c in clips] == [(9, 16, 32, 3)] * 2
    assert not np.array_equal(clips[0], clips[1]) and all(c.std() > 1 for c in clips)

    runner.run_stage("score", stages.load("score", None, [
        f"rollouts={s3_url}/rollouts", f"critic={zoo_dir}/critic", f"out={s3_url}/scores", "batch_size=2"]))

    out = str(tmp_path / "align")
    steps, checkpoint_every = (2, 1) if family == "wan" else (1, 0)
    if family == "wan":
        crashed = _align(torchrun_lift, name, base, s3_url, out, steps, checkpoint_every,
                         env={"LIFT_FAULT_KILL_AT_STEP": "2", "LIFT_FAULT_RANK": "1"})
        assert crashed.returncode != 0
    done = _align(torchrun_lift, name, base, s3_url, out, steps, checkpoint_every)
    assert done.returncode == 0, done.stderr[-4000:]
    if family == "wan":
        assert "resumed from checkpoint" in done.stderr and "vae_encodes=0" in done.stderr
    else:
        assert "vae_encodes=2" in done.stderr and "text_encodes=2" in done.stderr
    assert storage.read_marker(out)["counts"]["steps"] == steps
    trained, start = _transformer_weights(name, f"{out}/model"), _transformer_weights(name, base)
    assert max(float((trained[k].float() - start[k]).abs().max()) for k in start) > 5e-3, "training moved it"
    if family == "wan":
        export = diffusers.WanPipeline.from_pretrained(f"{out}/model", dtype=spec.dtypes(torch.bfloat16))
        assert export.transformer.dtype == export.text_encoder.dtype == torch.bfloat16
        assert export.vae.dtype == spec.vae_dtype == torch.float32
        _check_flow_matching_loss(export, spec)

    runner.run_stage("evaluate", stages.load("evaluate", None, [
        f"prompts={s3_url}/prompts.jsonl", f"out={s3_url}/eval", f"base.family={family}",
        f"base.name_or_path={base}", f"aligned.family={family}", f"aligned.name_or_path={out}/model",
        f"critic={zoo_dir}/critic", "videos_per_prompt=1", "batch_size=2", "score_batch_size=4", *SHAPE]))
    results = storage.read_json(f"{s3_url}/eval/results.json")
    assert results["comparison"]["pairs"] == 2
    assert all(0.05 <= v["reward"] <= 0.9 for v in results["videos"])
    base_clip = video.read_video(f"{s3_url}/eval/videos/base/p0-000.mp4").numpy()
    aligned_clip = video.read_video(f"{s3_url}/eval/videos/aligned/p0-000.mp4").numpy()
    assert base_clip.shape == aligned_clip.shape == (9, 16, 32, 3)
    assert not np.array_equal(base_clip, aligned_clip), "the aligned transformer samples another video"
