"""`lift evaluate`: base vs aligned text-to-video model on held-out prompts, judged by the critic and, for toy
prompts, by an independent oracle that reads the frames without any model.

Both models sample video k of prompt p with the same seed (`sampling.video_seed(seed, p, k)`), so every
(prompt, seed) pair is a paired comparison. The critic rates every video in logits mode (label probabilities,
reward = expectation of s(label)); the oracle (`world.measure`) checks each toy clip against its prompt's scene
(`ORACLE_CHECKS`), so a critic that is fooled (reward hacking) shows up as a reward gain without an oracle gain.
Output:

    OUT/videos/{base,aligned}/<prompt id>-<k>.mp4
    OUT/generated/{base,aligned}/part-*.jsonl, manifest.jsonl   per-video seed, prompt and oracle reading
    OUT/scores/part-*.jsonl, scores.jsonl                        critic ratings of both models' videos
    OUT/results.json                                             the comparison (see `summarize`) + every video

Work is sharded over ranks like `lift generate` / `lift score`: one set of shards per model for generation, one
for scoring; committed parts are skipped on a rerun, so a crashed run finishes only the rest.

    lift evaluate                                                 # toy run folder, CPU
    torchrun --nproc-per-node 8 -m lift evaluate base.name_or_path=THUDM/CogVideoX-2b \\
        aligned.name_or_path=s3://b/run/align/model critic=s3://b/run/critic/model prompts=s3://b/heldout.jsonl \\
        sampling.height=480 sampling.width=720 sampling.frames=49 sampling.steps=50
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lift.core import dist, logs
from lift.core.stats import mean_ci
from lift.data import hra, prompts
from lift.io import jsonl, sharded, storage, video
from lift.models import integrity, sampling
from lift.models.scoring import Item, Scorer, reward_from_probs, score_sharded
from lift.toy import world

log = logging.getLogger(__name__)
MODELS = ("base", "aligned")
RESULTS = "results.json"

# name -> (dimension, what passing means). Thresholds are calibrated on encoded toy clips at 32 px, 16 frames
# (docs/DATA.md, "The oracle"): clean clips pass every check; each defect at its Normal strength fails its check.
ORACLE_CHECKS: dict[str, tuple[str, str]] = {
    "colour": ("semantic", "the shapes' mean colour is nearest to the prompt's colour"),
    "direction": ("semantic", "the shapes drift the prompt's way (2+ px at 32 px)"),
    "background": ("semantic", "the frame border is nearest to the prompt's background"),
    "smooth": ("motion", "a shape is seen and its centroid stays within 0.5 px RMS (at 32 px) of a straight, "
                         "constant-speed path (clean 0.06-0.44 px; jitter Normal 1.3+, speed Normal 0.56+)"),
    "steady": ("motion", "brightness changes by at most 5% between frames (clean < 0.4%; flicker Normal 15%)"),
    "clean": ("fidelity", "border grain is at most 2 levels (clean 0; noise Normal 4.4)"),
    "neutral": ("fidelity", "the background's colour cast is at most 12 levels (clean 0; cast Normal 27)"),
    "sharp": ("fidelity", "edges are at least 0.88x as steep as a clean rendering of the scene seen "
                          "(clean 0.91-1.2x; blur Normal 0.6-0.9x)"),
}
ORACLE_SCORE = "fraction of the oracle checks a video passes, in [0, 1] (1: every check passed)"
JITTER_PX, FLICKER, NOISE_LEVELS, CAST_LEVELS, SHARPNESS_RATIO = 0.5, 0.05, 2.0, 12.0, 0.88


# ------------------------------------------------------------------------------------------------- statistics


def _prompts(videos: Sequence[dict]) -> list[str]:
    """The cluster of each video: its prompt (the seeds of one prompt share its difficulty)."""
    return [v["prompt_id"] for v in videos]


def _paired(pairs: Sequence[tuple[dict, dict]], value) -> dict:
    """Mean of value(base, aligned) over pairs with its cluster-robust 95% interval (clusters: prompts), and the
    Student-t interval that takes the pairs as independent beside it, for comparison."""
    values = [value(b, a) for b, a in pairs]
    plain = mean_ci(values)
    return {**mean_ci(values, clusters=_prompts([a for _, a in pairs])),
            "unclustered": {"low": plain["low"], "high": plain["high"]}}


def win_score(aligned: float, base: float, tie_margin: float) -> float:
    """1 when aligned beats base by more than `tie_margin`, 0 when it loses by more, 0.5 for a tie."""
    diff = aligned - base
    return 0.5 if abs(diff) <= tie_margin else float(diff > 0)


# ----------------------------------------------------------------------------------------------------- oracle


def oracle(frames: np.ndarray, prompt: str) -> dict | None:
    """The oracle's reading of a clip against its prompt's scene; None when the prompt is not a toy prompt.

    {"score": fraction of ORACLE_CHECKS passed, "checks": {name: bool}, "measurement": world.measure fields}.
    """
    try:
        scene = world.Scene.from_prompt(prompt)
    except ValueError:
        return None
    frames = np.asarray(frames)
    count, height, width, _ = frames.shape
    m = world.measure(frames)
    matches = m.matches(scene)
    # sharpness depends on the colours: compare with a clean rendering of the scene as seen (colour, background)
    seen = world.Scene(m.colour or scene.colour, scene.shape, scene.count, scene.direction, m.background)
    reference = world.measure(world.render(seen, (), np.random.default_rng(0), frames=count, size=width)).sharpness
    checks = {
        "colour": matches["colour"],
        "direction": matches["direction"],
        "background": matches["background"],
        "smooth": m.colour is not None and m.jitter <= JITTER_PX * width / 32,
        "steady": m.flicker <= FLICKER,
        "clean": m.noise <= NOISE_LEVELS,
        "neutral": m.cast <= CAST_LEVELS,
        "sharp": m.colour is not None and m.sharpness >= SHARPNESS_RATIO * reference,
    }
    checks = {k: bool(v) for k, v in checks.items()}
    reading = {"colour": m.colour, "background": m.background, "direction": m.direction,
               "drift": [round(v, 3) for v in m.drift], "jitter": round(m.jitter, 4), "flicker": round(m.flicker, 4),
               "noise": round(m.noise, 3), "cast": round(m.cast, 3), "sharpness": round(m.sharpness, 4),
               "reference_sharpness": round(reference, 4)}
    return {"score": round(sum(checks.values()) / len(checks), 6), "checks": checks, "measurement": reading}


# -------------------------------------------------------------------------------------------------- summaries


def _model_summary(videos: list[dict]) -> dict:
    rated = [v for v in videos if v.get("reward") is not None]
    labels = {d: {l: sum(v["labels"].get(d) == l for v in videos) for l in hra.LABELS} for d in hra.DIMENSIONS}
    fractions = {d: {l: round(c / max(len(videos), 1), 6) for l, c in labels[d].items()} for d in hra.DIMENSIONS}
    probs = {d: {l: round(float(np.mean([v["probs"][d][l] for v in videos if v.get("probs")] or [0.0])), 6)
                 for l in hra.LABELS} for d in hra.DIMENSIONS}
    toy_videos = [v for v in videos if v.get("oracle")]
    out = {"videos": len(videos), "reward": mean_ci([v["reward"] for v in rated], clusters=_prompts(rated)),
           "labels": labels, "label_fractions": fractions,
           "label_probs": probs, "oracle": None}
    if toy_videos:
        checks = {c: round(sum(v["oracle"]["checks"][c] for v in toy_videos) / len(toy_videos), 6)
                  for c in ORACLE_CHECKS}
        dims = {d: round(float(np.mean([checks[c] for c, (dim, _) in ORACLE_CHECKS.items() if dim == d])), 6)
                for d in hra.DIMENSIONS}
        out["oracle"] = {"videos": len(toy_videos), "score": mean_ci([v["oracle"]["score"] for v in toy_videos],
                                                                     clusters=_prompts(toy_videos)),
                         "checks": checks, "dimensions": dims}
    return out


def summarize(videos: Sequence[dict], tie_margin: float = 1e-4) -> dict:
    """Per model: reward mean with 95% CI, label counts/fractions/mean probabilities per dimension, oracle pass
    rates; and the paired comparison over (prompt id, index) pairs both models have: win rate of aligned over
    base (ties count half), reward gain and oracle gain (aligned - base), each with its 95% CI.

    Every interval is cluster-robust over prompts (`lift.core.stats.mean_ci`); the paired figures also carry the
    `unclustered` Student-t interval, which is too narrow when a prompt's seeds share its difficulty."""
    by_model = {m: [v for v in videos if v["model"] == m] for m in MODELS}
    models = {m: _model_summary(vs) for m, vs in by_model.items()}
    base = {(v["prompt_id"], v["index"]): v for v in by_model["base"]}
    pairs = [(base[(v["prompt_id"], v["index"])], v) for v in by_model["aligned"]
             if (v["prompt_id"], v["index"]) in base]
    scored = [(b, a) for b, a in pairs if b.get("reward") is not None and a.get("reward") is not None]
    wins = [win_score(a["reward"], b["reward"], tie_margin) for b, a in scored]
    judged = [(b, a) for b, a in pairs if b.get("oracle") and a.get("oracle")]
    comparison = {
        "pairs": len(pairs),
        "prompts": len({a["prompt_id"] for _, a in pairs}),
        "win_rate": _paired(scored, lambda b, a: win_score(a["reward"], b["reward"], tie_margin)),
        "wins": sum(w == 1.0 for w in wins), "ties": sum(w == 0.5 for w in wins), "losses": sum(w == 0.0 for w in wins),
        "reward_gain": _paired(scored, lambda b, a: a["reward"] - b["reward"]),
        "oracle_pairs": len(judged),
        "oracle_gain": _paired(judged, lambda b, a: a["oracle"]["score"] - b["oracle"]["score"]),
        "oracle_win_rate": _paired(judged, lambda b, a: win_score(a["oracle"]["score"], b["oracle"]["score"], 0.0)),
        "tie_margin": tie_margin,
    }
    return {"models": models, "comparison": comparison}


