"""lift/toy/world.py: the toy world's determinism, label mix, reasons, files and CLI stage, and the oracle that reads
scenes and defects back off (encoded) clips."""

from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest

from lift import cli, config, stages
from lift.data import hra
from lift.data.release import assign_split
from lift.io import storage, video
from lift.toy import world

SMALL = ["toy.num_clips=24", "toy.num_prompts=10", "toy.num_real=4"]


def _generate(out: str, *overrides: str) -> dict:
    return world.generate(stages.load("data", None, [f"out={out}", *SMALL, *overrides]))


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _encoded(frames: np.ndarray, url: str = "memory://toy-test/clip.mp4") -> np.ndarray:
    """Frames as a reader sees them after the mp4 round trip, so the defects are tested as they are stored."""
    video.write_video(url, frames, fps=8)
    return video.read_video(url).numpy()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    _generate(str(tmp_path / "a"))
    _generate(str(tmp_path / "b"))
    _generate(str(tmp_path / "c"), "seed=1")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 24 + 4 + 4  # videos, real videos, manifest + prompts + eval prompts + real manifest
    assert a == b
    assert a.keys() == c.keys()
    assert a["manifest.jsonl"] != c["manifest.jsonl"] and a["prompts.jsonl"] != c["prompts.jsonl"]
    assert sum(a[k] != c[k] for k in a if k.endswith(".mp4")) >= 26


def test_clips_do_not_depend_on_how_many_are_made(tmp_path):
    _generate(str(tmp_path / "a"))
    _generate(str(tmp_path / "b"), "toy.num_clips=10")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert all(a[k] == b[k] for k in b if k.startswith("videos/") or k.startswith("real/"))
    assert a["manifest.jsonl"].splitlines()[:10] == b["manifest.jsonl"].splitlines()


def test_label_mix_is_close_to_lift_hra():
    clips = [world.sample_clip(np.random.default_rng([0, 0, i])) for i in range(600)]
    for dim in hra.DIMENSIONS:
        share = collections.Counter(c.labels[dim] for c in clips)
        for label, target in zip(hra.LABELS, (0.35, 0.15, 0.50)):
            assert abs(share[label] / len(clips) - target) < 0.06, (dim, label, share)
    # and the three dimensions are drawn independently, not as one shared label
    assert 0.2 < np.mean([c.labels["semantic"] == c.labels["motion"] for c in clips]) < 0.55


def test_label_mix_is_configurable(tmp_path):
    counts = _generate(str(tmp_path), "toy.label_mix.Good=0", "toy.label_mix.Normal=1", "toy.label_mix.Bad=0")
    assert all(counts["labels"][d] == {"Good": 0, "Normal": 24, "Bad": 0} for d in hra.DIMENSIONS)
    with pytest.raises(config.ConfigError, match="label_mix"):
        _generate(str(tmp_path / "x"), "toy.label_mix.Good=0", "toy.label_mix.Normal=0", "toy.label_mix.Bad=0")


def _wrong(clip: world.Clip) -> list[str]:
    return [a for a in ("shape", "count", "colour", "direction") if getattr(clip.scene, a) != getattr(clip.shown, a)]


KEYWORDS = {"jitter": "jitter", "freeze": "freezes", "speed": "faster", "flicker": "flickers",
            "noise": "noise", "blur": "blurred", "cast": "color cast"}


def test_severity_decides_the_label_and_the_reason_names_the_defect():
    seen = collections.Counter()
    for i in range(400):
        clip = world.sample_clip(np.random.default_rng([3, i]))
        wrong, label = _wrong(clip), clip.labels["semantic"]
        assert len(wrong) == {"Good": 0, "Normal": 1, "Bad": 2}[label]
        reason = clip.reasons["semantic"]
        if label == "Good":
            assert reason.endswith("the prompt.") and clip.scene.colour in reason and clip.scene.shape in reason
        for attribute in wrong:
            shown, asked = getattr(clip.shown, attribute), getattr(clip.scene, attribute)
            if attribute == "count":
                shown, asked = ("one", "two") if shown == 1 else ("two", "one")
            assert re.search(rf"\b{shown}s?\b.*, not (a )?{asked}s?\b", reason), (attribute, reason)
            seen[attribute] += 1
        for dim in ("motion", "fidelity"):
            faults = [f for f in clip.faults if world.CATALOGUE[f.name].dimension == dim]
            if clip.labels[dim] == "Good":
                assert not faults
                assert ("smoothly" if dim == "motion" else "clean and sharp") in clip.reasons[dim]
                continue
            (fault,) = faults
            assert fault.strength == world.CATALOGUE[fault.name].strength(clip.labels[dim])
            assert KEYWORDS[fault.name] in clip.reasons[dim], clip.reasons[dim]
            if fault.name == "cast":
                assert f"{fault.tint} color cast" in clip.reasons[dim]
            if fault.name == "jitter":
                assert f"up to {fault.strength:g} pixels" in clip.reasons[dim]
            seen[fault.name] += 1
    assert set(seen) == set(world.CATALOGUE)  # every catalogue row occurs


