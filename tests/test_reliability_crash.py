"""Crash and resume (docs/RELIABILITY.md): one rank SIGKILLed mid-stage under `torchrun --max-restarts 1`, as the
PyTorchJob and TorchX runs start stages, and the restarted job finishes by itself with the result of an
uninterrupted run; checkpoints and parts cut off mid-write are never taken as complete.

Where each stage is killed (which rank, after which step, batch or part) is drawn at random from SEED; set
LIFT_KILL_SEED to draw other points."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_align import (
    PROMPTS,
    SAMPLING,
    _copy_inputs,
    _transformer,
    _write_rollouts,
    _write_scores,
)
from test_align import TRAIN as ALIGN_TRAIN
from test_critic import TRAIN as CRITIC_TRAIN
from test_critic import _copy_data

from lift import models, stages
from lift.core import faults
from lift.io import storage
from lift.stages import runner, score
from lift.train.checkpoint import Checkpointer, TrainState

SEED = int(os.environ.get("LIFT_KILL_SEED", "2026"))
RANKS = 2  # torchrun workers of every crash test


def _kill_point(stage: str, points: list[tuple[str, int]]) -> dict[str, str]:
    """The environment that SIGKILLs a random rank at a random one of `points` (hook variable, count), seeded."""
    rng = random.Random(f"{SEED}/{stage}")
    hook, count = rng.choice(points)
    env = {hook: str(count), faults.RANK: str(rng.randrange(RANKS))}
    print(f"{stage}: SIGKILL of rank {env[faults.RANK]} at {hook}={count}")  # docs/RELIABILITY.md
    return env


def _sharded_points(batches: int, parts: int) -> list[tuple[str, int]]:
    """Every kill point of a rank that scores or renders `batches` batches into `parts` parts."""
    return ([(faults.KILL_AFTER_BATCHES, n) for n in range(1, batches + 1)]
            + [(faults.KILL_AFTER_PARTS, n) for n in range(1, parts + 1)])


def _survived(proc, kill: dict[str, str]) -> None:
    """The job exited 0 after exactly the one injected SIGKILL and a restart."""
    assert proc.returncode == 0, proc.stderr[-5000:]
    [(hook, count)] = [(k, v) for k, v in kill.items() if k != faults.RANK]
    line = f"fault injection: SIGKILL on rank {kill[faults.RANK]} at {hook}={count}"
    assert proc.stderr.count(line) == 1 and proc.stderr.count("fault injection:") == 1, proc.stderr[-5000:]


def _resumed_from_newest_checkpoint(stderr: str, kill: dict[str, str], every: int = 2) -> None:
    """The restart resumed from the newest checkpoint complete at the kill: the one of the last multiple of `every`
    before the killed step (the checkpoint of the killed step itself is taken after the kill point)."""
    newest = (int(kill[faults.KILL_AT_STEP]) - 1) // every * every
    if newest:
        assert f"resumed from checkpoint step={newest} " in stderr, stderr[-5000:]
    else:
        assert "resumed from checkpoint" not in stderr, "no checkpoint was complete: the restart starts afresh"


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _files(root: str) -> list[str]:
    fs, path = storage.filesystem(root)
    return sorted(p[len(path.rstrip("/")) + 1:] for p in fs.find(path))


# ----------------------------------------------------------------------------------------------- training stages
def _critic_args(zoo_dir: str, run: str) -> list[str]:
    return ["critic", f"run={run}", f"model.name_or_path={zoo_dir}/critic", f"data={run}/data", *CRITIC_TRAIN,
            "lora.enabled=true", "model.freeze_vision=true"]  # LiFT's recipe: LoRA, frozen vision tower


@pytest.fixture(scope="module")
def critic_clean(zoo_dir, toy_data, tmp_path_factory, torchrun_lift) -> str:
    """The folder of an uninterrupted 2-rank `lift critic` run (FSDP), the reference of the critic's crash tests."""
    root = tmp_path_factory.mktemp("critic")
    _copy_data(toy_data, str(root / "clean"))
    clean = torchrun_lift(*_critic_args(zoo_dir, str(root / "clean")))
    assert clean.returncode == 0, clean.stderr[-5000:]
    return str(root / "clean")


