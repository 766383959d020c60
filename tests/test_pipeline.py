"""`lift pipeline` end to end on a reduced toy world, through s3:// on the loopback endpoint."""

from __future__ import annotations

import pytest

from lift import cli, config, stages
from lift.io import storage

REDUCED = [
    "data.toy.num_clips=24", "data.toy.num_prompts=2", "data.toy.num_eval_prompts=2", "data.toy.num_real=4",
    "critic.trainer.max_steps=2", "critic.trainer.batch_size=2", "critic.trainer.num_workers=0",
    "generate.videos_per_prompt=2", "generate.sampling.steps=2",
    "align.trainer.max_steps=2", "align.trainer.batch_size=2", "align.trainer.num_workers=0",
    "align.trainer.warmup_steps=1",
    "evaluate.videos_per_prompt=1", "evaluate.sampling.steps=2",
    "critic_eval.max_new_tokens=8", "score.max_new_tokens=8", "evaluate.max_new_tokens=8",
]


@pytest.mark.slow
def test_reduced_pipeline_over_s3_and_rerun_skips(s3_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache"))
    assert cli.main(["pipeline", s3_url, *REDUCED]) == 0
    cfg = stages.load("pipeline", None, [f"run={s3_url}", *REDUCED])
    for stage in stages.STAGES:
        marker = storage.read_marker(stages.section(cfg, stage).out)
        assert marker is not None and marker["config_hash"] == config.config_hash(stages.section(cfg, stage)), stage
    assert storage.is_complete(f"{s3_url}/models")
    assert storage.read_marker(f"{s3_url}/base")["counts"] == {"trained": 0}, "the shipped toy base, as it is"
    shipped = storage.listdir(f"{s3_url}/models/cogvideox-toy/transformer")
    assert any(name.endswith(".safetensors") for name in shipped)
    for name in shipped:
        assert storage.read_bytes(f"{s3_url}/base/transformer/{name}") == storage.read_bytes(
            f"{s3_url}/models/cogvideox-toy/transformer/{name}"), name
    assert storage.exists(f"{s3_url}/config.yaml")
    assert storage.is_complete(f"{s3_url}/align/model")
    capsys.readouterr()
    assert cli.main(["pipeline", s3_url, *REDUCED]) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "already complete, skipping" in line]
    assert len(skipped) == len(stages.STAGES) + 3, "\n".join(skipped)  # + the tiny zoo and the 2 shipped models
