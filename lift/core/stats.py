"""Confidence intervals of the means lift reports: a Student-t interval, and a cluster-robust one for values that
come in correlated groups.

`lift evaluate` samples every prompt several times (seeds), so the (prompt, seed) pairs of one prompt share that
prompt's difficulty: they are clustered, and a Student-t interval that takes them as independent is too narrow.
With `clusters` given, the interval uses the cluster-robust (CR1, Liang-Zeger) standard error of the pooled mean

    mean = sum_i y_i / N,   se^2 = k / (k - 1) * sum_c (S_c - n_c * mean)^2 / N^2

(S_c, n_c: sum and count of cluster c; k clusters, N values) with a Student-t quantile on k - 1 degrees of freedom.
It is deterministic (no resampling seed) and agrees with a bootstrap that resamples whole clusters
(tests/test_stats.py checks both, and the coverage of each on synthetic data with known clustering).
"""

from __future__ import annotations

import math
from typing import Hashable, Iterable, Sequence

import numpy as np
from scipy import stats as scipy_stats


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with `df` degrees of freedom."""
    if not 0.0 < q < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0 < q < 1 and df >= 1, got q={q}, df={df}")
    return float(scipy_stats.t.ppf(q, df))


def mean_ci(values: Iterable[float], confidence: float = 0.95,
            clusters: Sequence[Hashable] | None = None) -> dict:
    """Mean with its two-sided confidence interval: {mean, low, high, std, n} (+ {clusters, method} when clustered).

    std is the sample standard deviation of the values. Without `clusters` the interval is Student-t over
    independent values; with them (one id per value) it is cluster-robust, and needs at least two clusters.
    Where there is no interval (fewer than two values or clusters) low and high are None; an empty input gives
    a None mean.
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    n = int(x.size)
    out: dict = {"mean": None, "low": None, "high": None, "std": None, "n": n}
    if clusters is not None:
        if len(clusters) != n:
            raise ValueError(f"mean_ci: {n} values but {len(clusters)} cluster ids")
        out.update(clusters=len(set(clusters)), method="cluster-robust (CR1) over "
                                                        f"{len(set(clusters))} clusters, t on k-1 df")
    if n == 0:
        return out
    mean = float(x.mean())
    out["mean"] = round(mean, 6)
    if n < 2:
        return out
    std = float(x.std(ddof=1))
    out["std"] = round(std, 6)
    if clusters is None:
        half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    else:
        k = out["clusters"]
        if k < 2:
            return out
        _, index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
        sums, counts = np.bincount(index, weights=x), np.bincount(index)
        se = math.sqrt(k / (k - 1) * float(((sums - counts * mean) ** 2).sum())) / n
        half = t_quantile(0.5 + confidence / 2.0, k - 1) * se
    out.update(low=round(mean - half, 6), high=round(mean + half, 6))
    return out