@pytest.mark.slow
def test_critic_sigkill_at_a_step_restarts_and_ends_with_identical_weights(zoo_dir, toy_data, tmp_path, torchrun_lift,
                                                                           critic_clean):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _copy_data(toy_data, str(tmp_path / "crash"))
    kill = _kill_point("critic", [(faults.KILL_AT_STEP, step) for step in range(1, 5)])  # 4 steps
    crash = torchrun_lift(*_critic_args(zoo_dir, str(tmp_path / "crash")), max_restarts=1, env=kill)
    _survived(crash, kill)
    _resumed_from_newest_checkpoint(crash.stderr, kill)
    runs = {"clean": critic_clean, "crash": str(tmp_path / "crash")}
    checkpoints = [storage.listdir(f"{run}/critic/checkpoints") for run in runs.values()]
    assert checkpoints[1] == checkpoints[0] == ["step-00000002", "step-00000004"], "no leftovers of the killed attempt"
    a = load_file(f"{runs['clean']}/critic/model/model.safetensors")
    b = load_file(f"{runs['crash']}/critic/model/model.safetensors")
    print(f"critic: max abs diff after a SIGKILL and restart: {_max_diff(a, b)}")  # docs/RELIABILITY.md
    assert _max_diff(a, b) <= 1e-6
    assert not any("lora" in k for k in a), "LoRA is merged into the exported weights"
    for run in runs.values():
        assert storage.read_marker(f"{run}/critic")["counts"]["steps"] == 4
    exported = _files(f"{runs['crash']}/critic/model")
    assert "model.safetensors" in exported and not [f for f in exported if f.endswith((".bin", ".pt", ".pkl"))]
    model = AutoModelForImageTextToText.from_pretrained(f"{runs['crash']}/critic/model")
    AutoProcessor.from_pretrained(f"{runs['crash']}/critic/model")
    base = AutoModelForImageTextToText.from_pretrained(f"{zoo_dir}/critic")
    moved = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert moved and all(".visual." not in f".{n}" for n in moved), "only the language model is trained"
    _is_the_base_with_the_adapters_merged(a, load_file(f"{zoo_dir}/critic/model.safetensors"),
                                          f"{runs['clean']}/critic/checkpoints/step-00000004")


@pytest.mark.slow
def test_critic_under_ddp_killed_and_restarted_ends_as_the_fsdp_run(zoo_dir, toy_data, tmp_path, torchrun_lift,
                                                                    critic_clean):
    """`trainer.fsdp=false` (DDP: every rank holds the whole model, docs/SCALING.md's option for the LoRA critic
    across nodes) checkpoints, resumes and exports as FSDP does: a rank SIGKILLed at a step, the restarted job ends
    with the uninterrupted FSDP run's checkpoints and weights. Killed after step 3 or 4, so that the restart resumes
    from DDP's checkpoint of step 2."""
    from safetensors.torch import load_file

    _copy_data(toy_data, str(tmp_path / "ddp"))
    kill = _kill_point("critic-ddp", [(faults.KILL_AT_STEP, step) for step in (3, 4)])
    crash = torchrun_lift(*_critic_args(zoo_dir, str(tmp_path / "ddp")), "trainer.fsdp=false", max_restarts=1,
                          env=kill)
    _survived(crash, kill)
    _resumed_from_newest_checkpoint(crash.stderr, kill)
    assert storage.listdir(str(tmp_path / "ddp/critic/checkpoints")) == ["step-00000002", "step-00000004"]
    a = load_file(f"{critic_clean}/critic/model/model.safetensors")
    b = load_file(str(tmp_path / "ddp/critic/model/model.safetensors"))
    print(f"critic: max abs diff of DDP against FSDP after a SIGKILL and restart: {_max_diff(a, b)}")
    assert _max_diff(a, b) <= 1e-6
    _is_the_base_with_the_adapters_merged(b, load_file(f"{zoo_dir}/critic/model.safetensors"),
                                          str(tmp_path / "ddp/critic/checkpoints/step-00000004"))


