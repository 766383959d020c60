"""Sharded loading (torchtitan's way) under torchrun with 2 ranks on CPU: a model is built on the meta device,
adapted and sharded, and each rank reads only its shard. A 1.6 GB critic at Qwen2-VL-2B's real width is loaded
with each rank's peak memory measured; the loaded critic and the tiny zoo models compute and hold exactly what
the plain one-process load (`from_pretrained`, then peft with the same seed) gives; loaded to compute in bf16 (a
GPU's dtype), the tiny critic holds its frozen base in bf16 and trains as the bf16 model does; saved in bf16 and
loaded to compute in float32 (this CPU), it holds its frozen base in bf16 and trains as the float32 model does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torchrun_load import FAMILIES, TOKENS, critic_batch, critic_config, t2v_inputs

from lift import models
from lift.models import families, real
from lift.stages import critic
from lift.train import parallel

WORKER = Path(__file__).with_name("torchrun_load.py")
STORED_BF16 = "critic-bf16"


@pytest.fixture(scope="module")
def loaded(zoo_dir, tmp_path_factory) -> Iterator[tuple[Path, Path, int]]:
    """(worker output, the real-width critic's folder, its bytes of float32 weights), after one 2-rank run."""
    root = tmp_path_factory.mktemp("sharded-load")
    real_dir = root / "qwen2-vl-2b"
    model = real.critic("qwen2-vl-2b", layers=2, vision_layers=2)  # the 2B's width, 2+2 blocks, on meta
    model.to_empty(device="cpu")
    model.tie_weights()  # its lm_head is the embeddings: the file holds them once
    generator = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(real_dir)
    total = sum(p.numel() * p.element_size() for p in model.parameters())  # the tied lm_head counted once
    del model
    shutil.copytree(f"{zoo_dir}/critic", root / STORED_BF16)  # the tiny critic saved in bfloat16
    models.load_critic(f"{zoo_dir}/critic", dtype=torch.bfloat16)[0].save_pretrained(root / STORED_BF16)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
           str(root), zoo_dir, str(real_dir), str(root / STORED_BF16)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    yield root, real_dir, total
    shutil.rmtree(root)


@pytest.mark.slow
def test_each_rank_holds_half_of_a_1gb_model_while_loading(loaded):
    root, _, total = loaded
    assert total > 1.5e9
    for rank in (0, 1):
        r = json.loads((root / f"rank{rank}.json").read_text())
        assert r["differs"] == 0.0, "the shard holds the file's rows"
        assert r["tied"], "the lm_head still shares the embeddings"
        assert abs(r["local"] - total / 2) < 0.01 * total, "the shard is half the model"
        # the shard, plus reads of at most parallel.READ_BYTES, buffers, LoRA adapters and allocator slack: never
        # the whole model (the plain load's peak is all of it, 1.6 GB, on every rank)
        assert r["local"] * 0.9 < r["peak"] < r["local"] + parallel.READ_BYTES + 100e6, r


@pytest.mark.slow
def test_sharded_real_critic_computes_as_the_plainly_loaded_one(loaded):
    from transformers import AutoModelForImageTextToText

    root, real_dir, _ = loaded
    plain = AutoModelForImageTextToText.from_pretrained(real_dir)
    with torch.no_grad():
        expected = plain(input_ids=TOKENS).logits
    torch.testing.assert_close(torch.load(root / "real.pt"), expected, rtol=1e-5, atol=1e-5)


def _plain_lora_critic(path: str):
    """The critic folder `path` loaded whole in one process (`from_pretrained`) and given the recipe's LoRA by peft,
    seeded as the critic stage seeds it."""
    cfg = critic_config(path)
    model, _ = models.load_critic(path)
    torch.manual_seed(cfg.trainer.seed)
    return critic.adapt(model, cfg)


@pytest.mark.slow
def test_zoo_critic_loads_as_before_lora_adapters_included(loaded, zoo_dir):
    """Before sharded loading, the critic stage loaded the whole model, seeded and applied peft: same values."""
    root = loaded[0]
    got = torch.load(root / "zoo.pt")["critic"]
    model = _plain_lora_critic(f"{zoo_dir}/critic")
    expected = model.state_dict()
    assert got["weights"].keys() == expected.keys() and any("lora_A" in k for k in expected)
    assert all(torch.equal(got["weights"][k], expected[k]) for k in expected)
    torch.testing.assert_close(got["loss"], model(**critic_batch(f"{zoo_dir}/critic")).loss.detach(), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_zoo_transformers_load_as_before(loaded, zoo_dir, name):
    """Weights equal the pipeline's own; the loss (sincos table, rotary frequencies: buffers) is the same."""
    got = torch.load(loaded[0] / "zoo.pt")[name]
    pipe = models.load_t2v(name, f"{zoo_dir}/{name}")
    expected = pipe.transformer.state_dict()
    assert got["weights"].keys() == expected.keys()
    assert all(torch.equal(got["weights"][k], expected[k]) for k in expected)
    family = families.get(name)
    latents, embeds, generators = t2v_inputs(pipe, family)
    with torch.no_grad():
        loss = family.loss(pipe, pipe.transformer, latents, embeds, generators)
    torch.testing.assert_close(got["loss"], loss, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_on_a_gpu_the_frozen_base_is_held_in_bf16_and_trains_as_the_bf16_model(loaded, zoo_dir):
    """With bfloat16 compute (a GPU's), the critic's frozen weights are stored in bfloat16 (`parallel.keep_frozen_in`:
    half the memory, and the values the compute used anyway) and its LoRA adapters in float32 (AdamW's master
    weights), in the same FSDP2 units. One forward and backward over the 2 ranks gives the loss and adapter gradients
    of the same model with its parameters cast to bfloat16 in one process, which is what FSDP2's
    MixedPrecisionPolicy computes with."""
    got = torch.load(loaded[0] / "bf16.pt")
    trained = set(got["grads"])
    assert any("lora_B" in n for n in trained) and all("lora_" in n for n in trained)
    assert {n for n, dtype in got["dtypes"].items() if dtype == torch.float32} == trained
    assert {n for n, dtype in got["dtypes"].items() if dtype == torch.bfloat16} == set(got["dtypes"]) - trained
    assert got["differs"] == 0.0, "each frozen shard holds the file's rows in bfloat16"
    model = _plain_lora_critic(f"{zoo_dir}/critic").eval()
    for p in model.parameters():  # FSDP2's param_dtype casts parameters, not buffers (rotary frequencies)
        p.data = p.data.to(torch.bfloat16)
    loss = model(**critic_batch(f"{zoo_dir}/critic")).loss
    loss.backward()
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-3, atol=0)  # bf16 rounding, summed differently
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == trained
    mine = torch.cat([got["grads"][n].flatten() for n in sorted(trained)])
    expected = torch.cat([grads[n].float().flatten() for n in sorted(trained)])
    assert expected.norm() > 0 and (mine - expected).norm() < 1e-2 * expected.norm()


@pytest.mark.slow
def test_a_bf16_checkpoint_keeps_its_frozen_base_in_bf16_and_trains_as_in_float32(loaded):
    """Computing in float32 (this CPU) from a checkpoint stored in bfloat16 (as the published critics are), FSDP2
    holds the frozen weights in bfloat16, half the bytes per shard, and casts them to float32 as it gathers them
    (`parallel.shard_model`): one forward and backward over the 2 ranks gives the loss and adapter gradients of the
    model loaded whole in float32 in one process, as nothing is rounded that the file did not round."""
    root = loaded[0]
    got = torch.load(root / "stored-bf16.pt")
    trained = set(got["grads"])
    assert any("lora_B" in n for n in trained) and all("lora_" in n for n in trained)
    assert {n for n, dtype in got["dtypes"].items() if dtype == torch.float32} == trained
    assert {n for n, dtype in got["dtypes"].items() if dtype == torch.bfloat16} == set(got["dtypes"]) - trained
    assert got["differs"] == 0.0, "each frozen shard holds the file's rows"
    model = _plain_lora_critic(str(root / STORED_BF16)).eval()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    loss = model(**critic_batch(str(root / STORED_BF16))).loss
    loss.backward()
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == trained and any(float(g.abs().max()) > 0 for g in grads.values())
    for n in trained:
        torch.testing.assert_close(got["grads"][n], grads[n], rtol=1e-4, atol=1e-6)
