"""Checkpoints record the settings that shape the weights, and a training refuses to resume from checkpoints of
other settings (naming each key, both values, the checkpoint and the ways on) instead of resuming at its final
step, training nothing and sealing the old weights under the new config."""

from __future__ import annotations

import pytest
import torch

from lift import cli, config, stages
from lift.config.schema import TrainerConfig
from lift.io import storage
from lift.train import checkpoint
from lift.train.checkpoint import Checkpointer, TrainState

TINY = ["trainer.max_steps=2", "trainer.batch_size=2", "trainer.checkpoint_every=1", "trainer.num_workers=0",
        "trainer.log_every=1", "trainer.lr=1e-3"]


def _state(step: int = 0) -> TrainState:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    state = TrainState(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), trainable_only=False)
    state.step = step
    return state


def _saved(url: str, trainer: TrainerConfig) -> str:
    return Checkpointer(url, {"model": "tiny"}, trainer=trainer).save(_state(3), block=True)


def test_changed_trainer_setting_is_refused_naming_key_values_and_the_ways_on(tmp_path):
    url = f"file://{tmp_path}/ckpt"
    step = _saved(url, TrainerConfig(lr=1e-3, max_steps=3, betas=[0.9, 0.95]))
    assert storage.read_marker(step)["settings"]["trainer.lr"] == 1e-3
    other = Checkpointer(url, {"model": "tiny"}, trainer=TrainerConfig(lr=1e-5, max_steps=6, betas=[0.9, 0.95]))
    with pytest.raises(config.ConfigError) as err:
        other.load(_state())
    msg = str(err.value)
    assert msg.startswith(f"{step}: checkpoint is incompatible with this run: ")
    assert "'trainer.lr' was 0.001, now 1e-05; 'trainer.max_steps' was 3, now 6;" in msg
    assert f"rerun with --force to discard the checkpoints under {url} and train from the start" in msg
    assert msg.endswith("or set trainer.lr=0.001 trainer.max_steps=3 to resume from them")
    betas = Checkpointer(url, {"model": "tiny"}, trainer=TrainerConfig(lr=1e-3, max_steps=3, betas=[0.9, 0.999]))
    with pytest.raises(config.ConfigError, match=r"set trainer.betas=\[0.9,0.95\] to resume"):
        betas.load(_state())


def test_settings_that_leave_the_result_alone_may_change(tmp_path):
    url = f"file://{tmp_path}/ckpt"
    _saved(url, TrainerConfig(lr=1e-3))
    neutral = TrainerConfig(lr=1e-3, checkpoint_every=7, keep_checkpoints=5, async_checkpoint=False, log_every=3,
                            num_workers=0, activation_checkpointing=False)
    state = _state()
    assert Checkpointer(url, {"model": "tiny"}, trainer=neutral).load(state) and state.step == 3


def test_stage_config_and_rebuilt_inputs_are_part_of_the_settings(tmp_path):
    url = f"file://{tmp_path}/ckpt"
    cfg = stages.load("align", None, [f"run={tmp_path}", "objective.lambda_real=1"])
    with checkpoint.stage(cfg, {"scores": "abc@t1", "rollouts": "r@t0"}, restart=False):
        Checkpointer(url, {}, trainer=cfg.trainer).save(_state(3), block=True)
    changed = stages.load("align", None, [f"run={tmp_path}", "objective.lambda_real=0.5", "trainer.log_every=1",
                                          f"rollouts={tmp_path}/copy-of-rollouts", f"out={tmp_path}/elsewhere"])
    with (checkpoint.stage(changed, {"scores": "def@t2", "rollouts": "r@t0"}, restart=False),
          pytest.raises(config.ConfigError) as err):
        Checkpointer(url, {}, trainer=changed.trainer).load(_state())
    msg = str(err.value)
    assert ("'objective.lambda_real' was 1.0, now 0.5; 'scores' was 'sealed abc@t1', now 'sealed def@t2';" in msg)
    assert "or set objective.lambda_real=1.0 to resume" in msg, "a rebuilt input cannot be set back"
    assert "rollouts" not in msg and "log_every" not in msg, "a sealed input is its seal, not its URL"
    with checkpoint.stage(changed, {}, restart=False):
        settings, _ = checkpoint.trainer_settings(changed.trainer)
    assert not {"run", "out", "trainer.log_every", "trainer.checkpoint_every"} & set(settings)
    base = stages.load("base", None, [f"run={tmp_path}"])
    with checkpoint.stage(base, {}, restart=False):
        vae, _ = checkpoint.trainer_settings(base.vae)
    assert vae["vae.lr"] == base.vae.lr and not any(k.startswith("transformer.") for k in vae)


