"""The shared training loop: FSDP2 parity of 2 ranks vs 1 process, exact resume, non-finite losses."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lift.config.schema import TrainerConfig
from lift.core import dist
from lift.io import storage
from lift.train import loop, optim, sampler
from lift.train.checkpoint import TrainState

WORKER = Path(__file__).with_name("torchrun_train.py")


def _run(out: str, result: Path, *overrides: str, nproc: int = 1, env: dict | None = None):
    cmd = [sys.executable, str(WORKER), out, str(result), *overrides]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *cmd[1:]]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


def _weights(result: Path) -> dict[str, torch.Tensor]:
    return torch.load(result, weights_only=True)["weights"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_global_batch_sampler_splits_global_batches_by_rank():
    one = sampler.GlobalBatchSampler(20, 4, 0, 1, seed=3)
    r0, r1 = (sampler.GlobalBatchSampler(20, 2, r, 2, seed=3) for r in (0, 1))
    assert [a + b for a, b in zip(r0, r1)] == list(one)
    one.set_position(epoch=1, start=2)
    assert len(list(one)) == 3 and list(one) != list(sampler.GlobalBatchSampler(20, 4, 0, 1, seed=3))[2:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        sampler.GlobalBatchSampler(3, 2, 0, 2, seed=0)


@pytest.mark.parametrize("schedule,warmup,cycles", [("cosine", 3, 1), ("cosine_with_restarts", 2, 3),
                                                      ("constant", 4, 1), ("cosine", 0, 1)])
def test_schedules_equal_transformers_at_every_step(schedule, warmup, cycles):
    from transformers import get_scheduler

    cfg = TrainerConfig(lr=0.5, warmup_steps=warmup, warmup_ratio=0.0, schedule=schedule, num_cycles=cycles)
    ours, theirs = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr) for _ in range(2))
    name = {"constant": "constant_with_warmup"}.get(schedule, schedule)
    extra = {"num_cycles": cycles} if schedule == "cosine_with_restarts" else {}
    reference = get_scheduler(name, theirs, num_warmup_steps=warmup, num_training_steps=20,
                              scheduler_specific_kwargs=extra)
    scheduler = optim.build_scheduler(ours, cfg, steps=20)
    lrs = []
    for _ in range(22):
        lrs.append(ours.param_groups[0]["lr"])
        assert lrs[-1] == theirs.param_groups[0]["lr"]
        scheduler.step()
        reference.step()
    assert lrs[warmup] == 0.5 and lrs[20] == (0.5 if schedule == "constant" else 0.0)


class _TiedHead(torch.nn.Module):
    """Frozen embeddings tied to the head (as Qwen2-VL's) around one trainable layer."""

    def __init__(self):
        super().__init__()
        self.embed, self.mid, self.head = torch.nn.Embedding(50, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 50)
        self.head.weight = self.embed.weight
        self.embed.weight.requires_grad_(False)
        self.head.bias.requires_grad_(False)

    def forward(self, ids):
        return self.head(self.mid(self.embed(ids)))


def test_a_checkpoint_of_a_partly_frozen_model_holds_only_what_trains():
    """Frozen weights come from the base model, under every name a tied one has; a resume restores the rest."""
    torch.manual_seed(0)
    model = _TiedHead()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.tensor([1, 2])), torch.tensor([3, 4])).backward()
    opt.step()
    state = TrainState(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), trainable_only=True)
    saved = state.state_dict()
    assert set(saved["model"]) == {"mid.weight", "mid.bias"}
    torch.manual_seed(1)
    fresh = _TiedHead()
    fresh.embed.weight.data.copy_(model.embed.weight)
    fresh.head.bias.data.copy_(model.head.bias)
    opt2 = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    TrainState(fresh, opt2, torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0),
               trainable_only=True).load_state_dict(saved)
    assert _max_diff(fresh.state_dict(), model.state_dict()) == 0
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_sharded_blocks_are_gathered_for_their_use_and_the_last_kept_into_the_backward():
    """`parallel.shard_model` over 2 ranks (torch's fake process group, in this process): after the forward each
    block but the last holds only its shard again (a DTensor parameter), the last still holds its gathered weight,
    which the backward uses first; after the backward every block is sharded."""
    import torch.distributed as torch_dist
    from torch.distributed.tensor import DTensor
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from lift.train import parallel

    torch_dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        model = torch.nn.Sequential(*(torch.nn.Linear(8, 8) for _ in range(4)))
        runtime = dist.Runtime(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
        parallel.shard_model(model, list(model)[:3], runtime, TrainerConfig())
        loss = model(torch.randn(2, 8)).square().sum()
        assert [isinstance(block.weight, DTensor) for block in model[:3]] == [True, True, False]
        loss.backward()
        assert all(isinstance(block.weight, DTensor) for block in model[:3])
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The result of an uninterrupted 2-rank run, batch_size=4 per rank: the reference of the parity and resume
    tests."""
    root = tmp_path_factory.mktemp("two-ranks")
    double = _run(str(root / "two"), root / "two.pt", "batch_size=4", nproc=2)
    assert double.returncode == 0, double.stderr[-3000:]
    return root / "two.pt"


@pytest.mark.slow
def test_two_rank_fsdp_matches_one_process(tmp_path, two_ranks):
    single = _run(str(tmp_path / "one"), tmp_path / "one.pt", "batch_size=8")
    assert single.returncode == 0, single.stderr[-3000:]
    assert _max_diff(_weights(tmp_path / "one.pt"), _weights(two_ranks)) < 1e-5
    accum = _run(str(tmp_path / "acc"), tmp_path / "acc.pt", "batch_size=2", "grad_accum=2", nproc=2)
    assert accum.returncode == 0, accum.stderr[-3000:]
    assert torch.load(tmp_path / "acc.pt", weights_only=True)["counts"]["steps"] == 8
    assert _max_diff(_weights(tmp_path / "one.pt"), _weights(tmp_path / "acc.pt")) < 1e-5


@pytest.mark.slow
def test_stop_and_resume_gives_identical_weights(tmp_path, s3_url, two_ranks):
    """Over s3://; the same resume over file:// is tests/test_reliability_crash.py's. The TensorBoard scalars of
    both runs reach object storage (the crashed run's at its checkpoints), and no local staging folder is left."""
    root = s3_url
    env = {"TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    crashed = _run(f"{root}/crash", tmp_path / "crash.pt", nproc=2, env={**env, "CRASH_AT": "6"})
    assert crashed.returncode != 0
    assert storage.listdir(f"{root}/crash/checkpoints") == ["step-00000002", "step-00000004"]
    resumed = _run(f"{root}/crash", tmp_path / "crash.pt", nproc=2, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint" in resumed.stderr and "step=4" in resumed.stderr
    assert _max_diff(_weights(two_ranks), _weights(tmp_path / "crash.pt")) <= 1e-6
    assert storage.listdir(f"{root}/crash/checkpoints") == ["step-00000006", "step-00000008"]

    from lift.report.report import read_scalars

    scalars = read_scalars(f"{root}/crash/tensorboard")
    assert [step for step, _ in scalars["loss"]] == [2, 4, 6, 8]
    logged = {int(m[0]): float(m[1]) for m in re.findall(r"step=(\d+) .*?loss=(\S+)", crashed.stderr + resumed.stderr)}
    assert {step: f"{v:.4g}" for step, v in scalars["loss"]} == {k: f"{v:.4g}" for k, v in logged.items()}
    assert scalars["lr"][0] == (2, pytest.approx(1e-2)) and scalars["lr"][-1] == (8, 0.0), "warmup 2, cosine to 0"
    assert not list((tmp_path / "tmp").glob("lift-tb-*")), "the crashed run's folder too: removed at its exit"


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused(tmp_path):
    assert _run(str(tmp_path / "o"), tmp_path / "a.pt").returncode == 0
    again = _run(str(tmp_path / "o"), tmp_path / "b.pt", "model=other")
    assert again.returncode != 0
    assert "checkpoint is incompatible with this run: 'model' was 'mlp', now 'other'" in again.stderr


@pytest.mark.slow
def test_nonfinite_loss_skip_or_stop(tmp_path):
    """A NaN loss stops the run naming the step and batch; an infinite one is skipped and counted."""
    stop = _run(str(tmp_path / "s"), tmp_path / "s.pt", env={"NONFINITE_AT_STEP": "3"})
    assert stop.returncode != 0 and "non-finite loss at step 3" in stop.stderr and "batch ids [" in stop.stderr
    skip = _run(str(tmp_path / "k"), tmp_path / "k.pt", "on_nonfinite=skip",
                env={"NONFINITE_AT_STEP": "3", "NONFINITE_LOSS": "inf"})
    assert skip.returncode == 0, skip.stderr[-3000:]
    counts = torch.load(tmp_path / "k.pt", weights_only=True)["counts"]
    assert counts["skipped_steps"] == 1 and counts["steps"] == 8


# Gradient accumulation: an optimizer step is grad_accum whole micro-batches of one epoch; an epoch whose batch count
# is not a multiple of grad_accum leaves its last batches out, as one batch of grad_accum x batch_size would.


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.sin(self.x.sum(1, keepdim=True))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "id": i}


def _collate(items):
    return {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items]),
            "ids": [i["id"] for i in items]}


def _fit(out, n: int, batch_size: int, grad_accum: int, seen: list | None = None, crash_at: tuple | None = None,
         **trainer) -> tuple[dict, dict]:
    """Fits a tiny MLP in this process; `seen` collects (step, ids) per micro-batch, `crash_at=(step, k)` raises
    in the k-th micro-batch of that step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    cfg = TrainerConfig(lr=1e-2, batch_size=batch_size, grad_accum=grad_accum, mixed_precision="fp32",
                        num_workers=0, warmup_steps=2, log_every=3, async_checkpoint=False,
                        **{"checkpoint_every": 0, **trainer})
    calls = []

    def loss_fn(m, batch, step):
        calls.append(step)
        if crash_at and (step, calls.count(step)) == crash_at:
            raise RuntimeError("crash for the test")
        if seen is not None:
            seen.append((step, batch["ids"]))
        return torch.nn.functional.mse_loss(m(batch["x"]), batch["y"]), {}

    counts = loop.fit(model=model, dataset=_Pairs(n), collate=_collate, loss_fn=loss_fn, cfg=cfg, out_url=str(out),
                      fingerprint={"model": "mlp"}, runtime=dist.Runtime(0, 1, 0, torch.device("cpu")))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, counts


def _assert_same_weights(a: dict, b: dict, rtol: float = 1e-6):
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert float((v - b[k]).abs().max()) <= rtol * float(b[k].abs().max()), k


def test_sampler_yields_whole_accumulation_windows_of_one_epoch():
    acc = sampler.GlobalBatchSampler(22, 2, 0, 1, seed=0, grad_accum=3)  # 11 batches: 3 steps of 3, 2 left out
    assert (acc.steps_per_epoch, acc.batches_per_epoch, len(acc)) == (3, 9, 9)
    big = sampler.GlobalBatchSampler(22, 6, 0, 1, seed=0)
    for epoch in (0, 1):
        acc.set_position(epoch, 0), big.set_position(epoch, 0)
        batches = list(acc)
        assert [[i for b in batches[s : s + 3] for i in b] for s in range(0, 9, 3)] == list(big)
    acc.seek(4)  # step 4 = epoch 1, second step
    assert (acc.epoch, acc.start, len(acc)) == (1, 3, 6)
    assert optim.total_steps(TrainerConfig(epochs=2, grad_accum=2),
                             sampler.GlobalBatchSampler(41, 1, 0, 1, 0, grad_accum=2).steps_per_epoch) == 40
    with pytest.raises(ValueError, match=r"fewer than one global batch of an optimizer step \(24 = batch_size 2 x "
                                         r"world size 2 x grad_accum 6\)"):
        sampler.GlobalBatchSampler(23, 2, 0, 2, seed=0, grad_accum=6)
    with pytest.raises(ValueError, match="trainer.grad_accum must be at least 1, got 0"):
        sampler.GlobalBatchSampler(20, 2, 0, 1, seed=0, grad_accum=0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [2, 3])
def test_grad_accum_matches_one_big_batch_across_epochs(k, tmp_path):
    """22 examples in batches of 2 are 11 per epoch, not a multiple of k: two epochs of k x 2 match batch 2k."""
    acc, acc_counts = _fit(tmp_path / "acc", 22, 2, k, epochs=2)
    big, big_counts = _fit(tmp_path / "big", 22, 2 * k, 1, epochs=2)
    assert acc_counts["steps"] == big_counts["steps"] == 2 * (11 // k)
    _assert_same_weights(acc, big)


@pytest.mark.timeout(60)
def test_grad_accum_resume_mid_window_in_second_epoch(tmp_path):
    """A crash in the second micro-batch of the step after a checkpoint in epoch 2 resumes to the same weights."""
    clean, clean_counts = _fit(tmp_path / "clean", 22, 2, 2, epochs=2, checkpoint_every=3)
    with pytest.raises(RuntimeError, match="crash for the test"):
        _fit(tmp_path / "crash", 22, 2, 2, crash_at=(6, 2), epochs=2, checkpoint_every=3)  # epoch 2 is steps 5-9
    assert storage.listdir(str(tmp_path / "crash" / "checkpoints")) == ["step-00000003", "step-00000006"]
    resumed, counts = _fit(tmp_path / "crash", 22, 2, 2, epochs=2, checkpoint_every=3)
    assert counts["resumed"] and counts["steps"] == clean_counts["steps"] == 10
    _assert_same_weights(resumed, clean, rtol=0.0)


@pytest.mark.timeout(60)
def test_grad_accum_with_odd_batch_count_terminates(tmp_path):
    """41 batches of 4 per epoch, grad_accum 2: 20 steps an epoch; step 20 starts the next epoch's order."""
    seen = []
    _, counts = _fit(tmp_path / "o", 41 * 4 + 3, 4, 2, seen=seen, max_steps=25)
    assert counts["steps"] == 25
    assert [s for s, _ in seen] == [s for s in range(25) for _ in range(2)]
    for steps in (range(20), range(20, 25)):  # each epoch sees distinct examples, 8 per step
        ids = [i for s, b in seen if s in steps for i in b]
        assert len(ids) == len(set(ids)) == 8 * len(steps)



# LiFT's data sizes for the shipped cluster recipes: 40k scored rollouts + 20k real clips (align); 3 examples per
# annotated video of the ~9k-video train split (critic).
CLUSTER_DATA = {"align": 60_000, "critic": 27_000}
ROOT = Path(__file__).parents[1]
CHART = ROOT / "charts"
# The chart's example recipes and the test values sets, layered in order like repeated `helm -f`.
CHART_SETS = {"example-8gpu": [CHART / "examples" / "cogvideox-2b-8gpu.yaml"],
              "example-4x8gpu": [CHART / "examples" / "cogvideox-2b-8gpu.yaml",
                                 CHART / "examples" / "cogvideox-2b-4x8gpu.yaml"],
              **{p.stem: [p] for p in sorted((Path(__file__).parent / "chart_values").glob("*.yaml"))}}


def _cluster_configs():
    """(source, stage, resolved config, world size) of every configs/cluster/*.yaml training section."""
    from lift import stages

    for path in sorted((ROOT / "configs" / "cluster").glob("*.yaml")):
        world = 32 if "4x8" in path.name else 8
        if path.name.startswith("pipeline"):
            pipeline = stages.load("pipeline", str(path), [])
            yield from ((path.name, s, stages.section(pipeline, s), world) for s in CLUSTER_DATA)
        else:
            stage = path.name.split("-")[0]
            yield path.name, stage, stages.load(stage, str(path), []), world


def _chart_configs(tmp: Path):
    """The training stages' configs of every chart values set, as the chart's ConfigMap writes them (`run` plus the
    stage's `config:` map over the chart's defaults) and loaded as the container loads them, with the world size
    the values give (nodes x processes per node: nprocPerNode, or one per GPU)."""
    import yaml
    from omegaconf import OmegaConf

    from lift import stages

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, files in CHART_SETS.items():
        values = OmegaConf.to_container(OmegaConf.merge(defaults, *(yaml.safe_load(f.read_text()) for f in files)))
        for stage in CLUSTER_DATA:
            block = {**values["defaults"], **values["stages"][stage]}
            if not block.get("enabled", True):
                continue
            world = block["nodes"] * (block.get("nprocPerNode") or block["resources"]["gpus"] or 1)
            path = tmp / f"{name}-{stage}.yaml"
            path.write_text(yaml.safe_dump({"run": values["run"], **block.get("config", {})}))
            yield f"chart:{name}", stage, stages.load(stage, str(path), []), world


def _recipes(tmp: Path) -> list:
    """Every shipped recipe that names a published model: the cluster configs and the chart's values sets."""
    from lift.models import real

    published = {real.hub_id(n) for n in real.MODELS}
    return [r for r in [*_cluster_configs(), *_chart_configs(tmp)] if r[2].model.name_or_path in published]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> list:
    found = _recipes(tmp_path_factory.mktemp("chart-configs"))
    sources = {source for source, *_ in found}
    assert {"chart:example-8gpu", "chart:example-4x8gpu", "pipeline-cogvideox-2b.yaml",
            "critic-qwen2.5-vl-7b.yaml", "align-cogvideox-2b-8gpu.yaml"} <= sources, sources
    return found


def test_cluster_and_chart_trainer_settings_make_sense_for_their_data(recipes):
    """The recipes (cluster configs, the chart's examples; the chart's test values sets keep toy trainers)."""
    for source, stage, cfg, world in recipes:
        if source.startswith("chart:") and source not in ("chart:example-8gpu", "chart:example-4x8gpu"):
            continue
        trainer, examples = cfg.trainer, CLUSTER_DATA[stage]
        assert trainer.batch_size * world * trainer.grad_accum <= examples, (source, stage)
        per_epoch = sampler.GlobalBatchSampler(examples, trainer.batch_size, 0, world, 0,
                                               grad_accum=trainer.grad_accum).steps_per_epoch
        steps = optim.total_steps(trainer, per_epoch)
        assert trainer.max_steps == 0 and steps == trainer.epochs * per_epoch > 100, (source, stage, steps)
        assert optim.check_settings(trainer, steps, examples, world) == [], (source, stage, steps)
    assert {(s, w) for s, st, _, w in recipes if st == "align" and s.startswith("chart:example")} == {
        ("chart:example-8gpu", 8), ("chart:example-4x8gpu", 32)}


# What each published model is, from its model card: the family a config must name for it, the transformer's width
# (heads x head dim) and text length, the critic's language-model width.
PUBLISHED = {"THUDM/CogVideoX-2b": {"family": "cogvideox", "width": 1920, "text": 226},
             "Qwen/Qwen2.5-VL-7B-Instruct": {"width": 3584}}


@functools.cache
def _reduced(stage: str, name: str):
    """The published model at reduced depth (1 block or layer) on the meta device."""
    from lift.models import real

    if stage == "align":
        return real.transformer(name, layers=1)
    return real.critic(name, layers=1, vision_layers=1)


def test_recipes_name_the_models_they_are_built_for(recipes):
    """Each recipe's model, built from the published config at reduced depth, is the model the recipe names, and
    the sequence it sees at the recipe's frames/height/width is the one `lift plan` budgets for."""
    from lift.launch import plan
    from lift.models import families, real

    for source, stage, cfg, _ in recipes:
        name = {real.hub_id(n): n for n in real.MODELS}[cfg.model.name_or_path]
        published = PUBLISHED[cfg.model.name_or_path]
        model = _reduced(stage, name)
        if stage == "align":
            assert cfg.model.family == published["family"], source
            assert real.config(name, "model_index.json")["_class_name"] == families.get(cfg.model.family).pipeline
            c = model.config
            assert (c.num_attention_heads * c.attention_head_dim, c.max_text_seq_length) == (
                published["width"], published["text"]), source
            # one forward on meta at the recipe's clip: the joint text + video sequence the block sees
            latents = ((cfg.frames - 1) // 4 + 1, c.in_channels, cfg.height // 8, cfg.width // 8)
            seen = []
            hook = model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
            with torch.device("meta"):
                out = model(hidden_states=torch.empty(1, *latents), timestep=torch.zeros(1, dtype=torch.long),
                            encoder_hidden_states=torch.empty(1, c.max_text_seq_length, c.text_embed_dim),
                            return_dict=False)[0]
            hook.remove()
            assert out.shape == (1, *latents), source
            assert seen == [plan._align_shape(name, cfg)[0]], source
            if (cfg.frames, cfg.height, cfg.width) == (49, 480, 720):  # 226 text + 13 x 30 x 45 video tokens
                assert seen == [17_776]
        else:
            text, vision = model.config.text_config, model.config.vision_config
            assert text.hidden_size == published["width"], source
            assert cfg.model.frames % vision.temporal_patch_size == 0, (source, "frames pair up into one token")
            tokens = plan._critic_shape(name, cfg)[0] - 512  # lift plan's video tokens for frames of 480x720
            assert tokens == _video_tokens(name, cfg.model.frames, 480, 720), source
            assert tokens + 512 <= text.max_position_embeddings


def _video_tokens(name: str, frames: int, height: int, width: int) -> int:
    """Language-model tokens the published video processor gives `frames` frames of height x width."""
    from importlib import resources

    from transformers import AutoVideoProcessor

    from lift.models import real

    processor = AutoVideoProcessor.from_pretrained(
        str(resources.files("lift.models").joinpath("real_configs", real.MODELS[name])))
    video = torch.zeros(frames, 3, height, width, dtype=torch.uint8)
    grid = processor(videos=[video], video_metadata=[{"fps": 2.0, "total_num_frames": frames}],
                     return_tensors="pt")["video_grid_thw"]
    return int(grid.prod()) // processor.merge_size ** 2


def test_check_settings_names_a_warmup_that_does_not_fit_the_run():
    assert optim.check_settings(TrainerConfig(warmup_steps=200, max_steps=100), 100) == [
        "trainer warmup (200 steps) is not shorter than the run (100 steps): the learning rate never reaches "
        "trainer.lr"]
    assert "more than half" in optim.check_settings(TrainerConfig(warmup_ratio=0.6), 100)[0]
    assert optim.check_settings(TrainerConfig(warmup_steps=20), 400) == []


def test_check_settings_names_the_batch_keys_when_the_data_does_not_fill_a_step():
    cfg = TrainerConfig(batch_size=8, grad_accum=2, warmup_steps=1)
    assert optim.check_settings(cfg, 100, 100, 8) == [
        "trainer.batch_size 8 x world size 8 x trainer.grad_accum 2 = 128 examples per optimizer step, more than the "
        "100 examples: an epoch has no optimizer step; lower trainer.batch_size or trainer.grad_accum"]
    assert optim.check_settings(cfg, 100, 200, 4) == []  # 64 per step: 3 steps, 8 examples (4%) left out
    assert optim.check_settings(cfg, 100, 90, 4) == [
        "trainer.batch_size 8 x world size 4 x trainer.grad_accum 2 = 64 examples per optimizer step: 26 of the 90 "
        "examples (29%) sit out every epoch; choose trainer.batch_size and trainer.grad_accum so that it divides the "
        "data more evenly"]