def _is_the_base_with_the_adapters_merged(exported: dict, base: dict, checkpoint: str) -> None:
    """The export gathers only the LoRA adapters and merges them into the base read from its folder: each adapted
    projection is its base weight plus alpha/r x B @ A of the last checkpoint, every other weight the base's."""
    import torch.distributed.checkpoint as dcp

    saved = dcp.FileSystemReader(checkpoint).read_metadata().state_dict_metadata
    adapters = {k: torch.empty(saved[k].size) for k in saved if k.startswith("train.model.") and ".lora_" in k}
    dcp.load(adapters, checkpoint_id=checkpoint)
    assert exported.keys() == base.keys() and adapters
    merged = set()
    for key, a in adapters.items():
        if ".lora_A." not in key:
            continue
        b = adapters[key.replace(".lora_A.", ".lora_B.")]
        # the file names the language model's layers "model.layers.N", the model in memory may not
        tail = key[key.index("layers."):].replace(".lora_A.default", "")
        [name] = [n for n in base if n.endswith(tail) and "visual" not in n]
        torch.testing.assert_close(exported[name], base[name] + 2.0 * b @ a)  # CRITIC_TRAIN: alpha 8 / r 4
        merged.add(name)
    for name in base.keys() - merged:
        assert torch.equal(exported[name], base[name]), name
    assert len(merged) == len(adapters) // 2 and all(not torch.equal(exported[n], base[n]) for n in merged)


@pytest.fixture(scope="module")
def align_inputs(zoo_dir, tmp_path_factory) -> str:
    """Rollouts of the tiny CogVideoX with fixed rewards, as test_align builds them."""
    root = str(tmp_path_factory.mktemp("align-inputs"))
    _write_rollouts(root, zoo_dir)
    _write_scores(f"{root}/rollouts", f"{root}/scores", {"p0-000": 0.9, "p0-001": 0.05, "p1-000": 0.2, "p1-001": 0.9})
    return root


@pytest.mark.slow
def test_align_sigkill_at_a_step_restarts_and_ends_with_identical_weights(align_inputs, zoo_dir, s3_url,
                                                                          torchrun_lift):
    """Over s3://, where the checkpoints, the latent cache and the export are objects."""
    from diffusers import CogVideoXPipeline

    def args(root: str) -> list[str]:
        return ["align", f"rollouts={root}/rollouts", f"scores={root}/scores", f"out={root}/align",
                f"model.name_or_path={zoo_dir}/cogvideox", "real=null", *ALIGN_TRAIN]

    for name in ("clean", "crash"):
        _copy_inputs(align_inputs, f"{s3_url}/{name}")
    clean = torchrun_lift(*args(f"{s3_url}/clean"))
    assert clean.returncode == 0, clean.stderr[-5000:]
    assert "vae_encodes=4" in clean.stderr
    kill = _kill_point("align", [(faults.KILL_AT_STEP, step) for step in range(1, 5)])  # 4 steps
    crash = torchrun_lift(*args(f"{s3_url}/crash"), max_restarts=1, env=kill)
    _survived(crash, kill)
    _resumed_from_newest_checkpoint(crash.stderr, kill)
    restart = crash.stderr.split("fault injection:", 1)[1]
    assert "vae_encodes=0" in restart and "cache_hits=4" in restart, "the restart reads the latents cached before"
    for run in ("clean", "crash"):
        counts = storage.read_marker(f"{s3_url}/{run}/align")["counts"]
        assert counts["steps"] == 4 and counts["syn"] == 4
    a, b = _transformer(f"{s3_url}/clean/align/model"), _transformer(f"{s3_url}/crash/align/model")
    print(f"align: max abs diff after a SIGKILL and restart: {_max_diff(a, b)}")  # docs/RELIABILITY.md
    assert _max_diff(a, b) <= 1e-6
    exported = _files(f"{s3_url}/crash/align/model")
    assert not [f for f in exported if f.endswith((".bin", ".pt", ".pkl"))]
    assert "transformer/diffusion_pytorch_model.safetensors" in exported
    pipe = CogVideoXPipeline.from_pretrained(models.local_dir(f"{s3_url}/crash/align/model"))
    out = pipe(prompt=PROMPTS[0]["prompt"], num_frames=9, height=32, width=32, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np",
               max_sequence_length=pipe.transformer.config.max_text_seq_length).frames
    assert np.asarray(out).shape == (1, 9, 32, 32, 3)


