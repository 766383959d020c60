#!/usr/bin/env python
"""The honest result of docs/RESULTS.md: the default `lift pipeline` over several seeds, base vs aligned.

    .venv/bin/python scripts/pipeline-seeds.py                       # seeds 0 1 2 under runs/seeds/
    .venv/bin/python scripts/pipeline-seeds.py --seeds 0 1 2 3 4 --runs s3://bucket/seeds -- align.trainer.lr=2e-4

Seed s sets every seed of the run (toy data, critic and alignment training, rollouts; evaluation seeds 1000 + s);
everything else is the embedded default, or what follows `--`. Each run is an ordinary `lift pipeline` (finished
stages are skipped on a rerun). The summary pools the paired (prompt, seed) comparisons of all runs: mean critic
reward and oracle score of base and aligned, their gains with 95% confidence intervals (cluster-robust over the
(run, prompt) clusters, `lift.core.stats`) and the win rate, per run and pooled (`lift.stages.evaluate.summarize`),
with each run's wall time (seconds for a run already complete), and each run's critic accuracy next to the majority
class; printed as Markdown and written to RUNS/summary.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lift.data.hra import DIMENSIONS
from lift.io import storage
from lift.stages import evaluate


def seed_overrides(seed: int) -> list[str]:
    return [f"data.seed={seed}", f"critic.trainer.seed={seed}", f"generate.seed={seed}",
            f"align.trainer.seed={seed}", f"evaluate.seed={1000 + seed}"]


def row(name: str, videos: list[dict], minutes: float) -> str:
    """One Markdown row of `evaluate.summarize` over these videos (prompt ids made unique per run, so each
    (run, prompt, k) is one pair)."""
    s = evaluate.summarize([{**v, "prompt_id": f"{v['run']}/{v['prompt_id']}"} for v in videos])
    models, comparison = s["models"], s["comparison"]
    oracle = {m: (models[m]["oracle"] or {}).get("score", {}).get("mean") for m in evaluate.MODELS}
    return (f"| {name} | {minutes:.1f} | {comparison['pairs']} | {models['base']['reward']['mean']:.4f} "
            f"| {models['aligned']['reward']['mean']:.4f} | {_ci(comparison['reward_gain'])} "
            f"| {comparison['win_rate']['mean']:.3f} | {oracle['base']:.4f} | {oracle['aligned']:.4f} "
            f"| {_ci(comparison['oracle_gain'])} |")


def _ci(stat: dict) -> str:
    return f"{stat['mean']:+.4f} [{stat['low']:+.4f}, {stat['high']:+.4f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pipeline seeds (default: 0 1 2)")
    ap.add_argument("--runs", default="runs/seeds", help="parent of the run folders seed-<s> (default: %(default)s)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="more overrides for every run (after --)")
    args = ap.parse_args()
    table = ["| seed | minutes | pairs | critic reward, base | aligned | gain [95% CI] | win rate | oracle score, base "
             "| aligned | gain [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|"]
    accuracy = ["| seed | test videos | " + " | ".join(f"{d} % (majority %)" for d in DIMENSIONS) + " |",
                "|---|---|---|---|---|"]
    videos, total = [], 0.0
    for seed in args.seeds:
        run = storage.join(args.runs, f"seed-{seed}")
        cmd = [sys.executable, "-m", "lift", "pipeline", run, *seed_overrides(seed), *args.overrides]
        start = time.time()
        if subprocess.run(cmd).returncode:
            print(f"pipeline-seeds: the run of seed {seed} failed: {' '.join(cmd)}", file=sys.stderr)
            return 1
        mine = [{**v, "run": run} for v in storage.read_json(storage.join(run, "eval", evaluate.RESULTS))["videos"]]
        minutes = (time.time() - start) / 60
        table.append(row(str(seed), mine, minutes))
        videos += mine
        total += minutes
        acc = storage.read_json(storage.join(run, "critic", "eval", "accuracy.json"))
        accuracy.append(f"| {seed} | {acc['videos']} | " + " | ".join(
            f"{acc['accuracy'][d]:.1f} ({acc['majority_baseline'][d]:.1f})" for d in DIMENSIONS) + " |")
    table.append(row("pooled", videos, total))
    text = "\n".join(table + [""] + accuracy) + "\n"
    storage.write_text(storage.join(args.runs, "summary.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
