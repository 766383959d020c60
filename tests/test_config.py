"""Typed configs: defaults < file < command line, and errors that name the source, key and line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lift import config, stages
from lift.io import storage


def test_defaults_resolve_for_every_stage():
    for stage in [*stages.STAGES, "pipeline"]:
        cfg = stages.load(stage)
        assert "${" not in OmegaConf.to_yaml(cfg), stage


def test_precedence_file_then_command_line(tmp_path):
    path = tmp_path / "align.yaml"
    path.write_text("run: s3://bucket/run1\ntrainer:\n  lr: 2.0e-5\n  batch_size: 4\n")
    cfg = stages.load("align", str(path), ["trainer.batch_size=2"])
    assert cfg.trainer.lr == 2e-5 and cfg.trainer.batch_size == 2
    assert cfg.out == "s3://bucket/run1/align", "interpolations follow the overridden run URL"
    assert cfg.model.name_or_path == "s3://bucket/run1/base"


def test_config_from_object_storage(root_url):
    url = storage.join(root_url, "critic.yaml")
    storage.write_text(url, "lora:\n  r: 8\n")
    assert stages.load("critic", url).lora.r == 8


def test_typo_names_key_and_suggests():
    typo = r"command line: unknown config key 'trainer\.lrr'; did you mean 'lr'\?"
    with pytest.raises(config.ConfigError, match=typo):
        stages.load("align", None, ["trainer.lrr=1e-5"])


def test_typo_in_file_names_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run: ./x\nlora:\n  r: 8\n  alpah: 16\n")
    typo = rf"{path}, line 4: unknown config key 'lora\.alpah'; did you mean 'alpha'"
    with pytest.raises(config.ConfigError, match=typo):
        stages.load("critic", str(path))


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.lr=fast", "bad value for 'trainer.lr'"),
        ("objective.reward_norm=max", "expected one of \\['none', 'mean', 'zscore'\\]"),
        ("trainer.batch_size=1.5", "bad value for 'trainer.batch_size'"),
        ("model.family=sora", "bad value for 'model.family'"),
    ],
)
def test_wrong_types_and_choices(override, message):
    with pytest.raises(config.ConfigError, match=message):
        stages.load("align", None, [override])


def test_not_an_override_and_bad_interpolation():
    with pytest.raises(config.ConfigError, match="'trainer.lr' is not a key=value override"):
        stages.load("align", None, ["trainer.lr"])
    with pytest.raises(config.ConfigError, match="Interpolation key 'nowhere' not found"):
        stages.load("align", None, ["out=${nowhere}/x"])


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run: ./x\ntrainer: [unclosed\n")
    with pytest.raises(config.ConfigError, match=rf"{path}, line \d: invalid YAML"):
        stages.load("align", str(path))
    path.write_text("- a list\n")
    with pytest.raises(config.ConfigError, match="must be a YAML mapping"):
        stages.load("align", str(path))


def test_loaded_config_is_read_only():
    cfg = stages.load("score")
    with pytest.raises(Exception):
        cfg.mode = "generate"


def test_hash_tracks_content():
    a, b = stages.load("score"), stages.load("score", None, ["batch_size=9"])
    assert config.config_hash(a) == config.config_hash(stages.load("score"))
    assert config.config_hash(a) != config.config_hash(b)


def test_pipeline_sections_follow_run():
    cfg = stages.load("pipeline", None, ["run=memory://r", "critic.lora.r=4"])
    critic = stages.section(cfg, "critic")
    assert critic.run == "memory://r" and critic.out == "memory://r/critic" and critic.lora.r == 4
    assert stages.section(cfg, "critic-eval").critic == "memory://r/critic/model"


def test_show_is_commented_and_reloadable(tmp_path):
    text = config.show(stages.schema_of("align"))
    assert "# Peak learning rate of AdamW. [float]\n  lr: 0.0003" in text
    assert "betas: [0.9, 0.95]" in text
    path = tmp_path / "shown.yaml"
    path.write_text(text)
    assert stages.load("align", str(path)) == stages.load("align")


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "name, stage",
    [("pipeline-cogvideox-2b", "pipeline"), ("align-cogvideox-2b-8gpu", "align"),
     ("align-cogvideox-2b-4x8gpu", "align"), ("critic-qwen2.5-vl-7b", "critic")],
)
def test_cluster_configs_load_and_resolve(name, stage):
    cfg = stages.load(stage, str(CONFIGS / "cluster" / f"{name}.yaml"), ["run=s3://bucket/runs/x"])
    align = stages.section(cfg, "align") if stage == "pipeline" else cfg
    if stage in ("pipeline", "align"):
        assert align.model.name_or_path == "THUDM/CogVideoX-2b"
        assert (align.frames, align.height, align.width) == (49, 480, 720)
        assert align.trainer.betas == [0.9, 0.95] and align.trainer.lr == 1e-5 and align.trainer.batch_size == 8
        assert align.out == "s3://bucket/runs/x/align"
    critic = stages.section(cfg, "critic") if stage == "pipeline" else cfg
    if stage in ("pipeline", "critic"):
        assert critic.model.name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
        assert (critic.lora.r, critic.lora.alpha, critic.model.frames) == (128, 256, 8)


def test_local_config_is_the_embedded_default():
    """configs/local/pipeline-tiny.yaml is `lift config show pipeline`; regenerate it when the defaults change."""
    path = CONFIGS / "local" / "pipeline-tiny.yaml"
    assert path.read_text() == config.show(stages.PipelineConfig)
    assert stages.load("pipeline", str(path)) == stages.load("pipeline")


def test_a_stage_alone_resolves_to_what_the_pipeline_runs(tmp_path):
    """`lift STAGE run=RUN` on a pipeline's run folder gets the settings `lift pipeline` used for that stage: one
    default per key (the pipeline's sections are the stages' own schemas), with `--config` layered the same way."""
    run = f"file://{tmp_path}/run"
    pipeline = stages.load("pipeline", None, [f"run={run}"])
    for name in stages.STAGES:
        assert stages.load(name, None, [f"run={run}"]) == stages.section(pipeline, name), name
    align = stages.load("align", None, [f"run={run}"])
    assert (align.trainer.lr, align.trainer.max_steps, align.trainer.warmup_steps) == (3e-4, 400, 20)
    section = tmp_path / "align.yaml"
    section.write_text("trainer: {lr: 1.0e-5, max_steps: 32}\n")
    whole = tmp_path / "pipeline.yaml"
    whole.write_text("align:\n  trainer: {lr: 1.0e-5, max_steps: 32}\n")
    alone = stages.load("align", str(section), [f"run={run}"])
    inside = stages.section(stages.load("pipeline", str(whole), [f"run={run}"]), "align")
    assert alone == inside and alone.trainer.lr == 1e-5


def test_pipeline_schema_is_composed_from_the_registry():
    fields = [f.name for f in dataclasses.fields(stages.PipelineConfig)]
    assert fields == ["run", "rounds", *(s.section for s in stages.STAGES.values())]
    with pytest.raises(config.ConfigError, match="unknown stage 'finetune'"):
        stages.load("finetune")
