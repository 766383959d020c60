"""`lift score`: rate videos with a trained critic and turn the ratings into LiFT's reward.

Two modes, both deterministic and batched (B videos x 3 questions per forward):
- `logits` (default): one forward per batch reads P(Good/Normal/Bad) where the answer states its label; the label
  is the argmax and the reward the expectation of s(label). Reason-first critics first say a short greedy reason.
- `generate`: greedy decoding of the whole answer with its reason; the label is parsed, and an answer that states
  none is recorded as unparsable and left out of the reward (counted in the marker), never taken as Good.

- `remote` (`url=`): the same records from a `lift serve` (lift/serve/), which rates with its own critic and
  settings; the videos are sent inline.

Output: OUT/part-*.jsonl (one per shard) and OUT/scores.jsonl (merged), one score record per video.

    lift score                                        # toy run folder
    torchrun --nproc-per-node 8 -m lift score rollouts=s3://b/run/rollouts critic=s3://b/run/critic/model
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from lift.core import dist
from lift.data import hra
from lift.io import sharded, storage
from lift.models import integrity
from lift.models.scoring import (
    SCORES as SCORES,  # this stage's merged output, OUT/scores.jsonl
)
from lift.models.scoring import (
    Item,
    Scorer,
    read_items,
    reward_from_labels,
    reward_from_probs,
    score_sharded,
)

log = logging.getLogger(__name__)


def check_reward_keys(cfg) -> None:
    """`label_scores` must name every label and `dimension_weights` every dimension, nothing else."""
    for key in ("label_scores", "dimension_weights"):
        expected = hra.LABELS if key == "label_scores" else hra.DIMENSIONS
        if sorted(cfg[key]) != sorted(expected):
            raise ValueError(f"config key '{key}' must have exactly the keys {list(expected)}, got {list(cfg[key])}")


def make_record(item: Item, rating: dict, cfg) -> dict:
    """The score record of one video (`lift score`'s output line; `lift serve` answers the same): `cfg` gives
    critic, mode, label_scores and dimension_weights."""
    scores, weights = dict(cfg.label_scores), dict(cfg.dimension_weights)
    reward = (reward_from_probs(rating["probs"], scores, weights) if cfg.mode == "logits"
              else reward_from_labels(rating["labels"], scores, weights))
    return {"id": item.id, "video": item.video, "prompt": item.prompt, "labels": rating["labels"],
            "probs": rating["probs"], "reasons": rating["reasons"], "unparsable": rating["unparsable"],
            "reward": None if reward is None else round(reward, 6), "critic": cfg.critic, "mode": cfg.mode}


def check(cfg: DictConfig) -> None:
    """The reward settings, every line of the rollout manifest, and the critic's folder where this mode loads it."""
    check_reward_keys(cfg)
    read_items(storage.join(cfg.rollouts, hra.MANIFEST))
    if cfg.mode in ("logits", "generate"):
        integrity.check_folder(cfg.critic, "critic")


def run(cfg: DictConfig) -> dict:
    """`lift score`: a score record (labels and reward) for every video of the rollouts (or any manifest) folder."""
    runtime = dist.init()
    items = read_items(storage.join(cfg.rollouts, hra.MANIFEST))
    if cfg.mode == "remote":
        records = _score_remote(items, cfg, runtime)
    else:
        scorer = Scorer(cfg.critic, runtime.device, cfg.max_new_tokens, cfg.trust_remote_code)
        records = score_sharded(items, scorer, cfg.out, cfg.mode, cfg.batch_size, cfg.num_shards, runtime,
                                lambda item, rating: make_record(item, rating, cfg))
    if not runtime.is_main:
        return {}
    unparsable = [f"{r['id']} ({', '.join(r['unparsable'])})" for r in records if r["unparsable"]]
    if unparsable:
        log.warning("%d of %d videos got a critic answer without a label; their reward is null (never Good) and "
                    "align leaves them out: %s", len(unparsable), len(records), ", ".join(unparsable[:20]))
    rewards = [r["reward"] for r in records if r["reward"] is not None]
    labels = {d: {l: sum(r["labels"].get(d) == l for r in records) for l in hra.LABELS} for d in hra.DIMENSIONS}
    return {"videos": len(records), "unparsable": sum(bool(r["unparsable"]) for r in records),
            "mean_reward": round(sum(rewards) / len(rewards), 6) if rewards else None, "labels": labels}


def _score_remote(items: list[Item], cfg: DictConfig, runtime: dist.Runtime) -> list[dict]:
    """mode=remote: the same parts and records, each batch rated by the `lift serve` at `cfg.url` (the videos sent
    inline, so the server needs no access to this run's storage); `video` stays the manifest's relative path."""
    from lift import client

    if not cfg.url:
        raise ValueError("config key 'url': mode=remote needs the `lift serve` URL, e.g. url=http://lift-serve:8000")

    def work(service: client.Client, mine: list[Item]):
        for start in range(0, len(mine), cfg.batch_size):
            batch = mine[start:start + cfg.batch_size]
            answers = service.score([storage.read_bytes(it.url) for it in batch], [it.prompt for it in batch],
                                    ids=[it.id for it in batch])
            yield [{**answer, "video": it.video} for it, answer in zip(batch, answers)]

    with client.Client(cfg.url) as service:
        merged = sharded.run_parts(storage.Shards(cfg.out, cfg.num_shards or runtime.world_size), items, work,
                                   runtime, SCORES, "score", lambda: service, what="scoring remotely", url=cfg.url)
    return [json.loads(line) for line in storage.read_text(merged).splitlines() if line.strip()] if merged else []