# ------------------------------------------------------------------------------------------------------ stage


def check(cfg: DictConfig) -> None:
    """The reward settings, the held-out prompts and the folders of both models and the critic."""
    for key, expected in (("label_scores", hra.LABELS), ("dimension_weights", hra.DIMENSIONS)):
        if sorted(cfg[key]) != sorted(expected):
            raise ValueError(f"config key '{key}' must have exactly the keys {list(expected)}, got {list(cfg[key])}")
    prompts.read_prompts(cfg.prompts)
    for key in (*(f"{name}.name_or_path" for name in MODELS), "critic"):
        integrity.check_folder(OmegaConf.select(cfg, key), key)


def _generate_model(name: str, model: DictConfig, items: list[dict], cfg: DictConfig, runtime: dist.Runtime) -> str:
    """Sample, write and oracle-check this rank's uncommitted shards of one model; returns its manifest URL."""

    def load():
        return sampling.load_pipeline(model.family, model.name_or_path, cfg.sampling, runtime.device,
                                      model.get("trust_remote_code", False))

    def record(item: dict, rel: str, url: str) -> dict:
        decoded = video.read_video(url).numpy()  # the oracle reads what is stored, as the critic does
        return {**item, "model": name, "video": rel, "oracle": oracle(decoded, item["prompt"])}

    def work(pipe, mine: list[dict]):
        return sampling.render(pipe, model.family, mine, cfg.batch_size, cfg.sampling, runtime.device, cfg.out,
                               f"videos/{name}", record)

    shards = storage.Shards.layout(storage.join(cfg.out, "generated", name), cfg.num_shards, runtime.world_size)
    sharded.run_parts(shards, items, work, runtime, hra.MANIFEST, f"evaluate {name}", load,
                      what=f"evaluate: generating with the {name} model", model=model.name_or_path)
    if runtime.device.type == "cuda":
        torch.cuda.empty_cache()
    return storage.join(shards.url, hra.MANIFEST)


