"""`lift evaluate`: statistics (win rate with ties; the intervals are tests/test_stats.py's), the toy oracle's
checks, a tiny run with the zoo models (same seeds for both models), and resumption that redoes only the missing
parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lift import stages
from lift.io import storage, video
from lift.models import sampling
from lift.stages import evaluate, runner
from lift.toy import world

PROMPTS = [{"id": "p0", "prompt": "a red circle moves left on a black background"},
           {"id": "p1", "prompt": "a cat rides a skateboard at sunset"}]  # not a toy prompt: no oracle reading
TINY = ["videos_per_prompt=1", "sampling.steps=2", "sampling.frames=9", "sampling.height=32", "sampling.width=32",
        "batch_size=2", "score_batch_size=4"]
_RUNS: dict[str, str] = {}


def evaluated_run(zoo_dir: str, tmp_path_factory) -> str:
    """A run folder whose eval/ stage ran on the tiny zoo (the same model as base and aligned); built once per
    session and shared with test_report."""
    if zoo_dir not in _RUNS:
        run = str(tmp_path_factory.mktemp("evaluated") / "run")
        storage.write_text(f"{run}/data/eval_prompts.jsonl", "".join(json.dumps(p) + "\n" for p in PROMPTS))
        runner.run_stage("evaluate", _tiny_cfg(run, zoo_dir))
        _RUNS[zoo_dir] = run
    return _RUNS[zoo_dir]


def _tiny_cfg(run: str, zoo_dir: str, *extra: str):
    return stages.load("evaluate", None, [f"run={run}", f"base.name_or_path={zoo_dir}/cogvideox",
                                          f"aligned.name_or_path={zoo_dir}/cogvideox", f"critic={zoo_dir}/critic",
                                          *TINY, *extra])


# ------------------------------------------------------------------------------------------------ statistics


def _video(model: str, pid: str, index: int, reward: float, oracle: float | None = None) -> dict:
    labels = {d: "Good" for d in ("semantic", "motion", "fidelity")}
    probs = {d: {"Good": 1.0, "Normal": 0.0, "Bad": 0.0} for d in labels}
    checks = {c: True for c in evaluate.ORACLE_CHECKS}
    return {"model": model, "prompt_id": pid, "index": index, "reward": reward, "labels": labels, "probs": probs,
            "oracle": None if oracle is None else {"score": oracle, "checks": checks}}


def test_summary_pairs_by_prompt_and_seed_and_counts_ties_half():
    videos = [_video("base", "a", 0, 0.5, 0.5), _video("aligned", "a", 0, 0.6, 0.75),  # win
              _video("base", "a", 1, 0.5, 0.5), _video("aligned", "a", 1, 0.50005, 0.5),  # tie (within the margin)
              _video("base", "b", 0, 0.7), _video("aligned", "b", 0, 0.3),  # loss; no oracle (not a toy prompt)
              _video("aligned", "c", 0, 0.9)]  # no base video with this seed: not a pair
    summary = evaluate.summarize(videos, tie_margin=1e-4)
    cmp = summary["comparison"]
    assert cmp["pairs"] == 3 and (cmp["wins"], cmp["ties"], cmp["losses"]) == (1, 1, 1)
    assert cmp["win_rate"]["mean"] == pytest.approx(0.5) and cmp["win_rate"]["n"] == 3
    assert cmp["reward_gain"]["mean"] == pytest.approx((0.1 + 0.00005 - 0.4) / 3, abs=1e-6)
    assert cmp["oracle_pairs"] == 2 and cmp["oracle_gain"]["mean"] == pytest.approx(0.125)
    base, aligned = summary["models"]["base"], summary["models"]["aligned"]
    assert base["videos"] == 3 and aligned["videos"] == 4 and base["oracle"]["videos"] == 2
    assert base["labels"]["motion"] == {"Good": 3, "Normal": 0, "Bad": 0}
    assert aligned["label_fractions"]["semantic"]["Good"] == 1.0
    assert set(base["oracle"]["checks"]) == set(evaluate.ORACLE_CHECKS)
    assert set(base["oracle"]["dimensions"]) == {"semantic", "motion", "fidelity"}


# ----------------------------------------------------------------------------------------------------- oracle


def _stored(frames: np.ndarray) -> np.ndarray:
    """Frames as evaluation reads them: encoded to mp4 and decoded again."""
    url = "memory://lift-test/oracle/clip.mp4"
    video.write_video(url, frames, 8)
    return video.read_video(url).numpy()


def test_oracle_passes_clean_clips_and_names_each_defect():
    scene = world.Scene("red", "circle", 1, "left", "black")
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    clean = evaluate.oracle(_stored(world.render(scene, (), rng())), scene.prompt)
    assert clean["score"] == 1.0 and all(clean["checks"].values()), clean
    assert clean["measurement"]["colour"] == "red" and clean["measurement"]["direction"] == "left"
    failing = {
        "colour": world.render(world.Scene("blue", "circle", 1, "left", "black"), (), rng()),
        "direction": world.render(world.Scene("red", "circle", 1, "up", "black"), (), rng()),
        "background": world.render(world.Scene("red", "circle", 1, "left", "white"), (), rng()),
        "smooth": world.render(scene, [world.Fault("jitter", 5)], rng()),
        "steady": world.render(scene, [world.Fault("flicker", 50)], rng()),
        "clean": world.render(scene, [world.Fault("noise", 20)], rng()),
        "neutral": world.render(scene, [world.Fault("cast", 70, "blue")], rng()),
        "sharp": world.render(scene, [world.Fault("blur", 1.6)], rng()),
    }
    assert set(failing) == set(evaluate.ORACLE_CHECKS)
    for check, frames in failing.items():
        reading = evaluate.oracle(_stored(frames), scene.prompt)
        assert not reading["checks"][check], (check, reading)
        assert reading["score"] < 1.0
    assert evaluate.oracle(_stored(world.render(scene, (), rng())), "a cat rides a skateboard") is None


# -------------------------------------------------------------------------------------------------- tiny run


@pytest.mark.slow
def test_tiny_run_same_seeds_identical_models(zoo_dir, tmp_path_factory, monkeypatch):
    run = evaluated_run(zoo_dir, tmp_path_factory)
    out = f"{run}/eval"
    results = storage.read_json(f"{out}/{evaluate.RESULTS}")
    assert results["prompts"] == 2 and results["mode"] == "logits" and results["confidence"] == 0.95
    assert set(results["oracle_definition"]["checks"]) == set(evaluate.ORACLE_CHECKS)
    videos = results["videos"]
    assert sorted((v["model"], v["id"]) for v in videos) == [
        ("aligned", "p0-000"), ("aligned", "p1-000"), ("base", "p0-000"), ("base", "p1-000")]
    by = {(v["model"], v["id"]): v for v in videos}
    for pid in ("p0", "p1"):
        base, aligned = by[("base", f"{pid}-000")], by[("aligned", f"{pid}-000")]
        assert base["seed"] == aligned["seed"] == sampling.video_seed(1000, pid, 0)
        assert base["video"] == f"videos/base/{pid}-000.mp4" and aligned["video"] == f"videos/aligned/{pid}-000.mp4"
        frames = video.read_video(f"{out}/{base['video']}")
        assert tuple(frames.shape) == (9, 32, 32, 3)
        # the same model with the same seed: the same video, so the same rating
        assert storage.read_bytes(f"{out}/{base['video']}") == storage.read_bytes(f"{out}/{aligned['video']}")
        assert base["reward"] == pytest.approx(aligned["reward"], abs=1e-4)
        assert base["labels"] == aligned["labels"] and set(base["probs"]) == {"semantic", "motion", "fidelity"}
        assert 0.05 <= base["reward"] <= 0.9
    assert by[("base", "p0-000")]["oracle"]["score"] == by[("aligned", "p0-000")]["oracle"]["score"]
    assert set(by[("base", "p0-000")]["oracle"]["checks"]) == set(evaluate.ORACLE_CHECKS)
    assert by[("base", "p1-000")]["oracle"] is None  # not a toy prompt
    models, cmp = results["models"], results["comparison"]
    assert cmp["pairs"] == 2 and cmp["win_rate"]["mean"] == 0.5 and cmp["ties"] == 2
    assert models["base"]["reward"]["mean"] == pytest.approx(models["aligned"]["reward"]["mean"], abs=1e-4)
    assert models["base"]["reward"]["low"] <= models["base"]["reward"]["mean"] <= models["base"]["reward"]["high"]
    assert models["base"]["oracle"]["videos"] == 1 and cmp["oracle_pairs"] == 1
    assert sum(models["base"]["labels"]["semantic"].values()) == 2
    marker = storage.read_marker(out)
    assert marker["counts"]["videos"] == 4 and marker["counts"]["win_rate"] == 0.5

    # a rerun of the same config is skipped by its marker; without the marker, committed parts are not redone
    cfg = _tiny_cfg(run, zoo_dir)
    assert runner.run_stage("evaluate", cfg) == marker["counts"]

    def refuse(*_args, **_kwargs):
        raise AssertionError("a committed part was redone")

    monkeypatch.setattr(sampling, "load_pipeline", refuse)
    monkeypatch.setattr(evaluate, "Scorer", refuse)
    assert evaluate.run(cfg)["videos"] == 4
    again = storage.read_json(f"{out}/{evaluate.RESULTS}")
    assert again["videos"] == videos and again["comparison"] == cmp


# -------------------------------------------------------------------------------------------------- resuming


class _FakeScorer:
    """Rates aligned videos Good and base videos Bad: a critic that a noisy aligned model fools."""

    frames = 4
    rated: list[str] = []

    def __init__(self, url, device, *args):
        pass

    def rate(self, items, frames, mode):
        assert mode == "logits" and all(f.shape[0] == self.frames for f in frames)
        _FakeScorer.rated += [it.id for it in items]
        out = []
        for it in items:
            p = {"Good": 0.8, "Normal": 0.1, "Bad": 0.1} if it.id.startswith("aligned/") else \
                {"Good": 0.1, "Normal": 0.1, "Bad": 0.8}
            out.append({"labels": {d: max(p, key=p.get) for d in ("semantic", "motion", "fidelity")},
                        "probs": {d: dict(p) for d in ("semantic", "motion", "fidelity")}, "reasons": {},
                        "unparsable": []})
        return out


def test_rerun_redoes_only_missing_parts(tmp_path, monkeypatch):
    """Stub models (toy renderings; the 'aligned' one adds grain) make this fast; only missing parts are redone."""
    sampled: list[tuple[str, str]] = []

    def fake_sample(pipe, family, prompts, seeds, cfg, device):
        faults = [world.Fault("noise", 20)] if pipe == "noisy" else []
        sampled.extend((pipe, p) for p in prompts)
        return np.stack([world.render(world.Scene.from_prompt(p), faults, np.random.default_rng(s % 2**32),
                                    frames=cfg.frames, size=cfg.height) for p, s in zip(prompts, seeds)])

    monkeypatch.setattr(sampling, "load_pipeline", lambda family, name, sampling, device, *trust: name)
    monkeypatch.setattr(sampling, "sample", fake_sample)
    monkeypatch.setattr(evaluate, "Scorer", _FakeScorer)
    prompts = [world.Scene("green", "square", 1, "up", "gray").prompt,
               world.Scene("yellow", "circle", 2, "right", "black").prompt]
    storage.write_text(f"{tmp_path}/prompts.jsonl",
                       "".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    cfg = stages.load("evaluate", None, [
        f"run={tmp_path}", f"prompts={tmp_path}/prompts.jsonl", "base.name_or_path=clean", "aligned.name_or_path=noisy",
        "critic=fake", "videos_per_prompt=2", "num_shards=2", "batch_size=1", "score_batch_size=2",
        "sampling.frames=16"])
    counts = evaluate.run(cfg)
    assert len(sampled) == 8 and len(_FakeScorer.rated) == 8 and counts["videos"] == 8
    # reward hacking as the report must show it: the critic prefers aligned, the oracle prefers base
    assert counts["mean_reward_aligned"] > counts["mean_reward_base"] and counts["win_rate"] == 1.0
    assert counts["oracle_base"] == 1.0 and counts["oracle_aligned"] < 1.0
    first = storage.read_json(f"{tmp_path}/eval/{evaluate.RESULTS}")
    assert first["comparison"]["oracle_gain"]["high"] < 0 < first["comparison"]["reward_gain"]["low"]

    generated = storage.Shards(f"{tmp_path}/eval/generated/aligned", 2)
    scores = storage.Shards(f"{tmp_path}/eval/scores", 2)
    storage.remove(generated.part(1))
    storage.remove(scores.part(0))
    sampled.clear()
    _FakeScorer.rated = []
    assert evaluate.run(cfg)["videos"] == 8
    items = [f"q{i}-{k:03d}" for i in range(2) for k in range(2)]
    assert sampled == [("noisy", prompts[int(i[1])]) for i in storage.shard_slice(items, 1, 2)]
    every = [f"{m}/{i}" for m in ("base", "aligned") for i in items]
    assert _FakeScorer.rated == storage.shard_slice(every, 0, 2)
    assert storage.read_json(f"{tmp_path}/eval/{evaluate.RESULTS}")["videos"] == first["videos"]


def test_bad_config_fails_before_any_work(tmp_path):
    cfg = stages.load("evaluate", None, [f"run={tmp_path}", "label_scores.Great=0.5"])
    with pytest.raises(ValueError, match="label_scores"):
        runner.run_stage("evaluate", cfg)  # the stage's input check, before the runner writes anything
    assert not (tmp_path / "eval").exists()
