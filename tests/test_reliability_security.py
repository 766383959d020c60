"""Security guarantees (docs/RELIABILITY.md): credentials never reach an output; no pickle is ever loaded; model
code shipped in a folder runs only when the config says so; YAML is loaded safely; paths read from manifests
cannot leave their folder."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lift import cli, config, models, stages
from lift.io import storage
from lift.launch import component

ROOT = Path(__file__).resolve().parent.parent
# Secret-looking values: the shape of real AWS credentials, unique enough that any hit is a leak.
KEY_ID = "AKIALIFTLEAKCANARYKEYID"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY-lift-leak-canary-SECRET"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJH-lift-leak-canary-TOKEN"
CANARIES = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}


def _leaks(text: str) -> list[str]:
    """Which canaries (or a 16-character piece of one) appear in `text`."""
    pieces = {value[i:i + 16] for value in CANARIES.values() for i in range(0, len(value) - 15, 8)}
    return sorted({p for p in pieces if p in text})


def _lift(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lift", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


@pytest.mark.slow
def test_credentials_never_reach_logs_configs_markers_reports_or_job_specs(s3_endpoint, zoo_dir, tmp_path,
                                                                           monkeypatch, capsys):
    """Stages on S3 (the loopback endpoint accepts these credentials) with debug logging, a failing command, the
    report, `lift submit --dry-run`, the TorchX Kubernetes dry run and the Helm chart, all with secret-looking
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN set; every output is searched for them."""
    import s3fs

    run = f"s3://lift-test/{uuid.uuid4().hex[:12]}/run"
    env = {**CANARIES, "LIFT_LOG_LEVEL": "DEBUG", "LIFT_CACHE": str(tmp_path / "cache")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs, _ = storage.filesystem(run)
    fs.put(f"{zoo_dir}/critic/", storage.filesystem(f"{run}/critic")[1], recursive=True)
    logs: dict[str, str] = {}
    for name, args in {
        "data": ["data", "toy", f"{run}/data", "toy.num_clips=6", "toy.num_prompts=2", "toy.num_real=2"],
        "score": ["score", f"rollouts={run}/data", f"critic={run}/critic", f"out={run}/scores", "batch_size=3"],
        "failing": ["score", "rollouts=s3://lift-no-such-bucket/x", f"critic={run}/critic", f"out={run}/failed"],
        "report": ["report", run],
    }.items():
        proc = _lift(*args, env=env)
        assert (proc.returncode == 0) == (name != "failing"), proc.stderr[-3000:]
        logs[name] = proc.stdout + proc.stderr
    assert "bucket 'lift-no-such-bucket' does not exist" in logs["failing"]
    outputs = {f"s3://{p}": fs.cat_file(p).decode("utf-8", "replace") for p in fs.find(run)}
    outputs.update({str(p): p.read_bytes().decode("utf-8", "replace")
                    for p in (tmp_path / "cache").rglob("*") if p.is_file()})
    capsys.readouterr()
    assert cli.main(["submit", "score", "--dry-run", "--secret", "lift-s3", "--", f"run={run}"]) == 0
    logs["submit --dry-run"] = "".join(capsys.readouterr())
    from torchx.schedulers import kubernetes_scheduler

    app = component.stage_app("align", f"run={run}", j="2x8", gpu=8, endpoint="http://minio:9000")
    logs["torchx dryrun"] = str(kubernetes_scheduler.create_scheduler("t").submit_dryrun(app, {"queue": "q"}).request)
    import helm_python as helm

    rendered = helm.Chart.load(ROOT / "charts").render(values=None, name="lift", namespace="lift", is_install=True)
    logs["helm template"] = "".join(rendered.values())
    s3fs.S3FileSystem.clear_instance_cache()
    names = [u.rsplit("/", 1)[-1] for u in outputs]
    for expected in ("config.yaml", "_SUCCESS", "_STARTED", "scores.jsonl", "manifest.jsonl", "index.html"):
        assert expected in names, f"nothing named {expected} among the outputs searched"
    assert "DEBUG" in logs["score"], "debug logging was on"
    leaks = {where: found for where, text in {**outputs, **logs}.items() if (found := _leaks(text))}
    assert not leaks, leaks


# ------------------------------------------------------------------------------------------- the code itself
def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute):  # module.function, or .method of some other object
                name = f"{f.value.id}.{f.attr}" if isinstance(f.value, ast.Name) else f".{f.attr}"
            else:
                name = getattr(f, "id", "")
            yield name, node


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def test_no_unsafe_deserialisation_or_remote_code_in_lift():
    """torch.load only with weights_only=True; no pickle, marshal, eval or exec; YAML only through safe loaders;
    trust_remote_code never hard-wired to True; no checkpoint or export written with torch.save or pickle."""
    problems = []
    for path in sorted((ROOT / "lift").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{where}:{node.lineno}: imports {m}" for m in mods if m.split(".")[0] in
                             ("pickle", "dill", "marshal", "shelve", "cloudpickle")]
        for name, call in _calls(tree):
            at = f"{where}:{call.lineno}"
            if name == "torch.load":
                weights_only = _keyword(call, "weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    problems.append(f"{at}: torch.load without weights_only=True")
            if name in ("torch.save", "eval", "exec", "yaml.unsafe_load", "yaml.full_load", "yaml.full_load_all"):
                problems.append(f"{at}: {name}")
            if name in ("yaml.load", "yaml.load_all"):
                loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
                if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                    problems.append(f"{at}: {name} without a SafeLoader")
            remote = _keyword(call, "trust_remote_code")
            if isinstance(remote, ast.Constant) and remote.value is True:
                problems.append(f"{at}: trust_remote_code=True")
            safe = _keyword(call, "safe_serialization")
            if isinstance(safe, ast.Constant) and safe.value is False:
                problems.append(f"{at}: safe_serialization=False")
    assert not problems, "\n".join(problems)


def test_yaml_tags_that_run_code_are_refused(tmp_path):
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f'run: !!python/object/apply:os.system ["touch {sentinel}"]\n')
    with pytest.raises(config.ConfigError, match=rf"{path}, line 1: invalid YAML"):
        stages.load("score", str(path))
    assert not sentinel.exists()


# ------------------------------------------------------------------------------------------- model loading
@pytest.fixture
def custom_code_critic(zoo_dir, tmp_path) -> tuple[Path, Path]:
    """The tiny critic whose config asks for code shipped in its folder (an unknown model type with auto_map);
    importing that code leaves a file behind."""
    folder = tmp_path / "custom-critic"
    sentinel = tmp_path / "custom-code-ran"
    storage.filesystem(str(folder))[0].put(f"{zoo_dir}/critic/", str(folder), recursive=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="custom_vl", auto_map={"AutoConfig": "custom.Config",
                                                 "AutoModelForImageTextToText": "custom.Model"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "custom.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('ran')\n"
        "from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLForConditionalGeneration as Model\n")
    return folder, sentinel


def test_code_in_a_model_folder_runs_only_when_the_config_allows_it(custom_code_critic, monkeypatch):
    folder, sentinel = custom_code_critic
    for stage, key in (("critic", "model.trust_remote_code"), ("generate", "model.trust_remote_code"),
                       ("align", "model.trust_remote_code"), ("evaluate", "base.trust_remote_code"),
                       ("score", "trust_remote_code")):
        assert OmegaConf.select(stages.load(stage), key) is False, (stage, key)
    with pytest.raises(ValueError, match="(?s)contains custom code.*trust_remote_code=True"):
        models.load_critic(str(folder))
    assert not sentinel.exists(), "refused before running any of it"
    import torch

    from lift.models import scoring

    seen = []
    monkeypatch.setattr(models, "load_critic", lambda *a, **kw: seen.append(kw["trust_remote_code"]) or 1 / 0)
    for flag in ("false", "true"):
        cfg = stages.load("score", None, [f"trust_remote_code={flag}"])
        with pytest.raises(ZeroDivisionError):
            scoring.Scorer(str(folder), torch.device("cpu"), trust_remote_code=cfg.trust_remote_code)
    assert seen == [False, True], "the config's switch reaches the loader"
    # With the switch on the folder's code runs: in another process, as it registers classes in transformers.
    proc = subprocess.run([sys.executable, "-c", "import sys; from lift import models; "
                           "models.load_critic(sys.argv[1], trust_remote_code=True)", str(folder)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_MODULES_CACHE": str(folder.parent / "hf-modules")})
    assert proc.returncode == 0 and sentinel.exists(), proc.stderr[-3000:]


def test_weights_load_from_safetensors_only(zoo_dir, tmp_path):
    """A model folder holding its weights as a pickle (pytorch_model.bin) is refused, not unpickled."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    storage.filesystem(str(folder))[0].put(f"{zoo_dir}/critic/", str(folder), recursive=True)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        models.load_critic(str(folder))


# ---------------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("path", ["../x.mp4", "videos/../../x.mp4", "/etc/passwd", "s3://other-bucket/x.mp4",
                                  "videos\\..\\x.mp4", "..", "", " "])
def test_paths_from_manifests_cannot_leave_their_folder(path):
    with pytest.raises(ValueError, match="must be relative and stay inside s3://b/run/rollouts"):
        storage.child("s3://b/run/rollouts", path, "s3://b/run/rollouts/manifest.jsonl:7")


def test_relative_paths_inside_the_folder_are_kept():
    assert storage.child("s3://b/r", "videos/a..b.mp4", "m:1") == "s3://b/r/videos/a..b.mp4"
    assert storage.child("/data", "./videos/x.mp4", "m:1") == "/data/./videos/x.mp4"