def test_example_reasons_read_well():
    scene = world.Scene("red", "circle", 1, "left", "black")
    assert scene.prompt == "a red circle moves left on a black background"
    assert world.Scene("red", "circle", 2, "left", "black").prompt == "two red circles move left on a black background"
    words = world._words(world.Scene("green", "circle", 1, "left", "black"))
    reason = world.CATALOGUE["colour"].reason.format(**words, shown="green", asked="red")
    assert reason == "The circle is green, not red."
    assert world.CATALOGUE["jitter"].bad_reason.format(**words, amount="4") == \
        "The circle jitters by up to 4 pixels between frames."
    assert world.GOOD_REASONS["semantic"].format(**world._words(scene)) == "The red circle matches the prompt."


def test_prompt_grammar_round_trips():
    scenes = world.all_scenes()
    assert len(scenes) == len(set(s.prompt for s in scenes)) == 4 * 3 * 2 * 4 * 3
    for scene in scenes:
        assert world.Scene.from_prompt(scene.prompt) == scene
    for bad in ("a red circles move left on a black background", "two red circle moves left on a black background",
                "a purple circle moves left on a black background", "a red circle moves left"):
        with pytest.raises(ValueError, match="not a toy prompt"):
            world.Scene.from_prompt(bad)
    with pytest.raises(ValueError):
        world.Scene("purple", "circle", 1, "left", "black")


def test_manifest_split_prompts_and_real_set(tmp_path):
    out = str(tmp_path)
    counts = _generate(out, "toy.num_clips=200", "split.test_fraction=0.3", "split.seed=5")
    records = hra.load_manifest(storage.join(out, "manifest.jsonl"))  # validates records, finds every video
    assert [r.id for r in records] == [f"{i:06d}" for i in range(200)]
    assert all(r.video == f"videos/{r.id}.mp4" and r.reasons.keys() == set(hra.DIMENSIONS) for r in records)
    assert all(r.split == assign_split(r.id, 0.3, 5) for r in records)
    assert 0.2 < sum(r.split == "test" for r in records) / 200 < 0.4
    assert counts["records"] == 200 and counts["train"] + counts["test"] == 200
    assert counts["labels"] == {d: {label: sum(r.labels[d] == label for r in records) for label in hra.LABELS}
                                for d in hra.DIMENSIONS}
    assert all(world.Scene.from_prompt(r.prompt) for r in records)

    prompts = [json.loads(line) for line in storage.read_text(storage.join(out, "prompts.jsonl")).splitlines()]
    assert [p["id"] for p in prompts] == [f"prompt-{i:05d}" for i in range(10)]
    assert len({p["prompt"] for p in prompts}) == 10 and counts["prompts"] == 10
    held_out = [json.loads(line) for line in storage.read_text(storage.join(out, "eval_prompts.jsonl")).splitlines()]
    assert len({p["prompt"] for p in held_out}) == counts["eval_prompts"] == 16
    assert not {p["prompt"] for p in held_out} & {p["prompt"] for p in prompts}, "evaluation prompts are held out"

    real = [json.loads(line) for line in storage.read_text(storage.join(out, "real", "manifest.jsonl")).splitlines()]
    assert len(real) == counts["real"] == 4
    for r in real:
        assert set(r) == {"id", "video", "prompt"}
        frames = video.read_video(storage.join(out, "real", r["video"])).numpy()
        assert frames.shape == (16, 32, 32, 3)
        m = world.measure(frames)
        assert all(m.matches(world.Scene.from_prompt(r["prompt"])).values())  # real clips are clean captions
        assert m.jitter < 0.8 and m.noise < 2 and m.cast < 10


def test_defects_are_in_the_stored_videos(tmp_path):
    out = str(tmp_path)
    _generate(out, "toy.num_clips=40")
    for r in hra.load_manifest(storage.join(out, "manifest.jsonl")):
        m = world.measure(video.read_video(storage.join(out, r.video)).numpy())
        reasons = r.reasons
        if "strong" in reasons["fidelity"] and "cast" in reasons["fidelity"]:
            assert m.cast > 40
        if "Heavy grain" in reasons["fidelity"]:
            assert m.noise > 8
        if "flickers strongly" in reasons["motion"]:
            assert m.flicker > 0.2  # 0.67 alone; a cast added on top dilutes it on dark backgrounds
        if r.labels["motion"] == "Good" and r.labels["fidelity"] == "Good":
            assert m.jitter < 0.8 and m.flicker < 0.05 and m.noise < 2


