"""`lift pipeline` end to end on a reduced toy world, through s3:// on the loopback endpoint."""

from __future__ import annotations

import pytest

from lift import cli, config, storage

REDUCED = [
    "data.toy.num_clips=24", "data.toy.num_prompts=2", "data.toy.num_real=4",
    "base.vae.max_steps=2", "base.vae.batch_size=2", "base.vae.num_workers=0",
    "base.transformer.max_steps=2", "base.transformer.batch_size=2", "base.transformer.num_workers=0",
    "critic.trainer.max_steps=2", "critic.trainer.batch_size=2", "critic.trainer.num_workers=0",
    "critic.lora.r=4", "critic.lora.alpha=8",
    "generate.videos_per_prompt=2", "generate.sampling.steps=2",
    "align.trainer.max_steps=2", "align.trainer.batch_size=2", "align.trainer.num_workers=0",
    "align.trainer.warmup_steps=1",
    "evaluate.videos_per_prompt=1", "evaluate.sampling.steps=2",
]


@pytest.mark.slow
def test_reduced_pipeline_over_s3_and_rerun_skips(s3_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFT_CACHE", str(tmp_path / "cache"))
    assert cli.main(["pipeline", s3_url, *REDUCED]) == 0
    cfg = config.load("pipeline", None, [f"run={s3_url}", *REDUCED])
    built = [s for s in cli.PIPELINE_ORDER if cli.STAGES.get(s) or s == "data"]
    for stage in ["base", *built]:
        marker = storage.read_marker(config.section(cfg, stage).out)
        assert marker is not None and marker["config_hash"] == config.config_hash(config.section(cfg, stage)), stage
    assert storage.is_complete(f"{s3_url}/models")
    assert storage.exists(f"{s3_url}/config.yaml")
    assert storage.is_complete(f"{s3_url}/align/model")
    capsys.readouterr()
    assert cli.main(["pipeline", s3_url, *REDUCED]) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if "already complete, skipping" in line]
    assert len(skipped) == len(built) + 2, "\n".join(skipped)  # + models, base
