"""`lift pipeline rounds=2` on a reduced toy world: round 2 generates with round 1's aligned model, aligns from its
weights on its own rollouts, is evaluated against the same base and reported; a run stopped inside round 2's
alignment resumes there and ends identical to the uninterrupted run."""

from __future__ import annotations

import json
import re

import pytest

from lift import cli, stages
from lift.io import storage
from lift.report import report

from test_pipeline import REDUCED

ROUNDS = [*REDUCED, "rounds=2", "align.trainer.checkpoint_every=1", "critic_eval.max_new_tokens=4",
          "score.max_new_tokens=4", "evaluate.max_new_tokens=4"]


def _rollouts(url: str) -> list[dict]:
    return [json.loads(x) for x in storage.read_text(f"{url}/manifest.jsonl").splitlines()]


@pytest.mark.slow
def test_two_rounds_and_resume_inside_round_two(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache"))
    run = str(tmp_path / "run")
    assert cli.main(["pipeline", run, *ROUNDS]) == 0
    two = f"{run}/rounds/2"
    for folder in ("rollouts", "scores", "align", "eval"):
        assert storage.is_complete(f"{two}/{folder}"), folder
    # round 2 sampled round 1's aligned model on the same prompts and seeds, and aligned from its weights
    assert storage.read_text(f"{two}/rollouts/config.yaml").count(f"name_or_path: {run}/align/model") == 1
    assert storage.read_text(f"{two}/align/config.yaml").count(f"name_or_path: {run}/align/model") == 1
    first, second = _rollouts(f"{run}/rollouts"), _rollouts(f"{two}/rollouts")
    key = lambda r: (r["prompt"], r["seed"])  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, second))
    assert any(storage.read_bytes(f"{run}/rollouts/{a['video']}") != storage.read_bytes(f"{two}/rollouts/{b['video']}")
               for a, b in zip(sorted(first, key=key), sorted(second, key=key))), "a new model, new videos"
    scores = [json.loads(x) for x in storage.read_text(f"{two}/scores/scores.jsonl").splitlines()]
    assert {s["id"] for s in scores} == {r["id"] for r in second}
    results = storage.read_json(f"{two}/eval/results.json")
    assert results["aligned"]["name_or_path"] == f"{two}/align/model"
    assert results["base"]["name_or_path"] == storage.read_json(f"{run}/eval/results.json")["base"]["name_or_path"]
    page = storage.read_text(f"{run}/report/index.html")
    assert f'<section id="{report.ROUNDS_SECTION}" data-filled="true">' in page
    assert re.search(r"<td>round 2</td><td>\d\.\d{3}", page) and "<td>round 1</td>" in page

    # stopped in round 2's alignment after its first checkpoint: the rerun skips everything before it and resumes
    model = f"{two}/align/model/transformer/diffusion_pytorch_model.safetensors"
    uninterrupted, evaluated = load_file(model), storage.read_json(f"{two}/eval/results.json")
    for gone in ("align/_SUCCESS", "align/model", "align/checkpoints/step-00000002", "eval"):
        storage.remove(f"{two}/{gone}")
    assert storage.listdir(f"{two}/align/checkpoints") == ["step-00000001"]
    capsys.readouterr()
    assert cli.main(["pipeline", run, *ROUNDS]) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "already complete, skipping" in line]
    assert len(skipped) == len(stages.STAGES) + 3 + 2, "\n".join(skipped)  # round 1, models; round 2's generate, score
    assert "resumed from checkpoint" in err
    resumed = load_file(model)
    assert resumed.keys() == uninterrupted.keys() and all((resumed[k] == uninterrupted[k]).all() for k in resumed)
    assert storage.read_json(f"{two}/eval/results.json")["models"] == evaluated["models"]
