"""`lift plan`: per-rank memory of the real recipes, from the real models sharded over a fake process group,
checked against the analytic counts."""

import math

import pytest

from lift import cli, stages
from lift.launch import plan
from lift.models import real

ALIGN_8 = "configs/cluster/align-cogvideox-2b-8gpu.yaml"
ALIGN_32 = "configs/cluster/align-cogvideox-2b-4x8gpu.yaml"
CRITIC = "configs/cluster/critic-qwen2.5-vl-7b.yaml"


def _rank0_shard(model, world, trainable_only=False):
    """FSDP2 shards dim 0 in world-size chunks, rank 0 holding the first (largest) one."""
    return sum(math.ceil(p.shape[0] / world) * math.prod(p.shape[1:]) for p in model.parameters()
               if p.requires_grad or not trainable_only)


@pytest.mark.parametrize("config,world", [(ALIGN_8, 8), (ALIGN_32, 32)])
def test_cogvideox_2b_align_plan_matches_the_analytic_count(config, world):
    cfg = stages.load("align", config, [])
    p = plan.plan("align", cfg, world, 80)
    local = _rank0_shard(real.transformer("cogvideox-2b"), world)
    assert p.parameters == p.trainable == 1_693_783_872
    assert p.local_parameters == p.local_trainable == local
    assert abs(local - 1_693_783_872 / world) / local < 1e-3, "sharding splits the model evenly"
    assert p.bytes["parameters"] == 4 * local and p.bytes["gradients"] == 4 * local
    assert p.bytes["optimizer"] == 8 * local
    # 49 frames at 480x720: 13 latent frames of 60x90, 2x2 patches -> 17550 video tokens, plus 226 text tokens
    per_layer = cfg.trainer.batch_size * (13 * 30 * 45 + 226) * 1920
    assert cfg.trainer.activation_checkpointing and p.bytes["activations"] == 2 * per_layer * 30 + 34 * per_layer
    assert p.fits and p.max_batch_size >= cfg.trainer.batch_size


def test_critic_7b_lora_plan_shards_the_frozen_base_and_trains_only_adapters():
    cfg = stages.load("critic", CRITIC, [])
    p = plan.plan("critic", cfg, 8, 80)
    # r=128 adapters on q,k,v,o,gate,up,down of 28 layers: r * (in + out) each
    per_layer = 128 * ((3584 + 3584) + 2 * (3584 + 512) + (3584 + 3584) + 3 * (3584 + 18944))
    assert p.trainable == 28 * per_layer == 322_961_408
    assert p.parameters == 8_292_166_656 + p.trainable
    assert p.bytes["optimizer"] == 8 * p.local_trainable and p.bytes["gradients"] == 4 * p.local_trainable
    assert abs(p.local_parameters - p.parameters / 8) / p.local_parameters < 1e-2
    assert p.fits


def test_cli_prints_the_plan_and_fails_a_job_that_does_not_fit(capsys):
    assert cli.main(["plan", "align", "--config", ALIGN_8, "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "THUDM/CogVideoX-2b on 8 ranks" in out and "of 74.5 GiB: fits" in out
    assert cli.main(["plan", "align", "trainer.activation_checkpointing=false", "--config", ALIGN_8,
                     "--gpu-memory", "80GiB"]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "set trainer.activation_checkpointing=true" in out


def test_a_model_without_a_published_config_is_named(capsys):
    assert cli.main(["plan", "align", "model.name_or_path=acme/video-9b", "--config", ALIGN_8]) == 1
    assert "model.name_or_path='acme/video-9b'" in capsys.readouterr().err


def test_without_fsdp_every_rank_holds_the_whole_model():
    """`trainer.fsdp=false` (DDP) is planned as it runs: the whole model, its gradients and AdamW state on every
    rank, nothing gathered, and FSDP the advice when that does not fit."""
    cfg = stages.load("align", ALIGN_8, ["trainer.fsdp=false"])
    p = plan.plan("align", cfg, 8, 80)
    assert p.local_parameters == p.local_trainable == p.parameters == 1_693_783_872
    assert p.bytes["parameters"] == p.bytes["gradients"] == 4 * p.parameters
    assert p.bytes["optimizer"] == 8 * p.parameters and p.bytes["gathered blocks"] == 0
    small = plan.plan("align", cfg, 8, 24)  # 25 GiB of weights, gradients and AdamW state alone
    assert not small.fits and any(a.startswith("set trainer.fsdp=true") for a in small.advice)