def run(cfg: DictConfig) -> dict:
    """`lift evaluate`: every rank generates and scores its shards; rank 0 writes OUT/results.json."""
    runtime = dist.init()
    held_out = prompts.read_prompts(cfg.prompts)
    items = sampling.rollout_items(held_out, cfg.seed, cfg.videos_per_prompt)
    manifests = {name: _generate_model(name, cfg[name], items, cfg, runtime) for name in MODELS}

    to_score = [Item(f"{name}/{it['id']}", f"videos/{name}/{it['id']}.mp4",
                     storage.join(cfg.out, f"videos/{name}/{it['id']}.mp4"), it["prompt"])
                for name in MODELS for it in items]
    scores_url = storage.join(cfg.out, "scores")
    pending = storage.Shards.layout(scores_url, cfg.num_shards, runtime.world_size).todo(runtime.rank,
                                                                                         runtime.world_size)
    # the critic is loaded only by a rank with shards left to score (score_sharded touches it only for those)
    scorer = Scorer(cfg.critic, runtime.device, cfg.max_new_tokens) if pending else None
    label_scores, weights = dict(cfg.label_scores), dict(cfg.dimension_weights)

    def make_record(item: Item, rating: dict) -> dict:
        return {"key": item.id, "labels": rating["labels"], "probs": rating["probs"], "reasons": rating["reasons"],
                "reward": round(reward_from_probs(rating["probs"], label_scores, weights), 6)}

    ratings = score_sharded(to_score, scorer, scores_url, "logits", cfg.score_batch_size, cfg.num_shards, runtime,
                            make_record)
    if not runtime.is_main:
        return {}

    by_key = {r["key"]: r for r in ratings}
    videos = []
    for name in MODELS:
        for _, v, _ in jsonl.read(manifests[name], keys=("id",)):
            r = by_key[f"{name}/{v['id']}"]
            videos.append({**v, "labels": r["labels"], "probs": r["probs"], "reasons": r["reasons"],
                           "reward": r["reward"]})
    summary = summarize(videos, cfg.tie_margin)
    results = {
        "base": {"family": cfg.base.family, "name_or_path": cfg.base.name_or_path},
        "aligned": {"family": cfg.aligned.family, "name_or_path": cfg.aligned.name_or_path},
        "critic": cfg.critic, "mode": "logits", "prompts": len(held_out), "videos_per_prompt": cfg.videos_per_prompt,
        "seed": cfg.seed, "sampling": {k: cfg.sampling[k] for k in cfg.sampling},
        "label_scores": label_scores, "dimension_weights": weights, "confidence": 0.95,
        "oracle_definition": {"score": ORACLE_SCORE,
                              "checks": {k: {"dimension": d, "passes_when": what}
                                         for k, (d, what) in ORACLE_CHECKS.items()}},
        **summary,
        "videos": videos,
    }
    storage.write_json(storage.join(cfg.out, RESULTS), results)
    models, comparison = summary["models"], summary["comparison"]
    oracle_means = {m: (models[m]["oracle"] or {}).get("score", {}).get("mean") for m in MODELS}
    logs.event(log, "evaluate: results", out=storage.join(cfg.out, RESULTS),
               reward_base=models["base"]["reward"]["mean"], reward_aligned=models["aligned"]["reward"]["mean"],
               win_rate=comparison["win_rate"]["mean"], oracle_base=oracle_means["base"],
               oracle_aligned=oracle_means["aligned"])
    return {"prompts": len(held_out), "videos": len(videos), "pairs": comparison["pairs"],
            "mean_reward_base": models["base"]["reward"]["mean"],
            "mean_reward_aligned": models["aligned"]["reward"]["mean"],
            "win_rate": comparison["win_rate"]["mean"],
            "oracle_base": oracle_means["base"], "oracle_aligned": oracle_means["aligned"]}
