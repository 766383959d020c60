"""The real architectures of the cluster recipes, built from the shipped published configs (lift/models/real.py):
full depth on the meta device, and real width with 1-2 blocks for a forward pass on CPU."""

import pytest
import torch

from lift.models import real

# parameter counts of the published models (transformer of a T2V pipeline; the whole VLM for a critic)
FULL = {"cogvideox-2b": 1_693_783_872, "cogvideox-5b": 5_570_283_072, "wan2.1-1.3b": 1_418_996_800,
        "wan2.1-14b": 14_288_491_584, "qwen2.5-vl-7b": 8_292_166_656, "qwen2-vl-2b": 2_208_985_600}


@pytest.mark.parametrize("name", list(FULL))
def test_full_depth_builds_on_the_meta_device_at_the_published_size(name):
    model = real.critic(name) if name in real.CRITICS else real.transformer(name)
    assert real.parameters(model) == FULL[name]
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize("name", ["cogvideox-2b", "cogvideox-5b", "wan2.1-1.3b", "wan2.1-14b"])
def test_reduced_depth_keeps_the_real_width(name):
    full, cut = real.transformer(name), real.transformer(name, layers=1)
    assert cut.config.num_layers == 1 and full.config.num_layers > 1
    for key in ("num_attention_heads", "attention_head_dim", "patch_size", "in_channels", "out_channels"):
        assert cut.config[key] == full.config[key], key
    assert len(cut.transformer_blocks if hasattr(cut, "transformer_blocks") else cut.blocks) == 1
    per_block = (real.parameters(full) - real.parameters(cut)) / (full.config.num_layers - 1)
    assert real.parameters(cut) - per_block > 0, "what is not a block (embeddings, norm, projection) is kept"


def test_cogvideox_2b_block_runs_on_cpu_at_real_width():
    """One real-width CogVideoX-2b block (30 heads x 64, sincos positions, 226 text tokens) on a small latent."""
    torch.manual_seed(0)
    model = real.transformer("cogvideox-2b", layers=1, device="cpu").eval()
    latents = torch.randn(1, 2, 16, 8, 12)  # (B, latent frames, channels, H/8, W/8)
    text = torch.randn(1, model.config.max_text_seq_length, model.config.text_embed_dim)
    with torch.no_grad():
        out = model(hidden_states=latents, encoder_hidden_states=text, timestep=torch.tensor([500])).sample
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert out.std() > 0.1, "a random transformer's output is not constant"


def test_qwen2_vl_critic_reads_a_video_at_real_width():
    """A 1-layer Qwen2-VL-2B critic (real hidden size, heads, vision patching and merge) over a 2x56x56 video."""
    torch.manual_seed(0)
    model = real.critic("qwen2-vl-2b", layers=1, vision_layers=1, device="cpu").float().eval()
    cfg = model.config
    assert cfg.text_config.num_hidden_layers == 1 and cfg.vision_config.depth == 1
    assert cfg.text_config.hidden_size == 1536 and cfg.vision_config.patch_size == 14
    grid = torch.tensor([[1, 4, 4]])  # temporal patches x rows x columns of 14x14 patches
    merge = cfg.vision_config.spatial_merge_size ** 2
    pixels = torch.randn(int(grid.prod()), 3 * cfg.vision_config.temporal_patch_size * 14 * 14)
    tokens = int(grid.prod()) // merge
    ids = torch.tensor([[cfg.vision_start_token_id, *[cfg.video_token_id] * tokens, cfg.vision_end_token_id,
                         100, 200, 300]])
    kinds = torch.tensor([[0, *[2] * tokens, 0, 0, 0, 0]])  # the processor's mm_token_type_ids: 2 marks video
    with torch.no_grad():
        with_video = model(input_ids=ids, mm_token_type_ids=kinds, pixel_values_videos=pixels,
                           video_grid_thw=grid).logits
        other = model(input_ids=ids, mm_token_type_ids=kinds, pixel_values_videos=pixels.flip(0),
                      video_grid_thw=grid).logits
    assert with_video.shape == (1, ids.shape[1], cfg.text_config.vocab_size)
    assert not torch.allclose(with_video[0, -1], other[0, -1]), "the answer depends on the video"


def test_random_weights_are_drawn_by_the_models_own_initialisation():
    """Built off the meta device, a real-width model holds the weights its class's initialisation draws (as the
    hub's `from_config` would give), not uninitialised memory: the critic's every matrix N(0, initializer_range),
    norms 1 and biases 0, its rotary frequencies restored; the T5 encoder's scale of each weight by its fan-in."""
    torch.manual_seed(0)
    model = real.critic("qwen2-vl-2b", layers=1, vision_layers=1, device="cpu")
    std = model.config.text_config.initializer_range
    for name, p in model.state_dict().items():  # the tied head once more
        if p.dim() > 1:
            assert abs(float(p.std()) - std) < 0.02 * std and abs(float(p.mean())) < 0.01 * std, name
        else:
            assert torch.equal(p, torch.full_like(p, 0.0 if name.endswith("bias") else 1.0)), name
    head_dim = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
    theta = model.config.text_config.rope_parameters["rope_theta"]
    expected = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    torch.testing.assert_close(model.model.language_model.rotary_emb.inv_freq, expected)

    encoder = real.text_encoder("cogvideox-5b", layers=1, vocab_size=300, device="cpu")
    c = encoder.config
    scales = {"shared": 1.0, "embed_tokens": 1.0, ".q.": (c.d_model * c.d_kv) ** -0.5, ".k.": c.d_model ** -0.5,
              ".v.": c.d_model ** -0.5, ".o.": (c.num_heads * c.d_kv) ** -0.5, ".wi_0.": c.d_model ** -0.5,
              ".wi_1.": c.d_model ** -0.5, ".wo.": c.d_ff ** -0.5, "relative_attention_bias": c.d_model ** -0.5}
    for name, p in encoder.state_dict().items():  # its embeddings also as encoder.embed_tokens
        if p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name  # the layer norms
            continue
        [scale] = [s for key, s in scales.items() if key in f".{name}"]
        assert abs(float(p.std()) - scale) < 0.05 * scale, name


def test_qwen2_5_vl_7b_cut_keeps_window_attention_and_a_full_attention_block():
    model = real.critic("qwen2.5-vl-7b", layers=2, vision_layers=2)
    vision, text = model.config.vision_config, model.config.text_config
    assert (text.num_hidden_layers, vision.depth, vision.fullatt_block_indexes) == (2, 2, [1])
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (3584, 28, 4)
    assert vision.window_size == 112 and vision.hidden_size == 1280


def test_unknown_model_and_missing_file_are_named():
    with pytest.raises(ValueError, match="unknown real model 'cogvideox-9b'"):
        real.config("cogvideox-9b")
    with pytest.raises(FileNotFoundError, match="wan2.1-14b: no scheduler/scheduler_config.json"):
        real.config("wan2.1-14b", "scheduler/scheduler_config.json")
