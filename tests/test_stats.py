"""lift.core.stats: the Student-t interval, and the cluster-robust interval `lift evaluate` uses because the seeds
of one prompt share its difficulty; checked against a direct cluster bootstrap and by coverage on synthetic data
whose clustering is known."""

from __future__ import annotations

import numpy as np
import pytest

from lift.core.stats import mean_ci, t_quantile
from lift.stages import evaluate


def test_t_quantile_and_the_unclustered_interval():
    for df, expected in ((1, 12.7062), (2, 4.3027), (10, 2.2281), (30, 2.0423), (1000, 1.9623)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, 5) == pytest.approx(-t_quantile(0.975, 5))
    ci = mean_ci([1, 2, 3, 4, 5])
    half = 2.7764 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)
    assert ci["mean"] == 3 and ci["n"] == 5 and ci["std"] == pytest.approx(1.581139, abs=1e-6)
    assert (ci["low"], ci["high"]) == (pytest.approx(3 - half, abs=1e-4), pytest.approx(3 + half, abs=1e-4))
    assert mean_ci([0.7, 0.7, 0.7]) == {"mean": 0.7, "low": 0.7, "high": 0.7, "std": 0.0, "n": 3}
    assert mean_ci([0.4]) == {"mean": 0.4, "low": None, "high": None, "std": None, "n": 1}
    assert mean_ci([])["mean"] is None
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def _clustered(rng, clusters: int, size: int, between: float = 1.0, within: float = 0.3):
    """Values y = u_c + e: a shared effect per cluster (sd `between`) plus independent noise (sd `within`)."""
    effects = rng.normal(0.0, between, clusters)
    values = (effects[:, None] + rng.normal(0.0, within, (clusters, size))).ravel()
    ids = np.repeat([f"p{c}" for c in range(clusters)], size)
    return values, list(ids)


def test_equal_clusters_give_the_t_interval_of_the_cluster_means():
    values, ids = _clustered(np.random.default_rng(0), 12, 8)
    clustered = mean_ci(values, clusters=ids)
    means = values.reshape(12, 8).mean(axis=1)
    half = t_quantile(0.975, 11) * means.std(ddof=1) / np.sqrt(12)
    assert clustered["clusters"] == 12 and clustered["n"] == 96
    assert clustered["low"] == pytest.approx(means.mean() - half, abs=2e-6)
    assert clustered["high"] == pytest.approx(means.mean() + half, abs=2e-6)


def test_clustered_interval_matches_a_direct_cluster_bootstrap():
    rng = np.random.default_rng(1)
    values, ids = _clustered(rng, 60, 8)
    # unequal clusters: drop a random third of the values
    keep = rng.random(values.size) > 1 / 3
    values, ids = values[keep], [c for c, k in zip(ids, keep) if k]
    ci = mean_ci(values, clusters=ids)
    groups = {c: values[[i for i, x in enumerate(ids) if x == c]] for c in dict.fromkeys(ids)}
    names = list(groups)
    boot = []
    for _ in range(4000):  # resample whole prompts with replacement; the pooled mean of each resample
        chosen = [groups[names[j]] for j in rng.integers(0, len(names), len(names))]
        boot.append(np.concatenate(chosen).mean())
    low, high = np.quantile(boot, [0.025, 0.975])
    assert (ci["high"] - ci["low"]) == pytest.approx(high - low, rel=0.12)
    assert (ci["low"] + ci["high"]) / 2 == pytest.approx((low + high) / 2, abs=0.1 * (high - low))
    plain = mean_ci(values)
    assert (plain["high"] - plain["low"]) < 0.5 * (high - low)  # the pairs taken as independent: far too narrow


def test_coverage_on_synthetic_prompts_with_known_clustering():
    """True mean 0: the clustered 95% interval covers it about 95% of the time; the unclustered one does not."""
    rng = np.random.default_rng(2)
    covered = {"clustered": 0, "plain": 0}
    trials = 400
    for _ in range(trials):
        values, ids = _clustered(rng, 16, 8)
        for name, ci in (("clustered", mean_ci(values, clusters=ids)), ("plain", mean_ci(values))):
            covered[name] += ci["low"] <= 0.0 <= ci["high"]
    assert 0.90 <= covered["clustered"] / trials <= 0.99
    assert covered["plain"] / trials < 0.75


def test_too_few_clusters_give_no_interval_and_mismatched_ids_are_refused():
    ci = mean_ci([0.1, 0.2, 0.3], clusters=["a", "a", "a"])
    assert ci["mean"] == pytest.approx(0.2) and ci["low"] is None and ci["clusters"] == 1
    with pytest.raises(ValueError, match="3 values but 2 cluster ids"):
        mean_ci([0.1, 0.2, 0.3], clusters=["a", "b"])


def test_evaluate_summary_clusters_its_intervals_by_prompt():
    rng = np.random.default_rng(3)
    videos = []
    for p in range(10):
        shift = rng.normal(0.0, 0.2)  # a prompt's gain is shared by its seeds
        for k in range(6):
            base = 0.4 + rng.normal(0.0, 0.01)
            videos += [{"model": "base", "prompt_id": f"p{p}", "index": k, "reward": base, "labels": {}, "probs": {}},
                       {"model": "aligned", "prompt_id": f"p{p}", "index": k, "reward": base + shift + rng.normal(
                           0.0, 0.01), "labels": {}, "probs": {}}]
    gain = evaluate.summarize(videos)["comparison"]["reward_gain"]
    diffs = [a["reward"] - b["reward"] for b, a in zip(videos[::2], videos[1::2])]
    direct = mean_ci(diffs, clusters=[v["prompt_id"] for v in videos[::2]])
    assert gain["clusters"] == 10 and gain["n"] == 60
    assert (gain["low"], gain["high"]) == (direct["low"], direct["high"])
    assert gain["high"] - gain["low"] > 2 * (gain["unclustered"]["high"] - gain["unclustered"]["low"])
