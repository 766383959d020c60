"""scripts/pipeline-seeds.py, the command behind docs/RESULTS.md's pipeline tables, run in a reduced mode: one seed,
the plain-fine-tuning ablation, an evaluation with guidance and a second round; every figure of its summary.json is
checked against the stage outputs it comes from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lift.io import storage
from lift.stages import evaluate
from test_pipeline import REDUCED

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pipeline-seeds.py"


def _script():
    spec = importlib.util.spec_from_file_location("pipeline_seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reduced_seeds_ablation_guidance_and_rounds_tables(tmp_path, capsys):
    script = _script()
    runs = f"file://{tmp_path}/seeds"
    assert script.main(["--seeds", "0", "--runs", runs, "--variants", "plain", "--guidance", "3", "--rounds", "2", "--",
                        *REDUCED]) == 0
    run = f"{runs}/seed-0"
    summary = storage.read_json(f"{runs}/summary.json")
    mine = summary["runs"]["0"]

    default = script._videos(f"{run}/eval", run)
    assert mine["default"] == script.figures(default)
    direct = evaluate.summarize(default)["comparison"]
    assert mine["default"]["reward_gain"]["mean"] == direct["reward_gain"]["mean"]
    assert mine["default"]["pairs"] == len([v for v in default if v["model"] == "aligned"])
    assert summary["pooled"]["default"] == mine["default"]  # one seed: pooled is that seed
    assert mine["critic_accuracy"] == storage.read_json(f"{run}/critic/eval/accuracy.json")
    seconds = [storage.read_marker(f"{run}/{out}")["seconds"] for out in
               ("data", "base", "critic", "critic/eval", "rollouts", "scores", "align", "eval")]
    assert mine["minutes"] == pytest.approx(sum(seconds) / 60, abs=0.01), "the pass's stage times, from markers"

    # the ablation retrained only align, with its objective, and evaluated that model with the same seeds
    plain_cfg = storage.read_text(f"{run}/align-plain/config.yaml")
    assert "reward_weighting: false" in plain_cfg
    assert storage.read_marker(f"{run}/align-plain/model") is not None
    plain = script._videos(f"{run}/eval-plain", run)
    assert {(v["prompt_id"], v["index"], v["seed"]) for v in plain} == {
        (v["prompt_id"], v["index"], v["seed"]) for v in default}
    base_rewards = {(v["prompt_id"], v["index"]): v["reward"] for v in default if v["model"] == "base"}
    assert base_rewards == {(v["prompt_id"], v["index"]): v["reward"] for v in plain if v["model"] == "base"}
    lift_vs = mine["variants"]["plain"]["lift_vs"]
    gains = [a["reward"] - p["reward"] for a in default if a["model"] == "aligned"
             for p in plain if p["model"] == "aligned" and (p["prompt_id"], p["index"]) == (a["prompt_id"], a["index"])]
    assert lift_vs["pairs"] == len(gains) and lift_vs["reward_gain"]["mean"] == pytest.approx(
        sum(gains) / len(gains), abs=1e-6)

    # guidance 3: the default aligned model, evaluated again with guidance
    assert "guidance: 3.0" in storage.read_text(f"{run}/eval-guidance-3/config.yaml")
    assert mine["guidance"]["3"] == script.figures(script._videos(f"{run}/eval-guidance-3", run))

    # round 2: its own evaluation against the base, and its aligned model against round 1's on the same seeds
    second = script._videos(f"{run}/rounds/2/eval", run)
    assert mine["rounds"]["2"]["figures"] == script.figures(second)
    assert summary["pooled"]["rounds"]["2"] == mine["rounds"]["2"]
    first = {(v["prompt_id"], v["index"]): v for v in default if v["model"] == "aligned"}
    gains = [v["oracle"]["score"] - first[(v["prompt_id"], v["index"])]["oracle"]["score"]
             for v in second if v["model"] == "aligned"]
    vs_first = mine["rounds"]["2"]["vs_round_1"]
    assert vs_first["pairs"] == len(gains) == len(first)
    assert vs_first["oracle_gain"]["mean"] == pytest.approx(sum(gains) / len(gains), abs=1e-6)
    assert vs_first["reward"]["base"] == pytest.approx(mine["default"]["reward"]["aligned"], abs=1e-6)

    text = storage.read_text(f"{runs}/summary.md")
    assert text in capsys.readouterr().out
    assert "| **pooled** |" in text and "plain fine-tuning on the same data (plain)" in text
    assert "plain's aligned model" in text and "| 3 | " in text and "| round 2 |" in text
    acc = mine["critic_accuracy"]
    gap = acc["over_majority"]["motion"]  # no standard error where the critic and the majority class agree on all
    margin = f"{gap['points'] / gap['se']:+.1f}" if gap["se"] else "no SE"
    assert f"{acc['accuracy']['motion']:.1f} ({acc['majority_baseline']['motion']:.1f}; {margin})" in text
