"""Rollouts and reward-weighted alignment: deterministic generation for both families, the objective's weights and
FSDP2 parity of 2 ranks vs 1 process; exact resume after SIGKILL, the latent cache and the exported pipeline are
tests/test_reliability_crash.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lift import models, stages
from lift.data import prompts
from lift.io import storage, video
from lift.models import families, sampling
from lift.stages import align, runner

PROMPTS = [{"id": "p0", "prompt": "a red circle moves left on a blue background"},
           {"id": "p1", "prompt": "a green square moves up on a black background"}]
SAMPLING = ["sampling.steps=2", "sampling.frames=9", "sampling.height=32", "sampling.width=32", "batch_size=2"]
TRAIN = ["trainer.max_steps=4", "trainer.batch_size=2", "trainer.checkpoint_every=2", "trainer.num_workers=0",
         "trainer.log_every=1", "trainer.warmup_steps=1", "trainer.lr=1e-3", "frames=9"]


def _write_rollouts(root: str, zoo_dir: str, family: str = "cogvideox") -> str:
    storage.write_text(f"{root}/prompts.jsonl", "".join(json.dumps(p) + "\n" for p in PROMPTS))
    cfg = stages.load("generate", None, [f"prompts={root}/prompts.jsonl", f"out={root}/rollouts",
                                         f"model.family={family}", f"model.name_or_path={zoo_dir}/{family}",
                                         "videos_per_prompt=2", *SAMPLING])
    runner.run_stage("generate", cfg)
    return f"{root}/rollouts"


def _write_scores(rollouts: str, scores: str, rewards: dict[str, float]) -> None:
    lines = []
    for r in (json.loads(x) for x in storage.read_text(f"{rollouts}/manifest.jsonl").splitlines()):
        good = rewards[r["id"]] >= 0.9
        labels = {d: "Good" if good else "Bad" for d in ("semantic", "motion", "fidelity")}
        lines.append(json.dumps({"id": r["id"], "video": r["video"], "prompt": r["prompt"], "labels": labels,
                                 "reward": rewards[r["id"]]}))
    storage.write_text(f"{scores}/scores.jsonl", "\n".join(lines) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_generation_is_deterministic_per_video(family, zoo_dir, tmp_path):
    rollouts = _write_rollouts(str(tmp_path / "a"), zoo_dir, family)
    manifest = [json.loads(x) for x in storage.read_text(f"{rollouts}/manifest.jsonl").splitlines()]
    assert sorted(m["id"] for m in manifest) == ["p0-000", "p0-001", "p1-000", "p1-001"]
    first = manifest[0]
    assert first["seed"] == sampling.video_seed(0, first["prompt_id"], first["index"])
    settings = stages.load("generate", None, SAMPLING).sampling
    pipe = sampling.load_pipeline(family, f"{zoo_dir}/{family}", settings, torch.device("cpu"))
    second = manifest[1]
    batched = sampling.sample(pipe, family, [first["prompt"], second["prompt"]], [first["seed"], second["seed"]],
                              settings, torch.device("cpu"))
    alone = sampling.sample(pipe, family, [first["prompt"]], [first["seed"]], settings, torch.device("cpu"))[0]
    # batched float math may round a pixel differently, never more
    assert np.abs(alone.astype(int) - batched[0].astype(int)).max() <= 2, "a video does not depend on its batch"
    assert video.read_video(f"{rollouts}/{first['video']}").shape == alone.shape
    again = _write_rollouts(str(tmp_path / "b"), zoo_dir, family)
    for m in manifest:
        assert storage.read_bytes(f"{rollouts}/{m['video']}") == storage.read_bytes(f"{again}/{m['video']}")
    other = sampling.sample(pipe, family, [first["prompt"]], [first["seed"] + 1], settings, torch.device("cpu"))[0]
    assert not np.array_equal(alone, other)


@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_export_copies_the_base_and_stores_the_transformer_as_the_base_does(family, zoo_dir, tmp_path):
    """The export holds the trained transformer in the base transformer's stored dtype (here bfloat16) and every
    other file of the base pipeline unchanged; it loads as a pipeline of its family."""
    import diffusers
    from safetensors import safe_open

    from lift.core import dist

    base = str(tmp_path / "base")
    pipe = models.load_t2v(family, f"{zoo_dir}/{family}")
    pipe.transformer.to(torch.bfloat16)
    pipe.save_pretrained(base)
    trained = models.load_t2v(family, base).transformer  # float32, as training holds it
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    cfg = stages.load("align", None, [f"out={tmp_path}/align", f"rollouts={tmp_path}/r", f"scores={tmp_path}/s",
                                      f"model.family={family}", f"model.name_or_path={base}"])
    out = align.export(trained, cfg, dist.Runtime(0, 1, 0, torch.device("cpu")), base)
    assert storage.read_marker(out)["stage"] == "align-model"
    copied = sorted(os.path.relpath(os.path.join(d, f), base) for d, _, files in os.walk(base) for f in files
                    if not os.path.relpath(d, base).startswith("transformer"))
    for rel in copied:
        with open(os.path.join(base, rel), "rb") as a, open(os.path.join(out, rel), "rb") as b:
            assert a.read() == b.read(), rel
    with safe_open(f"{out}/transformer/diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    exported = getattr(diffusers, families.get(family).pipeline).from_pretrained(out, dtype=torch.bfloat16)
    weights = exported.transformer.state_dict()
    assert weights.keys() == trained.state_dict().keys()
    assert all(torch.equal(v, trained.state_dict()[k].to(torch.bfloat16)) for k, v in weights.items())


def test_an_export_to_the_store_of_its_base_copies_the_frozen_components_there(zoo_dir, s3_url, tmp_path,
                                                                                 monkeypatch):
    """Base and export on one object store: only model_index.json and the trained transformer are uploaded; the
    VAE, text encoder, tokenizer and scheduler are copied server-side, byte for byte, and the export loads. A base
    rewritten since training read it is not copied: the export keeps the components training used."""
    import diffusers
    import s3fs

    from lift.core import dist

    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache"))
    base_url = f"{s3_url}/base"
    storage.save_folder(f"{zoo_dir}/cogvideox", base_url)
    base = models.local_dir(base_url)
    trained = models.load_t2v("cogvideox", base).transformer
    uploaded, put_file = [], s3fs.S3FileSystem._put_file

    async def recording_put(self, lpath, rpath, *args, **kwargs):
        uploaded.append(rpath.split("/model/", 1)[1])
        return await put_file(self, lpath, rpath, *args, **kwargs)

    def export(out: str) -> str:
        uploaded.clear()
        cfg = stages.load("align", None, [f"out={out}", f"rollouts={tmp_path}/r", f"scores={tmp_path}/s",
                                          "model.family=cogvideox", f"model.name_or_path={base_url}"])
        return align.export(trained, cfg, dist.Runtime(0, 1, 0, torch.device("cpu")), base)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", recording_put)
    out = export(f"{s3_url}/align")
    assert sorted(uploaded) == ["model_index.json", "transformer/config.json",
                                "transformer/diffusion_pytorch_model.safetensors"]
    fs, root = storage.filesystem(base_url)
    frozen = [p[len(root) + 1:] for p in fs.find(root) if "/transformer/" not in p]
    assert {p.split("/")[0] for p in frozen} == {"model_index.json", "scheduler", "text_encoder", "tokenizer", "vae"}
    assert all(storage.read_bytes(f"{out}/{rel}") == storage.read_bytes(f"{base_url}/{rel}") for rel in frozen)
    exported = diffusers.CogVideoXPipeline.from_pretrained(models.local_dir(out))
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in exported.transformer.state_dict().items())

    scheduler = "scheduler/scheduler_config.json"
    trained_with = storage.read_bytes(f"{base_url}/{scheduler}")
    storage.write_bytes(f"{base_url}/{scheduler}", trained_with.replace(b"{", b'{"rewritten": 1, ', 1))
    out = export(f"{s3_url}/align-2")
    assert set(uploaded) == {rel for rel in frozen if rel != "model_index.json"} | {
        "model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"}
    assert storage.read_bytes(f"{out}/{scheduler}") == trained_with


def test_prompt_file_errors(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "a", "prompt": "x"}\n{"id": "a"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: not a"):
        prompts.read_prompts(str(bad))
    bad.write_text("")
    with pytest.raises(ValueError, match="prompt file is empty"):
        prompts.read_prompts(str(bad))
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert prompts.read_prompts(str(txt)) == [{"id": "000001", "prompt": "one"}, {"id": "000003", "prompt": "two"}]


def test_zero_weight_contributes_no_gradient():
    per_sample = torch.tensor([2.0, 3.0, 5.0], requires_grad=True)
    batch = {"weight": torch.tensor([0.0, 1.0, 0.5]), "reward": torch.tensor([0.0, 0.9, float("nan")])}
    loss, metrics = align.weighted_loss(per_sample, batch)
    loss.backward()
    assert per_sample.grad.tolist() == pytest.approx([0.0, 1 / 3, 0.5 / 3])
    assert metrics["mean_reward"] == pytest.approx(0.45) and metrics["loss_unweighted"] == pytest.approx(10 / 3)


def test_zero_reward_batch_leaves_transformer_untouched(zoo_dir):
    from lift.models import families

    pipe = models.load_t2v("cogvideox", f"{zoo_dir}/cogvideox")
    family = families.get("cogvideox")
    latents = torch.randn(2, 3, pipe.transformer.config.in_channels, 8, 8)
    embeds = family.encode_text(pipe, ["a red circle", "a blue square"], "cpu")
    generators = [torch.Generator().manual_seed(i) for i in (1, 2)]
    per_sample = family.loss(pipe, pipe.transformer, latents, embeds, generators)
    assert per_sample.shape == (2,) and torch.isfinite(per_sample).all() and (per_sample > 0).all()
    loss, _ = align.weighted_loss(per_sample, {"weight": torch.zeros(2), "reward": torch.zeros(2)})
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in pipe.transformer.parameters())


def test_caption_dropout_trains_on_the_empty_prompt_for_its_share_of_examples(zoo_dir):
    from lift.models import families

    pipe = models.load_t2v("cogvideox", f"{zoo_dir}/cogvideox")
    family = families.get("cogvideox")
    empty = family.encode_text(pipe, [""], "cpu")[0]
    prompt, other = family.encode_text(pipe, ["a red circle moves left", "two blue squares move up"], "cpu")
    latents = torch.randn(1, 3, pipe.transformer.config.in_channels, 8, 8)

    def per_example(p: float, embeds: torch.Tensor, i: int) -> float:
        loss_fn = align.make_loss_fn(pipe, family, 0, torch.device("cpu"), caption_dropout=p, empty=empty)
        batch = {"latents": latents, "embeds": embeds[None], "weight": torch.ones(1), "reward": torch.zeros(1),
                 "index": [i]}
        with torch.no_grad():
            return loss_fn(pipe.transformer, batch, 3)[0].item()

    # with the caption dropped the loss cannot depend on it; kept, it does
    dropped = [per_example(0.3, prompt, i) == per_example(0.3, other, i) for i in range(40)]
    assert 5 <= sum(dropped) <= 20, sum(dropped)
    assert per_example(0.0, prompt, 0) != per_example(0.0, other, 0)
    with torch.no_grad():  # without dropout no extra number is drawn: runs from before it reproduce exactly
        noise = [torch.Generator().manual_seed(3 * 100_019)]  # seed 0, step 3, example 0, as make_loss_fn seeds it
        direct = family.loss(pipe, pipe.transformer, latents, prompt[None], noise)
    assert per_example(0.0, prompt, 0) == direct[0].item()


def _align_cfg(root: str, zoo: str, *extra: str):
    return stages.load("align", None, [f"rollouts={root}/rollouts", f"scores={root}/scores", f"out={root}/align",
                                       f"model.name_or_path={zoo}/cogvideox", "real=null", *TRAIN, *extra])


def test_objective_variants_build_the_right_weights(zoo_dir, toy_data, tmp_path):
    root = str(tmp_path)
    _write_rollouts(root, zoo_dir)
    _write_scores(f"{root}/rollouts", f"{root}/scores", {"p0-000": 0.9, "p0-001": 0.05, "p1-000": 0.2, "p1-001": 0.9})
    examples, stats = align.build_examples(_align_cfg(root, zoo_dir))
    assert {e.id: round(e.weight, 6) for e in examples} == {"p0-000": 0.9, "p0-001": 0.05, "p1-000": 0.2,
                                                            "p1-001": 0.9}
    rejected, _ = align.build_examples(_align_cfg(root, zoo_dir, "objective.rejection_sampling=true"))
    assert sorted(e.id for e in rejected) == ["p0-000", "p1-001"] and {e.weight for e in rejected} == {1.0}
    plain, _ = align.build_examples(_align_cfg(root, zoo_dir, "objective.reward_weighting=false", "scores=/nowhere"))
    assert {e.weight for e in plain} == {1.0} and len(plain) == 4
    normed, _ = align.build_examples(_align_cfg(root, zoo_dir, "objective.reward_norm=mean"))
    assert sum(e.weight for e in normed) / len(normed) == pytest.approx(1.0)
    mixed, stats = align.build_examples(_align_cfg(root, zoo_dir, f"real={toy_data}/real", "objective.lambda_real=2"))
    syn = [e for e in mixed if e.reward is not None]
    real = [e for e in mixed if e.reward is None]
    n = len(mixed)
    assert stats["real"] == len(real) == 8 and stats["syn"] == 4
    # the batch mean of w * l estimates E_syn[r l] + lambda E_real[l] without bias
    assert sum(e.weight for e in syn) / n == pytest.approx(sum(e.reward for e in syn) / len(syn))
    assert sum(e.weight for e in real) / n == pytest.approx(2.0)


def _torchrun(root: str, model: str, *extra: str, nproc: int = 2, env: dict | None = None):
    args = ["align", f"rollouts={root}/rollouts", f"scores={root}/scores", f"out={root}/align",
            f"model.name_or_path={model}", "real=null", *TRAIN, *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "lift", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _transformer(url: str) -> dict[str, torch.Tensor]:
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel.from_pretrained(models.local_dir(url), subfolder="transformer").state_dict()


@pytest.fixture(scope="module")
def scored_rollouts(zoo_dir, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("rollouts"))
    _write_rollouts(root, zoo_dir)
    _write_scores(f"{root}/rollouts", f"{root}/scores", {"p0-000": 0.9, "p0-001": 0.05, "p1-000": 0.2, "p1-001": 0.9})
    return root


def _copy_inputs(src: str, dst: str) -> None:
    fs, _ = storage.filesystem(dst)
    for name in ("rollouts", "scores"):
        fs.put(f"{src}/{name}/", storage.filesystem(f"{dst}/{name}")[1], recursive=True)


@pytest.mark.slow
def test_two_ranks_match_one_process(scored_rollouts, zoo_dir, hub_cache, tmp_path):
    """The one process reads the base model by its hub id from an offline Hugging Face cache, the two ranks from
    its folder: the same model either way."""
    for name in ("one", "two"):
        _copy_inputs(scored_rollouts, str(tmp_path / name))
    one = _torchrun(str(tmp_path / "one"), "lift-test/cogvideox-toy", "trainer.batch_size=4", nproc=1, env=hub_cache)
    assert one.returncode == 0, one.stderr[-4000:]
    assert storage.read_marker(str(tmp_path / "one/align/model"))["base"] == "lift-test/cogvideox-toy"
    two = _torchrun(str(tmp_path / "two"), f"{zoo_dir}/cogvideox", "trainer.batch_size=2", nproc=2)
    assert two.returncode == 0, two.stderr[-4000:]
    a, b = _transformer(str(tmp_path / "one/align/model")), _transformer(str(tmp_path / "two/align/model"))
    base = _transformer(f"{zoo_dir}/cogvideox")
    assert max(float((a[k] - base[k]).abs().max()) for k in a) > 1e-4, "training moved the weights"
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