# ----------------------------------------------------------------------------------------------- sharded stages
def _in_process(stage: str, overrides: list[str]) -> dict:
    """The uninterrupted reference, in this process with one thread like each torchrun worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return runner.run_stage(stage, stages.load(stage, None, overrides))
    finally:
        torch.set_num_threads(threads)


def _committed_once(out: str, merged: str, expected_ids: list[str]) -> list[dict]:
    records = [json.loads(line) for line in storage.read_text(f"{out}/{merged}").splitlines()]
    parts = [json.loads(line) for name in _files(out) if name.startswith("part-")
             for line in storage.read_text(f"{out}/{name}").splitlines()]
    assert sorted(r["id"] for r in records) == sorted(expected_ids), "every item exactly once"
    assert sorted(r["id"] for r in parts) == sorted(expected_ids), "no part holds an item twice"
    return records


@pytest.mark.slow
def test_generate_sigkill_at_a_batch_or_part_restarts_with_identical_rollouts(zoo_dir, tmp_path, torchrun_lift):
    storage.write_text(f"{tmp_path}/prompts.jsonl", "".join(json.dumps(p) + "\n" for p in PROMPTS))

    def overrides(out: str) -> list[str]:
        return [f"prompts={tmp_path}/prompts.jsonl", f"out={out}", f"model.name_or_path={zoo_dir}/cogvideox",
                "videos_per_prompt=2", "num_shards=2", *SAMPLING, "batch_size=1"]

    _in_process("generate", overrides(f"{tmp_path}/clean"))
    kill = _kill_point("generate", _sharded_points(batches=2, parts=1))  # per rank: 1 shard of 2 videos
    crash = torchrun_lift("generate", *overrides(f"{tmp_path}/crash"), max_restarts=1, env=kill)
    _survived(crash, kill)
    ids = [f"{p['id']}-{k:03d}" for p in PROMPTS for k in range(2)]
    records = _committed_once(f"{tmp_path}/crash", "manifest.jsonl", ids)
    clean, crashed = (storage.read_bytes(f"{tmp_path}/{r}/manifest.jsonl") for r in ("clean", "crash"))
    assert crashed == clean
    for r in records:
        clean_video, crash_video = (storage.read_bytes(f"{tmp_path}/{run}/{r['video']}") for run in ("clean", "crash"))
        assert crash_video == clean_video
    assert _files(f"{tmp_path}/crash") == _files(f"{tmp_path}/clean"), "no leftovers of the killed attempt"


@pytest.mark.slow
def test_score_sigkill_at_a_batch_or_part_restarts_with_identical_scores(zoo_dir, toy_data, tmp_path, torchrun_lift):
    def overrides(out: str) -> list[str]:
        return [f"rollouts={toy_data}", f"critic={zoo_dir}/critic", f"out={out}", "num_shards=4", "batch_size=3"]

    _in_process("score", overrides(f"{tmp_path}/clean"))
    kill = _kill_point("score", _sharded_points(batches=4, parts=2))  # per rank: 2 shards of 6 videos, batches of 3
    crash = torchrun_lift("score", *overrides(f"{tmp_path}/crash"), max_restarts=1, env=kill)
    _survived(crash, kill)
    ids = [json.loads(x)["id"] for x in storage.read_text(f"{toy_data}/manifest.jsonl").splitlines()]
    _committed_once(f"{tmp_path}/crash", score.SCORES, ids)
    clean, crashed = (storage.read_bytes(f"{tmp_path}/{r}/{score.SCORES}") for r in ("clean", "crash"))
    assert crashed == clean
    marker = storage.read_marker(f"{tmp_path}/crash")
    assert marker["counts"]["videos"] == len(ids)


# ------------------------------------------------------------------------------------------- cut off mid-write
class _Tiny(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def _state(seed: int) -> TrainState:
    model = _Tiny(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    return TrainState(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), trainable_only=False)


@pytest.mark.parametrize("where", ["file", "s3"])
def test_checkpoint_cut_off_mid_write_is_never_resumed_from(where, tmp_path, request):
    root = f"file://{tmp_path}/ckpt" if where == "file" else f"{request.getfixturevalue('s3_url')}/ckpt"
    ckpt = Checkpointer(root, {"model": "tiny"}, keep=2)
    saved = _state(0)
    saved.step = 2
    ckpt.save(saved)
    # A save of step 4 that died before its _SUCCESS: every file there, the shard cut to half its size.
    step2, step4 = f"{root}/step-00000002", f"{root}/step-00000004"
    for name in storage.listdir(step2):
        if name != storage.MARKER:
            data = storage.read_bytes(f"{step2}/{name}")
            storage.write_bytes(f"{step4}/{name}", data[: len(data) // 2] if name.endswith(".distcp") else data)
    # A step folder holding nothing but a metadata object, also without _SUCCESS.
    storage.write_bytes(f"{root}/step-00000006/.metadata", b"\x80\x04partial")
    assert ckpt.complete_steps() == [2]
    fresh = _state(1)
    assert ckpt.load(fresh) and fresh.step == 2
    for (name, p), q in zip(saved.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(p, q), name
    fresh.step = 8
    ckpt.save(fresh)
    assert storage.listdir(root) == ["step-00000002", "step-00000008"], "leftovers of dead saves are pruned"


def test_part_cut_off_mid_write_is_never_taken_as_committed(tmp_path):
    """A rank SIGKILLed while writing a part leaves at most a temporary object that no reader takes for a part;
    the rerun commits the part whole."""
    out = str(tmp_path / "scores")
    writer = ("import os, signal, sys\nfrom lift.io import storage\n"
              "shards = storage.Shards(sys.argv[1], 4)\nshards.commit(0, b'{\"id\": \"a\"}\\n')\n"
              "with storage.atomic_open(shards.part(1)) as f:\n"
              "    f.write(b'{\"id\": \"b\"}\\n{\"id\": \"c\"' )\n    f.flush()\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", writer, out], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [n for n in os.listdir(out) if n.startswith("part-00001")]
    assert leftovers and all(".tmp-" in n for n in leftovers), "the half-written part is only a temporary file"
    shards = storage.Shards(out, 4)
    assert shards.committed() == {0} and shards.todo() == [1, 2, 3]
    for s in shards.todo():
        shards.commit(s, json.dumps({"id": f"part{s}"}).encode() + b"\n")
    merged = storage.read_text(shards.merge("all.jsonl")).splitlines()
    assert [json.loads(x)["id"] for x in merged] == ["a", "part1", "part2", "part3"]


def test_kill_hooks_fire_only_in_the_first_attempt(monkeypatch):
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setenv(faults.KILL_AFTER_PARTS, "2")
    monkeypatch.setenv(faults.RANK, "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(faults, "_reached", {})
    faults.part_committed()
    faults.batch_done()
    faults.batch_done()
    assert killed == [], "batches are counted apart from parts"
    faults.part_committed()
    assert killed == [signal.SIGKILL]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    faults.kill_point(faults.KILL_AFTER_PARTS, 2)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    monkeypatch.setenv("RANK", "0")
    faults.kill_point(faults.KILL_AFTER_PARTS, 2)
    assert killed == [signal.SIGKILL], "not in a restart, not on another rank"
