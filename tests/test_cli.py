"""The `lift` command line: help everywhere, one-line errors with exit codes, and the stage marker contract."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from lift import cli, config, stages
from lift.io import storage
from lift.stages import STAGES, runner

CALLS: list[str] = []


def fake_stage(cfg) -> dict:
    CALLS.append(cfg.out)
    storage.write_text(storage.join(cfg.out, "result.txt"), str(cfg.batch_size))
    return {"videos": 7}


def failing_stage(cfg) -> dict:
    storage.write_text(storage.join(cfg.out, "partial.txt"), "half")
    raise RuntimeError("boom")


def _help_paths() -> list[list[str]]:
    paths = [[]]
    stage_commands = [s for s in STAGES if s != "data"]  # `lift data` has actions of its own (below)
    paths += [[name] for name in ["data", "models", *stage_commands, "pipeline", "report", "wait", "config", "plan"]]
    paths += [["data", "toy"], ["data", "import"], ["data", "export"], ["models", "tiny"], ["models", "real"],
              ["config", "show"]]
    return paths


@pytest.mark.parametrize("path", _help_paths(), ids=lambda p: " ".join(p) or "lift")
def test_help_on_every_command(path, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([*path, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lift") and len(out.splitlines()) > 3


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "lift", "config", "show", "score"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "mode: logits" in out.stdout and "# s(label) of LiFT's reward" in out.stdout


def test_a_stage_process_does_not_import_the_kubernetes_client():
    """Every rank of every stage imports lift.cli; only `lift submit` builds jobs, and the Kubernetes client's
    models take a second to import."""
    code = "import sys, lift.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'kubernetes', 'kubeflow'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_typo_fails_before_work_with_suggestion(capsys):
    assert cli.main(["align", "trainer.lrr=1e-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lift: config error: command line: unknown config key 'trainer.lrr'; did you mean 'lr'?"]


def test_missing_config_file_is_one_line(tmp_path, capsys):
    assert cli.main(["score", "--config", str(tmp_path / "absent.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lift: error:") and "absent.yaml" in err and "\n" not in err


def test_run_stage_seals_skips_and_reruns(root_url):
    CALLS.clear()
    target = f"{__name__}:fake_stage"
    cfg = stages.load("score", None, [f"out={root_url}/scores"])
    assert runner.run_stage("score", cfg, target=target) == {"videos": 7}
    marker = storage.read_marker(cfg.out)
    assert marker["stage"] == "score" and marker["config_hash"] == config.config_hash(cfg)
    assert marker["counts"] == {"videos": 7}
    assert stages.load("score", storage.join(cfg.out, "config.yaml")) == cfg, "resolved config saved beside output"
    runner.run_stage("score", cfg, target=target)
    assert len(CALLS) == 1, "a sealed output with the same config is skipped"
    runner.run_stage("score", cfg, force=True, target=target)
    assert len(CALLS) == 2
    changed = stages.load("score", None, [f"out={root_url}/scores", "batch_size=3"])
    runner.run_stage("score", changed, target=target)
    assert len(CALLS) == 3 and storage.read_marker(cfg.out)["config_hash"] == config.config_hash(changed)


def test_a_stage_reruns_when_a_sealed_input_was_rebuilt(root_url):
    CALLS.clear()
    target = f"{__name__}:fake_stage"
    cfg = stages.load("score", None, [f"out={root_url}/scores", f"rollouts={root_url}/rollouts",
                                      f"critic={root_url}/critic/model"])
    storage.write_marker(f"{root_url}/rollouts", "generate", "first")
    runner.run_stage("score", cfg, target=target)
    assert storage.read_marker(cfg.out)["inputs"]["rollouts"].startswith("first@")
    assert "critic" not in storage.read_marker(cfg.out)["inputs"], "an unsealed folder is no sealed input"
    runner.run_stage("score", cfg, target=target)
    assert len(CALLS) == 1
    storage.write_marker(f"{root_url}/rollouts", "generate", "second")  # new rollouts need new scores
    runner.run_stage("score", cfg, target=target)
    assert len(CALLS) == 2 and storage.read_marker(cfg.out)["inputs"]["rollouts"].startswith("second@")
    evaluate = stages.load("evaluate", None, [f"out={root_url}/eval", f"prompts={root_url}/rollouts/prompts.jsonl"])
    assert runner.sealed_inputs(evaluate)["prompts"].startswith("second@"), "a file's folder is its sealed input"


def test_failed_stage_leaves_no_marker(root_url):
    cfg = stages.load("score", None, [f"out={root_url}/scores"])
    with pytest.raises(RuntimeError, match="boom"):
        runner.run_stage("score", cfg, target=f"{__name__}:failing_stage")
    assert storage.read_marker(cfg.out) is None


def test_failure_exit_code_through_main(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(STAGES, "score", dataclasses.replace(STAGES["score"], run=f"{__name__}:failing_stage",
                                                             check=f"{__name__}:fake_stage"))
    assert cli.main(["score", f"out={tmp_path}/s"]) == 1
    assert capsys.readouterr().err.strip().endswith("lift: error: RuntimeError: boom")


def test_wait_returns_when_sealed_and_times_out(root_url, capsys):
    out = storage.join(root_url, "stage")
    assert cli.main(["wait", out, "--timeout", "0.2", "--interval", "0.05"]) == 1
    assert "still not complete after" in capsys.readouterr().err
    storage.write_marker(out, "data", "h")
    assert cli.main(["wait", out, storage.join(out, storage.MARKER), "--interval", "0.05"]) == 0


def test_config_show_with_overrides(capsys):
    assert cli.main(["config", "show", "critic", "run=s3://b/r", "lora.r=4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["run"] == "s3://b/r" and shown["out"] == "s3://b/r/critic" and shown["lora"]["r"] == 4


def test_secrets_are_redacted_from_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sup3r-s3cret-value")
    assert cli.main(["score", "--config", str(tmp_path / "sup3r-s3cret-value.yaml")]) == 1
    err = capsys.readouterr().err
    assert "sup3r-s3cret-value" not in err and "***" in err
