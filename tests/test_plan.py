"""`lift plan`: per-rank memory of the real recipes, from the real models sharded over a fake process group,
checked against the analytic counts."""

import math
from pathlib import Path

import pytest

from lift import cli, stages
from lift.launch import plan
from lift.models import real

ALIGN_8 = "configs/cluster/align-cogvideox-2b-8gpu.yaml"
ALIGN_32 = "configs/cluster/align-cogvideox-2b-4x8gpu.yaml"
CRITIC = "configs/cluster/critic-qwen2.5-vl-7b.yaml"
H100 = 80e9 / 2 ** 30  # `--gpu-memory 80GB`, in GiB
SCALING = Path(__file__).resolve().parents[1] / "docs" / "SCALING.md"


def _rank0_shard(model, world, trainable_only=False):
    """FSDP2 shards dim 0 in world-size chunks, rank 0 holding the first (largest) one."""
    return sum(math.ceil(p.shape[0] / world) * math.prod(p.shape[1:]) for p in model.parameters()
               if p.requires_grad or not trainable_only)


@pytest.mark.parametrize("config,world", [(ALIGN_8, 8), (ALIGN_32, 32)])
def test_cogvideox_2b_align_plan_matches_the_analytic_count(config, world):
    cfg = stages.load("align", config, [])
    p = plan.plan("align", cfg, world, H100)
    assert p.render() in SCALING.read_text(), "docs/SCALING.md quotes the plan as `lift plan` prints it"
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


# Qwen2.5-VL-7B-Instruct's published parameters, and its r=128 adapters on q,k,v,o,gate,up,down of 28 layers:
# r * (in + out) each
QWEN_7B = 8_292_166_656
LORA_7B = 28 * 128 * ((3584 + 3584) + 2 * (3584 + 512) + (3584 + 3584) + 3 * (3584 + 18944))


def test_critic_7b_lora_plan_shards_the_frozen_base_in_bf16_and_trains_only_adapters():
    """The frozen base is held in the bf16 it computes in and is published in, the adapters in fp32
    (`parallel.shard_model`)."""
    cfg = stages.load("critic", CRITIC, [])
    p = plan.plan("critic", cfg, 8, H100)
    assert p.render() in SCALING.read_text(), "docs/SCALING.md quotes the plan as `lift plan` prints it"
    assert p.trainable == LORA_7B == 322_961_408
    assert p.parameters == QWEN_7B + p.trainable
    assert p.bytes["parameters"] == 2 * (p.local_parameters - p.local_trainable) + 4 * p.local_trainable
    assert p.bytes["optimizer"] == 8 * p.local_trainable and p.bytes["gradients"] == 4 * p.local_trainable
    assert abs(p.local_parameters - p.parameters / 8) / p.local_parameters < 1e-2
    assert p.fits
    # computing in fp32, FSDP still holds the frozen base in the published bf16 and casts it as it gathers it;
    # without FSDP it is held in fp32
    fp32 = plan.plan("critic", stages.load("critic", CRITIC, ["trainer.mixed_precision=fp32"]), 8, H100)
    assert fp32.local_parameters == p.local_parameters and fp32.bytes["parameters"] == p.bytes["parameters"]
    ddp32 = plan.plan("critic", stages.load("critic", CRITIC, ["trainer.mixed_precision=fp32", "trainer.fsdp=false"]),
                      8, H100)
    assert ddp32.bytes["parameters"] == 4 * (QWEN_7B + LORA_7B)


def test_critic_7b_lora_fits_on_every_rank_whole_under_ddp():
    """Without FSDP a rank holds the whole 7B critic: 2 bytes per frozen parameter, 4 (and 12 of gradients and AdamW
    state) per adapter parameter, nothing gathered; 24 GiB in all, inside an 80 GB card (74.5 GiB)."""
    p = plan.plan("critic", stages.load("critic", CRITIC, ["trainer.fsdp=false"]), 8, H100)
    assert p.local_parameters == p.parameters and p.local_trainable == p.trainable == LORA_7B
    assert p.bytes["parameters"] == 2 * QWEN_7B + 4 * LORA_7B
    assert p.bytes["gradients"] == 4 * LORA_7B and p.bytes["gathered blocks"] == 0
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