def test_cli_writes_success_and_skips_a_rerun(root_url, capsys):
    out = storage.join(root_url, "data")
    args = ["data", "toy", out, "toy.num_clips=12", "toy.num_prompts=3", "toy.num_real=2"]
    assert cli.main(args) == 0
    marker = storage.read_marker(out)
    assert marker["stage"] == "data"
    assert marker["counts"]["records"] == 12 and marker["counts"]["real"] == 2
    assert sum(marker["counts"]["labels"]["semantic"].values()) == 12
    assert len(hra.load_manifest(storage.join(out, "manifest.jsonl"))) == 12
    storage.remove(storage.join(out, "videos", "000003.mp4"))  # a rerun that regenerated would bring it back
    assert cli.main(args) == 0
    assert "already complete" in capsys.readouterr().err
    assert not storage.exists(storage.join(out, "videos", "000003.mp4"))
    assert cli.main([*args, "--force"]) == 0
    assert storage.exists(storage.join(out, "videos", "000003.mp4"))


@pytest.mark.parametrize("override,match", [("toy.size=33", "toy.size"), ("toy.frames=2", "toy.frames"),
                                            ("split.test_fraction=1.5", "test_fraction")])
def test_bad_toy_config_fails_before_writing(tmp_path, override, match):
    with pytest.raises(config.ConfigError, match=match):
        _generate(str(tmp_path / "out"), override)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("scene", world.all_scenes()[::7], ids=lambda s: s.prompt.replace(" ", "-"))
def test_oracle_reads_clean_scenes(scene):
    m = world.measure(_encoded(world.render(scene, (), np.random.default_rng(0))))
    assert m.matches(scene) == {"colour": True, "direction": True, "background": True}
    assert m.jitter < 0.6 and m.flicker < 0.02 and m.noise < 2 and m.cast < 10 and m.sharpness > 0.7


def _faulted(name: str, label: str, scene: world.Scene, seed: int) -> world.Measurement:
    fault = world.Fault(name, world.CATALOGUE[name].strength(label), "blue" if name == "cast" else None)
    return world.measure(_encoded(world.render(scene, [fault], np.random.default_rng(seed))))


@pytest.mark.parametrize("name,field,normal,bad", [
    ("jitter", "jitter", 1.0, 2.5), ("speed", "jitter", 0.45, 1.0), ("flicker", "flicker", 0.1, 0.4),
    ("noise", "noise", 3.0, 9.0), ("cast", "cast", 15.0, 40.0),
])
def test_oracle_sees_defects_grow_with_severity(name, field, normal, bad):
    for seed, scene in enumerate(world.all_scenes()[3::41]):
        clean = getattr(world.measure(_encoded(world.render(scene, (), np.random.default_rng(seed)))), field)
        mild, strong = (getattr(_faulted(name, label, scene, seed), field) for label in ("Normal", "Bad"))
        assert clean < normal < mild < bad < strong, (scene.prompt, clean, mild, strong)
        assert _faulted(name, "Bad", scene, seed).matches(scene)["colour"]  # defects keep the colour nameable


def test_oracle_blur_freeze_and_semantic_defects():
    scene = world.Scene("yellow", "square", 1, "down", "gray")
    clean = world.measure(_encoded(world.render(scene, (), np.random.default_rng(0))))
    normal, bad = (_faulted("blur", label, scene, 0) for label in ("Normal", "Bad"))
    assert clean.sharpness > normal.sharpness + 0.15 > bad.sharpness + 0.3
    frozen = world.render(scene, [world.Fault("freeze", 6)], np.random.default_rng(0))
    still = [t for t in range(1, 16) if np.array_equal(frozen[t], frozen[t - 1])]
    assert len(still) == 6 and still == list(range(still[0], still[0] + 6))
    assert world.measure(_encoded(frozen)).jitter > clean.jitter + 0.5
    # a semantic defect is the scene shown: the oracle reads the shown colour and direction, not the prompt's
    shown = world.Scene("blue", "square", 1, "left", "gray")
    m = world.measure(_encoded(world.render(shown, (), np.random.default_rng(0))))
    assert (m.colour, m.direction) == ("blue", "left") and not any(
        v for k, v in m.matches(scene).items() if k != "background")


def test_oracle_on_an_empty_clip_and_render_contract():
    blank = np.full((8, 32, 32, 3), 110, dtype=np.uint8)
    m = world.measure(blank)
    assert m.colour is None and m.direction is None and m.background == "gray"
    scene = world.Scene("red", "triangle", 2, "up", "white")
    frames = world.render(scene, (), np.random.default_rng(0), frames=12, size=64)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, world.render(scene, (), np.random.default_rng(0), frames=12, size=64))
    assert world.measure(frames).matches(scene)["direction"]
    with pytest.raises(ValueError, match="semantic"):
        world.render(scene, [world.Fault("colour", 1)])
    with pytest.raises(ValueError, match="tint"):
        world.Fault("cast", 70)
    with pytest.raises(ValueError, match="unknown defect"):
        world.Fault("wobble", 1)
