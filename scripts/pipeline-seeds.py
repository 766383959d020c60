#!/usr/bin/env python
"""The tables of docs/RESULTS.md's pipeline section: the default `lift pipeline` over several seeds, base vs aligned,
and, on the same runs, the objective ablations and the evaluation with guidance.

    .venv/bin/python scripts/pipeline-seeds.py                       # seeds 0 1 2 under runs/seeds/
    .venv/bin/python scripts/pipeline-seeds.py --variants plain lambda0 --guidance 3 --rounds 3  # every table
    .venv/bin/python scripts/pipeline-seeds.py --seeds 0 1 2 3 4 --runs s3://bucket/seeds -- align.trainer.lr=2e-4

Seed s sets every seed of the run (toy data, critic and alignment training, rollouts; evaluation seeds 1000 + s);
everything else is the embedded default, or what follows `--`. Each run is an ordinary `lift pipeline` (finished
stages are skipped on a rerun). A variant (`VARIANTS`) reruns only `lift align` with its objective into
RUN/align-<variant> and `lift evaluate` of that model into RUN/eval-<variant>, on the run's own data, critic,
rollouts and scores, with the same seeds; `--guidance G` reruns `lift evaluate` of the default aligned model with
classifier-free guidance G into RUN/eval-guidance-<G>. Both are skipped when already complete, like any stage.
`--rounds N` runs each pipeline as LiFT in N rounds (`lift pipeline rounds=N`; round k >= 2 under RUN/rounds/k).

The summary pools the paired (prompt, seed) comparisons of all runs (`lift.stages.evaluate.summarize`, intervals
cluster-robust over the (run, prompt) clusters): critic reward and oracle score of base and aligned and their gains,
per run and pooled; each run's critic accuracy next to the majority class, with the margin in standard errors; where
the gain is (oracle checks passed and critic labels, per model); per variant the same gains and the paired gain of
LiFT's aligned model over the variant's; per guidance the gains; per round its gains over the base and the paired
gain of its aligned model over round 1's (the same held-out prompts and seeds). Printed as Markdown and written to
RUNS/summary.md, with every figure and each run's raw numbers in RUNS/summary.json (the file docs/RESULTS.md's
tables are copied from).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lift import stages
from lift.data.hra import DIMENSIONS, LABELS
from lift.io import storage
from lift.stages import evaluate, runner

# name -> (what it is, the `lift align` overrides that make it)
VARIANTS = {
    "plain": ("plain fine-tuning on the same data", {"objective.reward_weighting": False}),
    "lambda0": ("reward-weighted rollouts only", {"objective.lambda_real": 0.0}),
    "rejection": ("rejection sampling: all-Good rollouts, unweighted", {"objective.rejection_sampling": True}),
}


def seed_overrides(seed: int) -> list[str]:
    return [f"data.seed={seed}", f"critic.trainer.seed={seed}", f"generate.seed={seed}",
            f"align.trainer.seed={seed}", f"evaluate.seed={1000 + seed}"]


def pipeline_minutes(run: str, overrides: list[str]) -> float:
    """The minutes a run's single pass took: its stages' own seconds, from their `_SUCCESS` markers (so a rerun that
    finds them complete reports the time they took, not the rerun's)."""
    cfg = stages.load("pipeline", None, [f"run={run}", *overrides])
    markers = [storage.read_marker(stages.section(cfg, name).out) for name in stages.STAGES]
    return sum(m.get("seconds") or 0.0 for m in markers if m) / 60


def _round_eval(run: str, k: int) -> str:
    """Round k's evaluation folder (round 1's is the run's own)."""
    return storage.join(stages.round_folder(run, k), stages.STAGES["evaluate"].output)


def _videos(eval_url: str, run: str) -> list[dict]:
    """A finished evaluation's videos, prompt ids made unique per run (so each (run, prompt) is one cluster)."""
    videos = storage.read_json(storage.join(eval_url, evaluate.RESULTS))["videos"]
    return [{**v, "prompt_id": f"{run}/{v['prompt_id']}"} for v in videos]


def figures(videos: list[dict]) -> dict:
    """The numbers of one table row: rewards, oracle scores, gains with their intervals, the win rate."""
    s = evaluate.summarize(videos)
    models, cmp = s["models"], s["comparison"]
    oracle = {m: (models[m]["oracle"] or {}).get("score", {}).get("mean") for m in evaluate.MODELS}
    return {"pairs": cmp["pairs"], "prompts": cmp["prompts"],
            "reward": {m: models[m]["reward"]["mean"] for m in evaluate.MODELS}, "reward_gain": cmp["reward_gain"],
            "win_rate": cmp["win_rate"]["mean"], "oracle": oracle, "oracle_gain": cmp["oracle_gain"]}


def breakdown(videos: list[dict]) -> dict:
    """Where the gain is: per model, the share of videos passing each oracle check and the critic's label counts."""
    models = evaluate.summarize(videos)["models"]
    return {m: {"oracle_checks": (models[m]["oracle"] or {}).get("checks"), "labels": models[m]["labels"]}
            for m in evaluate.MODELS}


def versus(lift_videos: list[dict], other_videos: list[dict]) -> dict:
    """One aligned model (LiFT's, or a later round's) against another on the same (prompt, seed): the other plays
    'base'."""
    paired = ([{**v, "model": "base"} for v in other_videos if v["model"] == "aligned"]
              + [v for v in lift_videos if v["model"] == "aligned"])
    return figures(paired)


def _ci(stat: dict) -> str:
    if stat.get("low") is None:
        return f"{stat['mean']:+.4f} (no interval)"
    return f"{stat['mean']:+.4f} [{stat['low']:+.4f}, {stat['high']:+.4f}]"


def _margin(gap: dict) -> str:
    """The critic's margin over the majority class in standard errors of the paired difference."""
    return "no SE" if not gap["se"] else f"{gap['points'] / gap['se']:+.1f}"


def row(name: str, f: dict, minutes: float | None = None) -> str:
    time_cell = f" {minutes:.1f} |" if minutes is not None else ""
    return (f"| {name} |{time_cell} {f['pairs']} | {f['reward']['base']:.4f} | {f['reward']['aligned']:.4f} "
            f"| {_ci(f['reward_gain'])} | {f['win_rate']:.3f} | {f['oracle']['base']:.4f} "
            f"| {f['oracle']['aligned']:.4f} | {_ci(f['oracle_gain'])} |")


HEADER = ("| critic reward, base | aligned | gain [95% CI] | win rate | oracle score, base | aligned "
          "| gain [95% CI] |")


def _stage(name: str, run: str, overrides: list[str], changes: dict) -> None:
    """Run one stage of a run's pipeline config with `changes` (keys of the stage's section) on top of the run's
    overrides; skipped when already complete, like any stage."""
    own = [f"{stages.STAGES[name].section}.{key}={str(value).lower() if isinstance(value, bool) else value}"
           for key, value in changes.items()]
    cfg = stages.load("pipeline", None, [f"run={run}", *overrides, *own])
    runner.run_stage(name, stages.section(cfg, name))


def variant_and_guidance(run: str, overrides: list[str], variants: list[str], guidance: list[float]) -> None:
    for name in variants:
        align_out, eval_out = storage.join(run, f"align-{name}"), storage.join(run, f"eval-{name}")
        _stage("align", run, overrides, {**VARIANTS[name][1], "out": align_out})
        _stage("evaluate", run, overrides, {"aligned.name_or_path": storage.join(align_out, "model"), "out": eval_out})
    for g in guidance:
        _stage("evaluate", run, overrides, {"sampling.guidance": g, "out": storage.join(run, f"eval-guidance-{g:g}")})


def tables(summary: dict) -> str:
    seeds = summary["seeds"]
    out = [f"| seed | minutes | pairs {HEADER}", "|---|---|---|---|---|---|---|---|---|---|"]
    out += [row(str(s), summary["runs"][str(s)]["default"], summary["runs"][str(s)]["minutes"]) for s in seeds]
    out += [row("**pooled**", summary["pooled"]["default"], summary["pooled"]["minutes"]), ""]
    out += ["| seed | test videos | " + " | ".join(f"{d} % (majority %; margin / SE)" for d in DIMENSIONS) + " |",
            "|---|---|---|---|---|"]
    for s in seeds:
        acc = summary["runs"][str(s)]["critic_accuracy"]
        out.append(f"| {s} | {acc['videos']} | " + " | ".join(
            f"{acc['accuracy'][d]:.1f} ({acc['majority_baseline'][d]:.1f}; {_margin(acc['over_majority'][d])})"
            for d in DIMENSIONS) + " |")
    where = summary["pooled"]["breakdown"]
    out += ["", "| pooled | base | aligned |", "|---|---|---|"]
    for check in evaluate.ORACLE_CHECKS:
        if where["base"]["oracle_checks"] is not None:
            out.append(f"| oracle: {check} | {100 * where['base']['oracle_checks'][check]:.1f}% "
                       f"| {100 * where['aligned']['oracle_checks'][check]:.1f}% |")
    for d in DIMENSIONS:
        out.append(f"| critic: {d} {' / '.join(LABELS)} | " + " | ".join(
            " / ".join(str(where[m]["labels"][d][label]) for label in LABELS) for m in evaluate.MODELS) + " |")
    if summary["pooled"]["variants"]:
        out += ["", f"| `lift align` objective | pairs {HEADER}", "|---|---|---|---|---|---|---|---|---|"]
        out.append(row("LiFT (the default)", summary["pooled"]["default"]))
        for name, f in summary["pooled"]["variants"].items():
            out.append(row(f"{VARIANTS[name][0]} ({name})", f["figures"]))
        versus_header = HEADER.replace("base", "the variant's").replace("| aligned", "| LiFT's")
        out += ["", f"| LiFT's aligned model vs | pairs {versus_header}", "|---|---|---|---|---|---|---|---|---|"]
        out += [row(f"{name}'s aligned model", f["lift_vs"]) for name, f in summary["pooled"]["variants"].items()]
    if summary["pooled"]["rounds"]:
        out += ["", f"| round | pairs {HEADER}", "|---|---|---|---|---|---|---|---|---|"]
        out.append(row("1", summary["pooled"]["default"]))
        out += [row(k, f["figures"]) for k, f in summary["pooled"]["rounds"].items()]
        versus_header = HEADER.replace("base", "round 1").replace("| aligned", "| round k")
        out += ["", f"| round k vs round 1 | pairs {versus_header}", "|---|---|---|---|---|---|---|---|---|"]
        out += [row(f"round {k}", f["vs_round_1"]) for k, f in summary["pooled"]["rounds"].items()]
    if summary["pooled"]["guidance"]:
        out += ["", f"| evaluation guidance | pairs {HEADER}", "|---|---|---|---|---|---|---|---|---|"]
        out += [row(g, f) for g, f in summary["pooled"]["guidance"].items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pipeline seeds (default: 0 1 2)")
    ap.add_argument("--runs", default="runs/seeds", help="parent of the run folders seed-<s> (default: %(default)s)")
    ap.add_argument("--variants", nargs="*", default=[], choices=list(VARIANTS),
                    help="objective ablations rerun on the same runs (align + evaluate)")
    ap.add_argument("--guidance", type=float, nargs="*", default=[],
                    help="also evaluate the default aligned model with these guidance scales")
    ap.add_argument("--rounds", type=int, default=1, help="LiFT in this many rounds per run (default: 1)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="more overrides for every run (after --)")
    args = ap.parse_args(argv)
    summary: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "seeds": args.seeds,
                     "variants": args.variants, "guidance": args.guidance, "rounds": args.rounds,
                     "overrides": args.overrides, "runs": {}}
    pooled: dict[str, list] = {"default": [], **{v: [] for v in args.variants},
                               **{f"guidance {g:g}": [] for g in args.guidance},
                               **{f"round {k}": [] for k in range(2, args.rounds + 1)}}
    total = 0.0
    for seed in args.seeds:
        run = storage.join(args.runs, f"seed-{seed}")
        overrides = [*seed_overrides(seed), f"rounds={args.rounds}", *args.overrides]
        cmd = [sys.executable, "-m", "lift", "pipeline", run, *overrides]
        if subprocess.run(cmd).returncode:
            print(f"pipeline-seeds: the run of seed {seed} failed: {' '.join(cmd)}", file=sys.stderr)
            return 1
        variant_and_guidance(run, overrides, args.variants, args.guidance)
        minutes = pipeline_minutes(run, overrides)
        total += minutes
        default = _videos(storage.join(run, "eval"), run)
        pooled["default"] += default
        mine = {"run": run, "minutes": round(minutes, 2), "default": figures(default),
                "critic_accuracy": storage.read_json(storage.join(run, "critic", "eval", "accuracy.json")),
                "breakdown": breakdown(default), "variants": {}, "guidance": {}, "rounds": {}}
        for name in args.variants:
            videos = _videos(storage.join(run, f"eval-{name}"), run)
            pooled[name] += videos
            mine["variants"][name] = {"figures": figures(videos), "lift_vs": versus(default, videos)}
        for g in args.guidance:
            videos = _videos(storage.join(run, f"eval-guidance-{g:g}"), run)
            pooled[f"guidance {g:g}"] += videos
            mine["guidance"][f"{g:g}"] = figures(videos)
        for k in range(2, args.rounds + 1):
            videos = _videos(_round_eval(run, k), run)
            pooled[f"round {k}"] += videos
            mine["rounds"][str(k)] = {"figures": figures(videos), "vs_round_1": versus(videos, default)}
        summary["runs"][str(seed)] = mine
    summary["pooled"] = {
        "minutes": round(total, 2), "default": figures(pooled["default"]), "breakdown": breakdown(pooled["default"]),
        "variants": {v: {"figures": figures(pooled[v]), "lift_vs": versus(pooled["default"], pooled[v])}
                     for v in args.variants},
        "guidance": {f"{g:g}": figures(pooled[f"guidance {g:g}"]) for g in args.guidance},
        "rounds": {str(k): {"figures": figures(pooled[f"round {k}"]),
                            "vs_round_1": versus(pooled[f"round {k}"], pooled["default"])}
                   for k in range(2, args.rounds + 1)}}
    text = tables(summary)
    storage.write_text(storage.join(args.runs, "summary.md"), text)
    storage.write_json(storage.join(args.runs, "summary.json"), summary)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
