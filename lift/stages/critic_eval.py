"""`lift critic-eval`: the critic's accuracy on the test split, in the layout of LiFT's Table 2.

Writes OUT/accuracy.json (accuracy per dimension and average, confusion matrices rows=truth x cols=prediction,
label distributions, majority-class baseline and the critic's margin over it with its standard error) and
OUT/accuracy.md beside the predictions (predictions.jsonl).

    lift critic-eval
    torchrun --nproc-per-node 8 -m lift critic-eval critic=s3://b/run/critic/model data=s3://b/run/data
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from lift.core import dist, stats
from lift.data import hra
from lift.io import storage
from lift.models import integrity
from lift.models.scoring import Item, Scorer, score_sharded

# LiFT's Table 2 (semantic / motion / fidelity / avg), for reference next to ours.
PAPER = {
    "LiFT-Critic-40B": (90.23, 94.89, 95.53, 93.55),
    "LiFT-Critic-13B": (85.61, 88.92, 88.51, 87.68),
    "GPT-4o": (70.59, 67.29, 71.99, 69.96),
    "LiFT-Critic-40B w/o reasons": (84.55, 88.01, 88.62, 87.06),
}


def metrics(truth: list[dict[str, str]], predicted: list[dict[str, str | None]]) -> dict:
    """Accuracy (%), confusion matrices and label distributions per dimension; no label counts as wrong.

    `over_majority`: the critic's accuracy minus the majority class's, in points, with the standard error of that
    paired difference over the videos (each video: critic right minus majority class right), so "more than two
    standard errors above the majority class" can be read off directly."""
    out = {"videos": len(truth), "accuracy": {}, "confusion": {}, "truth_distribution": {},
           "predicted_distribution": {}, "majority_baseline": {}, "over_majority": {}, "unparsable": {}}
    for d in hra.DIMENSIONS:
        pairs = [(t[d], p.get(d)) for t, p in zip(truth, predicted)]
        out["accuracy"][d] = round(100.0 * sum(t == p for t, p in pairs) / len(pairs), 2)
        out["confusion"][d] = {t: {p: sum(a == t and b == p for a, b in pairs) for p in hra.LABELS}
                               for t in hra.LABELS}
        out["truth_distribution"][d] = {l: sum(t == l for t, _ in pairs) for l in hra.LABELS}
        out["predicted_distribution"][d] = {l: sum(p == l for _, p in pairs) for l in hra.LABELS}
        out["majority_baseline"][d] = round(100.0 * max(out["truth_distribution"][d].values()) / len(pairs), 2)
        majority = max(hra.LABELS, key=lambda label: out["truth_distribution"][d][label])
        gap = stats.mean_ci([100.0 * ((t == p) - (t == majority)) for t, p in pairs])
        out["over_majority"][d] = {"points": round(gap["mean"], 2),
                                   "se": None if gap["std"] is None else round(gap["std"] / math.sqrt(len(pairs)), 2)}
        out["unparsable"][d] = sum(p is None for _, p in pairs)
    out["accuracy"]["avg"] = round(sum(out["accuracy"][d] for d in hra.DIMENSIONS) / len(hra.DIMENSIONS), 2)
    out["majority_baseline"]["avg"] = round(
        sum(out["majority_baseline"][d] for d in hra.DIMENSIONS) / len(hra.DIMENSIONS), 2)
    return out


def markdown(result: dict, name: str) -> str:
    acc, base = result["accuracy"], result["majority_baseline"]
    rows = ["| critic | semantic | motion | fidelity | avg |", "|---|---|---|---|---|",
            f"| **{name}** | {acc['semantic']:.2f} | {acc['motion']:.2f} | {acc['fidelity']:.2f} | {acc['avg']:.2f} |",
            f"| majority class | {base['semantic']:.2f} | {base['motion']:.2f} | {base['fidelity']:.2f} | "
            f"{base['avg']:.2f} |"]
    rows += [f"| {k} (paper) | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for k, vals in PAPER.items()]
    text = [f"# Critic accuracy (%) on {result['videos']} test videos", "", *rows, ""]
    for d in hra.DIMENSIONS:
        text += [f"## {d}: confusion (rows: truth, columns: prediction)", "",
                 "| truth \\ predicted | " + " | ".join(hra.LABELS) + " |", "|---|---|---|---|"]
        text += [f"| {t} | " + " | ".join(str(result["confusion"][d][t][p]) for p in hra.LABELS) + " |"
                 for t in hra.LABELS]
        text.append("")
    return "\n".join(text)


def _records(cfg: DictConfig) -> list[hra.Record]:
    """The manifest's records of the split evaluated (at least one)."""
    manifest = storage.join(cfg.data, hra.MANIFEST)
    records = [r for r in hra.load_manifest(manifest) if r.split == cfg.split]
    if not records:
        raise ValueError(f"{manifest}: no records in the '{cfg.split}' split")
    return records


def check(cfg: DictConfig) -> None:
    """The manifest (every line, every video present, the split not empty) and the critic's folder."""
    _records(cfg)
    integrity.check_folder(cfg.critic, "critic")


def run(cfg: DictConfig) -> dict:
    runtime = dist.init()
    manifest = storage.join(cfg.data, hra.MANIFEST)
    records = _records(cfg)
    items = [Item(r.id, r.video, hra.video_url(manifest, r), r.prompt) for r in records]
    scorer = Scorer(cfg.critic, runtime.device, cfg.max_new_tokens)
    rated = score_sharded(items, scorer, storage.join(cfg.out, "predictions"), cfg.mode, cfg.batch_size,
                          cfg.num_shards, runtime, lambda item, rating: {"id": item.id, **rating})
    if not runtime.is_main:
        return {}
    by_id = {r["id"]: r["labels"] for r in rated}
    result = metrics([r.labels for r in records], [by_id[r.id] for r in records])
    result.update(critic=cfg.critic, split=cfg.split, mode=cfg.mode, answer_format=scorer.answer_format)
    storage.write_json(storage.join(cfg.out, "accuracy.json"), result)
    storage.write_text(storage.join(cfg.out, "accuracy.md"), markdown(result, "this critic"))
    return {"videos": result["videos"], **{f"accuracy_{k}": v for k, v in result["accuracy"].items()}}
