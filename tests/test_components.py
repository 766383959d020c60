"""TorchX components (components/*.py): validated and called like the `torchx` CLI does, the kubernetes dry-run of
every one checked as a Volcano job with valid pods, and real local_cwd runs of `lift` under torchrun."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from checkov_scan import CHECKOV_SKIPS, describe, run_checkov
from k8s_schemas import ROOT, assert_valid_pod, write_network_policies
from torchx import specs
from torchx.schedulers import kubernetes_scheduler
from torchx.specs.builders import materialize_appdef
from torchx.specs.file_linter import get_fn_docstring
from torchx.specs.finder import get_component

from lift import stages
from lift.launch import component, hardening

# component function (components/FN.py:FN) -> the lift command it runs: one per cluster stage of the registry
COMPONENTS = {s.section: s.name for s in stages.cluster_stages()}
BIN = Path(sys.executable).parent


def _component(fn: str):
    """The component as `torchx run` loads it: exec'd from its file, linted (an error raises here)."""
    return get_component(f"{ROOT}/components/{fn}.py:{fn}").fn


def _torchx(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TORCHXCONFIG": str(ROOT / ".torchxconfig"),
           "OMP_NUM_THREADS": "1", "LOGLEVEL": "WARNING"}
    return subprocess.run([str(BIN / "torchx"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _lift_argv(role: specs.Role) -> list[str]:
    argv = component.torchrun_argv(role)
    return argv[argv.index("-m") + 1:]


def test_one_file_per_stage_and_every_stage_has_one():
    files = sorted(p.stem for p in (ROOT / "components").glob("*.py"))
    assert files == sorted(COMPONENTS)
    # `base` trains the toy world's few-MB base model in one local process: no cluster component
    assert list(COMPONENTS.values()) == [s.name for s in stages.cluster_stages()] == list(component.COMMANDS)


@pytest.mark.parametrize("fn", COMPONENTS)
def test_component_declares_exactly_the_builders_options(fn):
    """TorchX needs a literal signature per file; this keeps the seven copies identical to the builder's."""
    declared = _component(fn)
    params = list(inspect.signature(declared).parameters.values())
    builder = [p for p in inspect.signature(component.stage_app).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert params[0].kind is params[0].VAR_POSITIONAL and params[0].annotation is str
    hints = typing.get_type_hints(component.stage_app)
    for mine, theirs in zip(params[1:], builder, strict=True):
        assert (mine.name, mine.annotation, mine.kind) == (theirs.name, hints[theirs.name], theirs.kind)
        expected_default = "1x1" if (fn, mine.name) == ("data", "j") else theirs.default
        assert mine.default == expected_default, mine.name
    _, docs = get_fn_docstring(declared)
    _, builder_docs = get_fn_docstring(component.stage_app)
    for p in builder:
        want = builder_docs[p.name].replace("lift-COMMAND", f"lift-{COMPONENTS[fn]}")
        assert docs[p.name] == want, p.name
    assert docs[params[0].name].strip(), "the overrides need a --help line"


def test_options_are_the_builders_keyword_options():
    """`options(locals())` hands stage_app exactly its keyword options; a component missing one fails loudly."""
    assert component.OPTIONS[:3] == ("config", "image", "name") and component.OPTIONS[-1] == "force"
    scope = {name: object() for name in component.OPTIONS}
    assert component.options({**scope, "overrides": ("run=x",)}) == scope
    with pytest.raises(KeyError, match="force"):
        component.options({k: v for k, v in scope.items() if k != "force"})


@pytest.mark.parametrize("fn", COMPONENTS)
def test_component_help(fn, capsys):
    """`torchx run components/F.py:F --help`: every option documented from the docstring's Args."""
    with pytest.raises(SystemExit) as done:
        materialize_appdef(_component(fn), ["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"`lift {COMPONENTS[fn]}" in out
    for flag in ("--config", "--image", "-j", "-h", "--gpu", "--memMB", "--endpoint", "--env", "--max_retries"):
        assert f"{flag} " in out, flag


@pytest.mark.parametrize("fn", COMPONENTS)
def test_component_is_the_builder(fn):
    args = ("toy", "s3://b/run/data") if fn == "data" else ("run=s3://b/run", "trainer.lr=1e-5")
    kwargs = dict(j="2x8", gpu=8, cpu=32, memMB=100_000, endpoint="http://minio:9000", env={"NCCL_DEBUG": "INFO"},
                  max_retries=2, config="s3://b/cfg.yaml")
    assert _component(fn)(*args, **kwargs) == component.stage_app(COMPONENTS[fn], *args, **kwargs)


@pytest.mark.parametrize("fn", COMPONENTS)
def test_component_called_like_the_cli(fn):
    """`torchx run components/F.py:F ARGS` parses ARGS against the signature and docstring; check the AppDef."""
    tail = ["toy", "s3://b/run/data", "toy.num_clips=20"] if fn == "data" else ["run=s3://b/run", "trainer.lr=1e-5"]
    app = materialize_appdef(_component(fn), [
        "-j", "4x8", "--gpu", "8", "--cpu", "64", "--memMB", "400000", "--image", "registry.example/lift:1",
        "--config", "s3://b/align.yaml", "--endpoint", "http://minio:9000", "--region", "eu-west-1",
        "--env", "NCCL_DEBUG=INFO,LIFT_LOG_LEVEL=DEBUG", "--max_retries", "3", "--max_restarts", "1",
        "--mounts", "type=volume,src=lift-data,dst=/data", "--force", "True", "--", *tail,
    ])
    cmd = COMPONENTS[fn]
    (role,) = app.roles
    assert app.name == f"lift-{cmd}" and role.name == cmd.replace("-", "_") and role.image == "registry.example/lift:1"
    assert (role.num_replicas, role.min_replicas, role.max_retries) == (4, 4, 3)
    assert role.resource == specs.Resource(cpu=64, gpu=8, memMB=400000)
    assert role.env == {"NCCL_DEBUG": "INFO", "LIFT_LOG_LEVEL": "DEBUG", "AWS_ENDPOINT_URL": "http://minio:9000",
                        "AWS_REGION": "eu-west-1", "PYTHONUNBUFFERED": "1"}
    assert role.mounts == [specs.VolumeMount(src="lift-data", dst_path="/data", read_only=False)]
    assert role.port_map == {"c10d": 29500}
    argv = component.torchrun_argv(role)
    flags = dict(zip(argv[1:argv.index("-m"):2], argv[2:argv.index("-m"):2]))
    assert flags == {"--rdzv_backend": "c10d", "--rdzv_endpoint": "$${${rank0_env}:=localhost}:29500",
                     "--rdzv_id": "${app_id}", "--nnodes": "4", "--nproc_per_node": "8", "--max_restarts": "1"}
    assert _lift_argv(role) == ["lift", cmd, *tail, "--config", "s3://b/align.yaml", "--force"]


def test_single_node_and_elastic_layouts():
    one = component.stage_app("align", j="1x2").roles[0]
    assert one.num_replicas == 1 and "--rdzv_endpoint localhost:0" in one.args[1] and "--nnodes 1 " in one.args[1]
    elastic = component.stage_app("align", j="2:4x8", gpu=8).roles[0]
    assert (elastic.min_replicas, elastic.num_replicas) == (2, 4) and "--nnodes 2:4 " in elastic.args[1]
    assert component.parse_j("8") == (1, 1, 8)


@pytest.mark.parametrize("j", ["0x2", "2x0", "3:2x8", "two", "1x2x3", ""])
def test_bad_j_is_refused(j):
    with pytest.raises(ValueError, match="-j"):
        component.stage_app("align", j=j)


@pytest.mark.parametrize("key", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HF_TOKEN"])
def test_credentials_are_never_arguments(key):
    with pytest.raises(ValueError, match="credentials must not be passed"):
        component.stage_app("score", env={key: "x"})


def test_overrides_are_quoted_for_the_shell():
    role = component.stage_app("score", "run=s3://b/my run", "out=$(rm -rf /)").roles[0]
    assert _lift_argv(role)[-2:] == ["run=s3://b/my run", "out=$(rm -rf /)"]


def test_unknown_command_is_refused():
    with pytest.raises(ValueError, match="unknown lift command"):
        component.stage_app("train")


# ------------------------------------------------------------------------------------------- kubernetes dry-run
def _volcano_job(app: specs.AppDef, **cfg) -> dict:
    info = kubernetes_scheduler.create_scheduler("test").submit_dryrun(app, {"queue": "default", **cfg})
    return yaml.safe_load(str(info.request))


def _check_volcano_job(job: dict, cmd: str, nodes: int, gpus: int, tail: list[str]) -> None:
    assert (job["apiVersion"], job["kind"]) == ("batch.volcano.sh/v1alpha1", "Job")
    assert job["spec"]["schedulerName"] == "volcano" and job["spec"]["queue"] == "default"
    tasks = job["spec"]["tasks"]
    assert len(tasks) == nodes and [t["replicas"] for t in tasks] == [1] * nodes
    for i, task in enumerate(tasks):
        assert_valid_pod(task["template"], name=task["name"])
        spec = task["template"]["spec"]
        (container,) = spec["containers"]
        assert container["command"][:2] == ["bash", "-c"]
        argv = shlex.split(container["command"][2])
        assert argv[0] == "torchrun" and argv[argv.index("--nnodes") + 1] == str(nodes)
        assert argv[argv.index("-m") + 1:] == ["lift", cmd, *tail]
        host = argv[argv.index("--rdzv_endpoint") + 1]
        # Volcano names the first node's address VC_<TASK>_0_HOSTS ('-' -> '_'); TorchX's task names drop '_'
        first = "TORCHX_RANK0_HOST" if i == 0 else f"VC_{cmd.upper().replace('-', '')}_0_HOSTS"
        assert host == ("localhost:0" if nodes == 1 else f"${{{first}:=localhost}}:29500")
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits.get("nvidia.com/gpu") == requests.get("nvidia.com/gpu") == (str(gpus) if gpus else None)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["PYTHONUNBUFFERED"] == "1"
        assert not set(env) & {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"}
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
        assert shm == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        # TorchX 0.7.0 renders an empty securityContext; StageRole.pre_proc hardens every pod
        # (lift/launch/hardening.py).
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] == hardening.UID and sc["readOnlyRootFilesystem"]
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["fsGroup"] == hardening.UID
        assert spec["automountServiceAccountToken"] is False and container["imagePullPolicy"] == "Always"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert {"/dev/shm": "dshm", "/tmp": "tmp", f"{hardening.HOME}/.cache": "cache"}.items() <= mounts.items()
        assert {v["name"]: v for v in spec["volumes"]}["tmp"] == {"name": "tmp", "emptyDir": {}}


@pytest.mark.parametrize("fn", COMPONENTS)
def test_kubernetes_dryrun_of_every_component(fn):
    cmd = COMPONENTS[fn]
    tail = ["toy", "s3://b/run/data"] if fn == "data" else ["run=s3://b/run"]
    nodes, gpus = (1, 0) if fn == "data" else (4, 8)
    app = _component(fn)(*tail, j=f"{nodes}x{max(gpus, 1)}", gpu=gpus, cpu=64, memMB=400_000,
                         endpoint="http://minio:9000", image="registry.example/lift:1")
    job = _volcano_job(app, namespace="ml", service_account="lift", priority_class="training")
    _check_volcano_job(job, cmd, nodes, gpus, tail)
    assert job["spec"]["priorityClassName"] == "training"
    assert {t["template"]["spec"]["serviceAccountName"] for t in job["spec"]["tasks"]} == {"lift"}


def test_device_mounts_are_refused():
    with pytest.raises(ValueError, match="device mounts"):
        component.stage_app("align", mounts=["type=device", "src=/dev/fuse"])


def test_other_schedulers_are_left_alone():
    app = component.stage_app("align", j="1x2")
    info = specs.AppDryRunInfo(request=object(), fmt=repr)
    assert app.roles[0].pre_proc("local_cwd", info) is info


def test_dryrun_pods_pass_the_security_scanner(tmp_path):
    """Every component's Volcano pods through checkov, with only the project's accepted findings."""
    pods = []
    for fn, cmd in COMPONENTS.items():
        tail = ["toy", "s3://b/run/data"] if fn == "data" else ["run=s3://b/run"]
        app = _component(fn)(*tail, j="2x8", gpu=8, image="registry.example/lift:1")
        for task in _volcano_job(app)["spec"]["tasks"]:
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": task["name"], "namespace": "lift", **task["template"]["metadata"]},
                "spec": task["template"]["spec"]})
    (tmp_path / "torchx-pods.yaml").write_text(yaml.safe_dump_all(pods))
    write_network_policies(tmp_path, "lift")
    failed = run_checkov([tmp_path])
    unexpected = [f for f in failed if f["check_id"] not in CHECKOV_SKIPS]
    assert not unexpected, "checkov findings:\n" + describe(unexpected)


def test_kubernetes_dryrun_through_the_torchx_cli():
    """The documented command, end to end through `torchx run --dryrun` (no cluster, no Docker)."""
    out = _torchx("run", "-s", "kubernetes", "--dryrun", "--workspace", "", "-cfg", "queue=default",
                  "components/align.py:align", "-j", "2x8", "--gpu", "8", "--cpu", "64", "--memMB", "400000",
                  "--endpoint", "http://minio:9000", "--", "run=s3://b/run", "trainer.lr=1e-5")
    assert out.returncode == 0, out.stderr
    request = out.stdout.split("=== SCHEDULER REQUEST ===", 1)[1]
    _check_volcano_job(yaml.safe_load(request), "align", 2, 8, ["run=s3://b/run", "trainer.lr=1e-5"])


# ------------------------------------------------------------------------------------------- local_cwd runs
def _local(component: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return _torchx("run", "-s", "local_cwd", component, *args, timeout=timeout)


@pytest.mark.slow
def test_local_cwd_components_run_stages_to_completion(tmp_path):
    """Stages to completion through TorchX on the toy world and the tiny zoo: `lift data toy` through the data
    component (1 process), then the critic through its component on 1 node x 2 CPU processes."""
    run = f"file://{tmp_path}/run"
    out = _local("components/data.py:data", "--", "toy", f"{run}/data", "toy.num_clips=20", "toy.num_prompts=4",
                 "toy.num_real=4")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert (tmp_path / "run" / "data" / "_SUCCESS").exists()
    toy = subprocess.run([sys.executable, "-m", "lift", "models", "toy", f"{run}/models"], capture_output=True,
                         text=True, timeout=300)  # the critic's default start, models/critic-toy
    assert toy.returncode == 0, toy.stderr[-3000:]
    out = _local("components/critic.py:critic", "-j", "1x2", "--", f"run={run}", "trainer.max_steps=2",
                 "trainer.num_workers=0", "trainer.checkpoint_every=0", timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    for rank in (0, 1):  # both ranks ran the stage, with the overrides given after `--`
        assert re.search(rf"rank={rank} lift\.stages\.runner: critic: done .*steps=2\b", log), log[-3000:]
    assert (tmp_path / "run" / "critic" / "_SUCCESS").exists()
    marker = json.loads((tmp_path / "run" / "critic" / "_SUCCESS").read_text())
    assert marker["stage"] == "critic"