def test_checkpoint_without_recorded_settings_is_resumed_only_by_a_restart(tmp_path):
    url = f"file://{tmp_path}/ckpt"
    step = _saved(url, TrainerConfig(lr=1e-3))
    marker = storage.read_marker(step)
    del marker["settings"]
    storage.write_json(storage.join(step, storage.MARKER), marker)
    cfg = stages.load("critic", None, [f"run={tmp_path}"])
    with (checkpoint.stage(cfg, {}, restart=False),
          pytest.raises(config.ConfigError, match="records no training settings .* started by another config")):
        Checkpointer(url, {"model": "tiny"}, trainer=cfg.trainer).load(_state())
    with checkpoint.stage(cfg, {}, restart=True):
        state = _state()
        assert Checkpointer(url, {"model": "tiny"}, trainer=cfg.trainer).load(state) and state.step == 3


def _rerun_with_new_lr(argv: list[str], out: str, capsys) -> None:
    """`lift ARGV` on a finished run folder, then again at trainer.lr=1e-4: refused before anything is discarded (the
    output stays sealed by the config that wrote it); then with --force: trained from the start at the new lr."""
    assert cli.main(argv) == 0
    sealed = storage.read_marker(out)
    capsys.readouterr()
    assert cli.main([*argv, "trainer.lr=1e-4"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lift: ")]
    assert lines == [(f"lift: config error: {out}/checkpoints/step-00000002: checkpoint is incompatible with this "
                      f"run: 'trainer.lr' was 0.001, now 0.0001; rerun with --force to discard the checkpoints under "
                      f"{out}/checkpoints and train from the start, or set trainer.lr=0.001 to resume from them")]
    assert storage.read_marker(out) == sealed, "the finished output is kept, sealed by the config that wrote it"
    assert cli.main([*argv, "trainer.lr=1e-4", "--force"]) == 0
    marker = storage.read_marker(out)
    assert marker["counts"]["steps"] == 2 and marker["counts"]["resumed"] is False
    assert storage.read_marker(f"{out}/checkpoints/step-00000002")["settings"]["trainer.lr"] == 1e-4


def test_align_rerun_at_another_lr_is_refused_then_forced(zoo_dir, tmp_path, capsys):
    from test_align import _write_rollouts, _write_scores

    root = str(tmp_path)
    _write_rollouts(root, zoo_dir)
    _write_scores(f"{root}/rollouts", f"{root}/scores", {"p0-000": 0.9, "p0-001": 0.05, "p1-000": 0.2, "p1-001": 0.9})
    argv = ["align", f"rollouts={root}/rollouts", f"scores={root}/scores", f"out={root}/align",
            f"model.name_or_path={zoo_dir}/cogvideox", "real=null", "frames=9", *TINY]
    _rerun_with_new_lr(argv, f"{root}/align", capsys)


def test_critic_rerun_at_another_lr_is_refused_then_forced(zoo_dir, toy_data, tmp_path, capsys):
    argv = ["critic", f"run={tmp_path}", f"data={toy_data}", f"model.name_or_path={zoo_dir}/critic", *TINY]
    _rerun_with_new_lr(argv, f"{tmp_path}/critic", capsys)
