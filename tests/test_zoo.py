"""The tiny model zoo loads through the public transformers/diffusers entry points, from a local folder and from
S3 (through lift.models), runs on CPU, and is rebuilt byte for byte from the same seed."""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path

import pytest
import torch
from conftest import BUCKET

from lift import cli, models
from lift.io import storage
from lift.models import families, integrity
from lift.toy import zoo

PROMPT = "a red circle moves left on a blue background"


@pytest.fixture(scope="session")
def zoo_s3(zoo_dir, s3_endpoint, tmp_path_factory) -> str:
    """The session's zoo (conftest's `zoo_dir`) uploaded once to the loopback S3; a fresh model cache for the
    session."""
    url = f"s3://{BUCKET}/zoo-{uuid.uuid4().hex[:8]}"
    storage.save_folder(zoo_dir, url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield url


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for d, _, names in os.walk(root):
        for name in names:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _critic_inputs(processor, size: int = 32, fps: float = 4.0):
    """One 8-frame clip and a LiFT-style question, as the critic stages will ask it."""
    video = torch.randint(0, 256, (8, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"{PROMPT} Good or Bad?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[text], videos=[video], video_metadata=[{"fps": fps, "total_num_frames": 8}],
                     return_tensors="pt")


def test_layout_and_marker(zoo_dir):
    files = set(_files(zoo_dir))
    assert {"critic/config.json", "critic/model.safetensors", "critic/processor_config.json",
            "critic/tokenizer.json", "critic/chat_template.jinja", "critic/generation_config.json"} <= files
    for family in ("cogvideox", "wan"):
        assert {f"{family}/model_index.json", f"{family}/scheduler/scheduler_config.json",
                f"{family}/tokenizer/tokenizer.json", f"{family}/tokenizer/tokenizer_config.json",
                f"{family}/text_encoder/model.safetensors", f"{family}/transformer/diffusion_pytorch_model.safetensors",
                f"{family}/vae/diffusion_pytorch_model.safetensors"} <= files
    marker = storage.read_marker(zoo_dir)
    assert marker["stage"] == "models" and marker["config_hash"] == zoo.spec_hash(0)
    assert 5e5 < marker["counts"]["critic_params"] < 3e6


def test_critic_from_local_folder(zoo_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = os.path.join(zoo_dir, "critic")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    tok = processor.tokenizer
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert tok.decode(tok(PROMPT).input_ids) == PROMPT

    inputs = _critic_inputs(processor)
    # 8 frames of 32x32: 4 temporal x 8x8 patches of 4 px; 2x2 merged -> 16 LLM tokens per temporal step
    assert inputs["video_grid_thw"].tolist() == [[4, 8, 8]]
    assert (inputs["input_ids"] == model.config.video_token_id).sum() == 64
    assert inputs["second_per_grid_ts"].tolist() == [0.5]  # temporal patch 2 / 4 fps: one position per step
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    assert out.shape == (1, inputs["input_ids"].shape[1] + 8)


def test_critic_from_s3_matches_local(zoo_dir, zoo_s3):
    model, processor = models.load_critic(storage.join(zoo_s3, "critic"))
    assert models.local_dir(storage.join(zoo_s3, "critic")).startswith(os.environ["LIFT_CACHE"])
    local, _ = models.load_critic(f"file://{zoo_dir}/critic")
    inputs = _critic_inputs(processor, size=64)
    assert inputs["video_grid_thw"].tolist() == [[4, 16, 16]]
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, local(**inputs).logits)


@pytest.mark.parametrize("family,frames", [("cogvideox", 16), ("cogvideox", 17), ("wan", 17)])
def test_pipeline_generates(zoo_dir, family, frames):
    import diffusers

    pipe = getattr(diffusers, families.get(family).pipeline).from_pretrained(os.path.join(zoo_dir, family))
    video = pipe(PROMPT, num_frames=frames, height=32, width=32, num_inference_steps=2, output_type="pt",
                 generator=torch.Generator().manual_seed(0), max_sequence_length=families.get(family).text_length(pipe)
                 ).frames
    assert video.shape == (1, frames, 3, 32, 32)
    assert torch.isfinite(video).all() and 0 <= video.min() and video.max() <= 1


@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_pipeline_from_s3_matches_local(zoo_dir, zoo_s3, family):
    def sample(pipe):
        return pipe(PROMPT, num_frames=9, height=32, width=48, num_inference_steps=2, output_type="pt",
                    generator=torch.Generator().manual_seed(0),
                    max_sequence_length=families.get(family).text_length(pipe)).frames

    remote = sample(models.load_t2v(family, storage.join(zoo_s3, family)))
    assert remote.shape == (1, 9, 3, 32, 48)
    assert torch.equal(remote, sample(models.load_t2v(family, os.path.join(zoo_dir, family))))


def test_cli_rebuilds_identically_and_skips_when_sealed(zoo_dir):
    url = f"memory://lift-test/zoo-{uuid.uuid4().hex[:8]}"
    assert cli.main(["models", "tiny", url]) == 0
    marker = storage.read_marker(url)
    assert marker["config_hash"] == zoo.spec_hash(0)
    for rel, data in _files(zoo_dir).items():
        if rel != storage.MARKER:
            assert storage.read_bytes(storage.join(url, rel)) == data, rel
    assert cli.main(["models", "tiny", url]) == 0
    assert storage.read_marker(url)["time"] == marker["time"]


def test_other_seed_other_weights(tmp_path, zoo_dir):
    zoo.build_cogvideox(str(tmp_path), seed=1)
    name = "transformer/diffusion_pytorch_model.safetensors"
    assert (tmp_path / name).read_bytes() != _files(os.path.join(zoo_dir, "cogvideox"))[name]
    assert zoo.spec_hash(1) != zoo.spec_hash(0)


def test_a_models_spec_hash_covers_its_own_part_of_the_zoo(monkeypatch):
    before = {m: zoo.spec_hash(0, m) for m in (None, "critic", "cogvideox")}
    spec = copy.deepcopy(zoo.SPEC)
    spec["cogvideox"]["vae"]["latent_channels"] = 8
    monkeypatch.setattr(zoo, "SPEC", spec)
    after = {m: zoo.spec_hash(0, m) for m in before}
    assert after["critic"] == before["critic"]
    assert after["cogvideox"] != before["cogvideox"] and after[None] != before[None]


def test_local_dir_forms(tmp_path, hub_cache, zoo_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub_cache["HF_HUB_CACHE"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    snapshot = models.local_dir("lift-test/critic-toy")  # a hub id: its snapshot in the Hugging Face cache
    assert snapshot.startswith(hub_cache["HF_HUB_CACHE"]) and os.path.isdir(snapshot)
    with open(f"{snapshot}/model.safetensors", "rb") as a, open(f"{zoo_dir}/critic/model.safetensors", "rb") as b:
        assert a.read() == b.read()
    integrity.check_folder("lift-test/critic-toy", "critic")
    with pytest.raises(FileNotFoundError, match=r"Qwen/Qwen2.5-VL-7B-Instruct: not a local folder, and not in "
                                                r"the Hugging Face cache \(.*\) while HF_HUB_OFFLINE is set"):
        models.local_dir("Qwen/Qwen2.5-VL-7B-Instruct")
    assert models.local_dir(f"file://{tmp_path}") == str(tmp_path)
    assert models.local_dir(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError):
        models.local_dir(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        models.local_dir(f"memory://lift-test/{uuid.uuid4().hex}")


def test_remote_cache_refetches_changed_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(b"v1")
    url = f"memory://lift-test/{uuid.uuid4().hex[:8]}/model"
    storage.write_text(storage.join(url, "stale.json"), "left over from an older save")
    storage.save_folder(str(src), url)
    assert storage.listdir(url) == ["config.json", "sub"]
    first = models.local_dir(url)
    assert models.local_dir(url) == first
    assert open(os.path.join(first, "sub", "weights.bin"), "rb").read() == b"v1"
    storage.write_marker(url, "test", "new")
    second = models.local_dir(url)
    assert second != first and os.path.exists(os.path.join(second, storage.MARKER))
    assert sorted(os.listdir(tmp_path / "cache")) == sorted([".locks", *(os.path.basename(p) for p in (first, second))])


def test_the_ranks_of_a_node_download_a_remote_model_once(s3_url, tmp_path, monkeypatch):
    """Four ranks ask for the same s3:// model at once (threads: the file lock excludes them as it does processes):
    one downloads it, the others wait and get the same complete folder; no temporary folder is left."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    weights = os.urandom(32 << 20)
    (src / "model.safetensors").write_bytes(weights)
    (src / "config.json").write_text("{}")
    url = f"{s3_url}/model"
    storage.save_folder(str(src), url)
    fs = storage.filesystem(url)[0]
    downloads, get = [], fs.get
    monkeypatch.setattr(fs, "get", lambda *args, **kwargs: downloads.append(args) or get(*args, **kwargs))
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: models.local_dir(url), range(4)))
    assert len(set(folders)) == 1 and len(downloads) == 1, (folders, downloads)
    assert open(os.path.join(folders[0], "model.safetensors"), "rb").read() == weights
    assert sorted(os.listdir(tmp_path / "cache")) == [".locks", os.path.basename(folders[0])]


def test_pretrained_critic_in_a_few_steps_and_skipped_when_sealed(zoo_dir, tmp_path):
    out = str(tmp_path / "critic-toy")
    kwargs = {"scene_steps": 2, "caption_steps": 2, "batch_size": 4, "num_workers": 0}
    counts = zoo.pretrain_critic(f"{zoo_dir}/critic", out, **kwargs)
    assert counts["scene_loss"] > 0 and counts["caption_loss"] > 0
    marker = storage.read_marker(out)
    assert marker["stage"] == "critic-pretrain" and marker["frames"] == 4
    model, processor = models.load_critic(out)
    base, _ = models.load_critic(f"{zoo_dir}/critic")
    changed = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert any(".visual." in f".{n}" for n in changed) and any("language_model" in n for n in changed)
    assert processor.tokenizer.decode(processor.tokenizer(PROMPT).input_ids) == PROMPT
    assert zoo.pretrain_critic(f"{zoo_dir}/critic", out, **kwargs) == counts
    assert storage.read_marker(out)["time"] == marker["time"]


def test_pretraining_asks_lift_questions_answered_with_what_is_seen():
    from lift.data import hra
    from lift.toy import world

    captions = zoo._Captions(30, 5, 4, 16, 32, effects=True)
    assert all(item[4].endswith(zoo.CAPTION_QUESTION) for item in map(captions.__getitem__, range(30)))
    asked = zoo._Captions(30, 5, 4, 16, 32, effects=True, questions=1.0)
    seen = {d: 0 for d in hra.DIMENSIONS}
    for i in range(30):
        frames, answer, scene, names, text = asked[i]
        assert torch.equal(frames, captions[i][0]) and names == captions[i][3]  # the same clip either way
        dimension = next(d for d in hra.DIMENSIONS if text.endswith(hra.QUESTIONS[d]))
        seen[dimension] += 1
        if dimension == "semantic":
            assert answer == world.SEEN.format(caption=scene.prompt)
        elif names[dimension] == "none":
            assert answer == zoo.NO_EFFECT[dimension]
        else:
            assert answer.split()[-1].rstrip(".") in zoo.EFFECTS[names[dimension]]
            assert not any(label.lower() in answer.lower() for label in hra.LABELS)  # says what, never how bad
    assert min(seen.values()) > 0


def test_pretraining_clips_look_like_stored_ones():
    import numpy as np

    from lift.io import video
    from lift.toy import world

    rng = np.random.default_rng(3)
    frames = world.render(world.Scene.sample(rng), (), rng, 16, 32)
    url = f"memory://lift-test/{uuid.uuid4().hex[:8]}/clip.mp4"
    video.write_video(url, frames, 8)
    stored = video.read_video(url).numpy().astype(float)
    assert np.abs(zoo._as_stored(frames) - stored).mean() < 0.5 < np.abs(frames - stored).mean()


def _architecture(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_shipped_toy_models_come_from_this_zoo_load_and_differ_from_it(zoo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path))
    url = f"memory://lift-test/{uuid.uuid4().hex[:8]}/models"
    assert cli.main(["models", "toy", url]) == 0
    critic, processor = models.load_critic(f"{url}/critic-toy")
    random_critic, _ = models.load_critic(f"{zoo_dir}/critic")
    assert processor.tokenizer.decode(processor.tokenizer(PROMPT).input_ids) == PROMPT
    assert not torch.equal(critic.state_dict()["lm_head.weight"], random_critic.state_dict()["lm_head.weight"])
    base = models.load_t2v("cogvideox", f"{url}/cogvideox-toy")
    random_base = models.load_t2v("cogvideox", f"{zoo_dir}/cogvideox")
    assert _architecture(base.transformer.config) == _architecture(random_base.transformer.config)
    assert not torch.equal(base.transformer.proj_out.weight, random_base.transformer.proj_out.weight)
    assert base.vae.config.scaling_factor != random_base.vae.config.scaling_factor  # fitted by `lift base`
    marker = storage.read_marker(f"{url}/critic-toy")
    zoo.write_toy(url)
    assert storage.read_marker(f"{url}/critic-toy")["time"] == marker["time"], "a sealed copy is kept"


def test_shipped_toy_models_of_another_zoo_are_refused(monkeypatch):
    real_hash = zoo.spec_hash
    monkeypatch.setattr(zoo, "spec_hash", lambda seed, model=None: "another" if model == "cogvideox" else
                        real_hash(seed, model))
    url = f"memory://lift-test/{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match=r"cogvideox-toy/pretrained\.json: made from the zoo of seed 0 .*"
                                         r"\(SPEC\['cogvideox'\]\); make it again with "
                                         r"scripts/make-toy-pretrained\.py --models cogvideox-toy"):
        zoo.write_toy(url)
    assert storage.is_complete(f"{url}/critic-toy"), "the critic's part of the zoo is unchanged: it is kept"
    with pytest.raises(ValueError, match="not seed 1"):
        zoo.write_toy(f"memory://lift-test/{uuid.uuid4().hex[:8]}", seed=1)


@pytest.mark.slow
def test_the_script_that_makes_the_shipped_models_runs_in_a_few_steps(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "pretrained"
    cmd = [sys.executable, "scripts/make-toy-pretrained.py", "--work", str(tmp_path / "work"), "--out", str(out),
           "--clips", "8", "--critic-clips", "8", "--scene-steps", "2", "--caption-steps", "2", "--critic-steps", "2",
           "--vae-steps", "2",
           "--transformer-steps", "2", "--workers", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    url = str(tmp_path / "models")
    zoo.write_toy(url, source=str(out))
    provenance = storage.read_json(f"{url}/cogvideox-toy/{zoo.PROVENANCE}")
    assert provenance["zoo_spec_hash"] == zoo.spec_hash(0, "cogvideox") and provenance["args"]["transformer_steps"] == 2
    assert provenance["counts"]["vae_steps"] == 2 and provenance["counts"]["transformer_steps"] == 2
    assert not os.path.exists(f"{url}/cogvideox-toy/config.yaml"), "run configs stay out of the shipped folder"
    for name in ("cogvideox-toy/model_index.json", "cogvideox-toy/transformer/config.json", "critic-toy/config.json"):
        assert "_name_or_path" not in storage.read_json(f"{out}/{name}"), "no path of the machine that made it"
    sizes = {os.path.join(d, f): os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(out) for f in names}
    assert max(sizes.values()) <= 5_000_000, "large weights are sharded: the repository takes no file over 6 MB"
    assert os.path.exists(f"{out}/cogvideox-toy/transformer/diffusion_pytorch_model.safetensors.index.json")
    models.load_critic(f"{url}/critic-toy")
    pipe = models.load_t2v("cogvideox", f"{url}/cogvideox-toy")
    video = pipe("a red circle moves left on a blue background", num_frames=16, height=32, width=32,
                 num_inference_steps=2, output_type="pt", max_sequence_length=32).frames
    assert video.shape[1:] == (16, 3, 32, 32)
