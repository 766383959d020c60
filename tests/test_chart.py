"""The Helm chart (charts/) and the plain manifests (manifests/), checked offline with the real tools.

Every values set (the defaults, tests/chart_values/*.yaml and the charts/examples recipes) is rendered once by
the real Helm v4 engine (helm-python-sdk), then:
- linted strictly;
- core objects (and each replica's pod template, as the Pod the operator creates) validated against the
  Kubernetes schemas with kubernetes-validate --strict, at the chart's oldest supported and newest versions;
- PyTorchJobs validated against the training operator's CRD schema (../shared/k8s/) with unknown fields
  rejected, against the rules of its admission webhook, and through the kubeflow-training SDK models;
- each stage's config from the ConfigMap loaded by `lift.config.load` and each command parsed by lift's own CLI
  parser and torchrun's, so the chart never ships a config or command line that lift rejects;
- the stage list, the stages' ordering (init containers waiting for `_SUCCESS` markers), the TorchX components and
  the CLI checked against lift's stage registry (lift/stages/__init__.py) and its own default paths; security
  contexts and credentials checked; invalid values refused;
- every pod template and manifest scanned with checkov (tests/checkov_scan.py holds the accepted findings).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from checkov_scan import (
    CHECKOV_SKIPS,
    TRAINER_RUNTIME_FILE,
    TRAINER_RUNTIME_SKIPS,
    accepted,
    describe,
    pods_from_job,
    run_checkov,
)
from k8s_schemas import trainer_errors, trainjob_pod
from torchx.specs.finder import get_component

from lift import cli, stages
from lift.launch import component

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts"
VALUES_DIR = Path(__file__).resolve().parent / "chart_values"
EXAMPLES = CHART / "examples"
MANIFESTS = ROOT / "manifests"
CRD = ROOT.parent / "shared" / "k8s" / "kubeflow.org_pytorchjobs.yaml"
RELEASE, NAMESPACE = "lift", "lift"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
SECRET_SENTINEL = "sentinel-secret-value-that-must-never-be-rendered"

# Values sets: name -> the values files layered in order, like repeated `helm -f`.
VALUE_SETS: dict[str, list[Path]] = {
    "default": [],
    **{p.stem: [p] for p in sorted(VALUES_DIR.glob("*.yaml"))},
    "example-8gpu": [EXAMPLES / "cogvideox-2b-8gpu.yaml"],
    "example-4x8gpu": [EXAMPLES / "cogvideox-2b-8gpu.yaml", EXAMPLES / "cogvideox-2b-4x8gpu.yaml"],
}
SOURCES = [*VALUE_SETS, "manifests"]  # where rendered objects come from: a values set, or the manifests/ files
# The same values sets rendered as Kubeflow Trainer v2 TrainJobs (jobApi trainjob) on Trainer's torch-distributed
# runtime, and some also on the chart's own per-stage TrainingRuntimes: name -> (values set, values layered on it).
TRAINJOB_SETS: dict[str, tuple[str, dict]] = {
    **{f"{n}+trainjob": (n, {"jobApi": "trainjob"}) for n in VALUE_SETS},
    **{f"{n}+trainjob-runtime": (n, {"jobApi": "trainjob", "trainJob": {"runtime": {"create": True}}})
       for n in ("default", "multinode-gpu", "example-4x8gpu")},
}

# The registry's cluster stages (the toy world's local `base` is left out), which the chart reads from
# charts/files/stages.json: in order, each one's inputs (its config key of the input, folder under RUN whose
# _SUCCESS marks it), and the folder under RUN each seals with its _SUCCESS marker (its `out`).
STAGES = [s.name for s in stages.cluster_stages()]
INPUTS = {s.name: list(s.inputs) for s in stages.cluster_stages()}
PRODUCES = {s.name: s.output for s in stages.cluster_stages()}


def _layer(base: dict, over: dict) -> dict:
    """Helm's coalescing of two values files: maps merge key by key, anything else in `over` wins."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _layer(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def values_of(name: str) -> dict:
    if name in TRAINJOB_SETS:
        base, extra = TRAINJOB_SETS[name]
        return _layer(values_of(base), extra)
    values: dict = {}
    for path in VALUE_SETS[name]:
        values = _layer(values, yaml.safe_load(path.read_text()) or {})
    return values


@dataclass
class Rendered:
    values: dict  # the values set's own values (not merged with the chart's defaults)
    merged: dict  # merged with the chart's defaults, as an install sees them
    objects: list[dict]
    text: str  # every rendered template, NOTES.txt included
    notes: str

    def kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def jobs(self) -> dict[str, dict]:
        """Stage -> its PyTorchJob."""
        return {j["metadata"]["labels"]["app.kubernetes.io/component"]: j for j in self.kind("PyTorchJob")}

    def trainjobs(self) -> dict[str, dict]:
        """Stage -> its TrainJob."""
        return {j["metadata"]["labels"]["app.kubernetes.io/component"]: j for j in self.kind("TrainJob")}

    def stage_pods(self) -> list[tuple[str, dict]]:
        """(stage, pod template) of every pod a stage runs: each PyTorchJob replica's template, and for each
        TrainJob the pod Trainer makes from its runtime, runtime patches and trainer (k8s_schemas.trainjob_pod)."""
        pods = [(stage, t) for stage, job in self.jobs().items() for t in pod_templates(job).values()]
        runtimes = {rt["metadata"]["name"]: rt for rt in self.kind("TrainingRuntime")}
        return pods + [(stage, trainjob_pod(job, runtimes)) for stage, job in self.trainjobs().items()]

    def stage_configs(self) -> dict[str, str]:
        (cm,) = self.kind("ConfigMap")
        return {key.removesuffix(".yaml"): text for key, text in cm["data"].items()}


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


@functools.cache
def render(source: str) -> Rendered:
    """Render a values set once per session (or read manifests/). Credentials in the environment must not leak."""
    if source == "manifests":
        objects = [yaml.safe_load(p.read_text()) for p in sorted(MANIFESTS.glob("*.yaml"))
                   if p.name != "kustomization.yaml"]
        values = yaml.safe_load((ROOT / "scripts" / "manifests-values.yaml").read_text())
        text = "".join(p.read_text() for p in sorted(MANIFESTS.glob("*.yaml")))
        return Rendered(values, chart().merge_values(values), objects, text, "")
    values = values_of(source)
    saved = os.environ.get("AWS_SECRET_ACCESS_KEY")
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_SENTINEL
    try:
        out = chart().render(values=values or None, name=RELEASE, namespace=NAMESPACE, is_install=True)
    finally:
        if saved is None:
            os.environ.pop("AWS_SECRET_ACCESS_KEY")
        else:
            os.environ["AWS_SECRET_ACCESS_KEY"] = saved
    objects = [doc for name, text in sorted(out.items()) if name.endswith(".yaml")
               for doc in yaml.safe_load_all(text) if doc]
    notes = next(text for name, text in out.items() if name.endswith("NOTES.txt"))
    return Rendered(values, chart().merge_values(values or None), objects, "".join(out.values()), notes)


def pod_templates(job: dict) -> dict[str, dict]:
    """Replica type -> pod template of a PyTorchJob."""
    return {rt: spec["template"] for rt, spec in job["spec"]["pytorchReplicaSpecs"].items()}


def all_containers(pod_spec: dict) -> list[dict]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def main_container(pod_spec: dict) -> dict:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == "pytorch"]
    return container


def enabled_stages(r: Rendered) -> list[str]:
    return [s for s in STAGES if r.merged["stages"][s]["enabled"]]


def test_value_sets_cover_the_issue():
    """Defaults plus at least single stage, multi-node GPU, elastic and custom storage."""
    assert {"single-stage", "multinode-gpu", "elastic", "custom-storage"} <= set(VALUE_SETS)
    assert all(p.is_file() for paths in VALUE_SETS.values() for p in paths)


# ---------------------------------------------------------------------------------------------- Helm itself


@pytest.mark.parametrize("name", [*VALUE_SETS, "elastic+trainjob", "multinode-gpu+trainjob-runtime"])
def test_lint_strict(name):
    report = helm.lint(CHART, values_of(name) or None, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_chart_metadata_and_default_image():
    meta = chart().metadata
    assert (meta["apiVersion"], meta["name"]) == ("v2", "lift")
    (job, *_) = render("default").kind("PyTorchJob")
    image = main_container(pod_templates(job)["Master"]["spec"])["image"]
    assert image == f"ghcr.io/lift-k8s/lift:{meta['appVersion']}"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_one_pytorchjob_per_enabled_stage(name):
    r = render(name)
    jobs = r.jobs()
    assert sorted(jobs) == sorted(enabled_stages(r))
    assert len(r.kind("ConfigMap")) == 1
    assert sorted(r.stage_configs()) == sorted(enabled_stages(r))
    for stage, job in jobs.items():
        name_ = job["metadata"]["name"]
        assert name_.endswith(f"-{stage}") and len(name_) <= 52, name_
        assert job["metadata"]["namespace"] == NAMESPACE
        labels = job["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/name"] == "lift"
        for template in pod_templates(job).values():
            assert template["metadata"]["labels"]["app.kubernetes.io/component"] == stage


def test_fullname_truncation_keeps_job_names_valid():
    r = render("custom-storage")
    assert len(r.values["fullnameOverride"]) > 52
    for job in r.kind("PyTorchJob"):
        assert len(job["metadata"]["name"]) <= 52
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])


# ----------------------------------------------------------------------------------- Kubernetes validation


@pytest.mark.parametrize("source", SOURCES)
def test_core_objects_and_pods_validate_against_kubernetes_schemas(source):
    """Every non-CRD object, and every replica's pod template as the Pod the operator creates, strictly."""
    r = render(source)
    objects = [o for o in r.objects if o["kind"] != "PyTorchJob"]
    assert {o["kind"] for o in objects} >= {"ConfigMap", "NetworkPolicy"}
    for job in r.kind("PyTorchJob"):
        objects += pods_from_job(job)
    for version in KUBE_VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: "
                            f"{e.message} at {'/'.join(map(str, e.path))}")


def _strict(schema):
    """CRD schemas let unknown fields through (the API server prunes them): forbid them wherever an object
    schema lists its properties, unless it declares additionalProperties or preserves unknown fields itself."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def webhook_errors(job: dict) -> list[str]:
    """The training operator's admission webhook rules for a PyTorchJob (kubeflow/training-operator release-1.9)."""
    errors = []
    name = job["metadata"]["name"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"name {name!r} is not a DNS-1035 label")
    specs = job["spec"].get("pytorchReplicaSpecs") or {}
    for replica, spec in specs.items():
        if replica not in ("Master", "Worker"):
            errors.append(f"replica type {replica!r} is neither Master nor Worker")
        containers = spec["template"]["spec"].get("containers") or []
        if not containers:
            errors.append(f"{replica}: no containers")
        if not any(c.get("name") == "pytorch" for c in containers):
            errors.append(f"{replica}: no container named 'pytorch'")
        errors += [f"{replica}: container {c.get('name')!r} has no image" for c in containers if not c.get("image")]
    if "Master" in specs and specs["Master"].get("replicas", 1) != 1:
        errors.append("Master must have exactly 1 replica")
    elastic = job["spec"].get("elasticPolicy")
    if elastic is not None and "Worker" not in specs:
        errors.append("elasticPolicy requires a Worker replica spec")
    if elastic and elastic.get("nProcPerNode") is not None and job["spec"].get("nprocPerNode") is not None:
        errors.append("nprocPerNode and elasticPolicy.nProcPerNode must not both be set")
    return errors


@pytest.mark.parametrize("source", SOURCES)
def test_pytorchjobs_validate_against_crd_and_webhook(source):
    if not CRD.is_file():
        pytest.skip(f"PyTorchJob CRD schema not found at {CRD} (it lives in ../shared/k8s/ beside the project)")
    jobs = render(source).kind("PyTorchJob")
    assert jobs
    for job in jobs:
        problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator().iter_errors(job)]
        problems += webhook_errors(job)
        assert not problems, f"{job['metadata']['name']}:\n" + "\n".join(problems)


def test_strict_crd_schema_rejects_a_misspelt_field():
    if not CRD.is_file():
        pytest.skip(f"PyTorchJob CRD schema not found at {CRD} (it lives in ../shared/k8s/ beside the project)")
    job = copy.deepcopy(render("default").jobs()["critic"])
    job["spec"]["runPolicy"]["cleanPodPolicyy"] = "All"
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    errors = [e.message for e in crd_validator().iter_errors(job)]
    assert any("cleanPodPolicyy" in m for m in errors) and any("imagePullPolcy" in m for m in errors), errors
    job = copy.deepcopy(render("elastic").jobs()["align"])
    job["spec"]["pytorchReplicaSpecs"].pop("Worker")
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    assert len(webhook_errors(job)) == 2


@pytest.mark.parametrize("source", SOURCES)
def test_pytorchjobs_round_trip_through_kubeflow_sdk(source):
    """The SDK's models take every field (a field they do not know would be dropped by the round trip)."""
    from kubeflow.training.api_client import ApiClient
    from kubeflow.training.models import KubeflowOrgV1PyTorchJob

    client = ApiClient()
    for job in render(source).kind("PyTorchJob"):
        model = client._ApiClient__deserialize(job, "KubeflowOrgV1PyTorchJob")
        assert isinstance(model, KubeflowOrgV1PyTorchJob)
        assert model.spec.pytorch_replica_specs["Master"].replicas == 1
        assert client.sanitize_for_serialization(model) == job


# -------------------------------------------------------------------------- lift: configs and command lines


@pytest.mark.parametrize("source", SOURCES)
def test_stage_configs_load_and_commands_parse_with_lift(source, tmp_path):
    """Each stage's config file and command line, read the way the container reads them."""
    r = render(source)
    configs = r.stage_configs()
    parser = cli.build_parser()
    for stage, job in r.jobs().items():
        spec = pod_templates(job)["Master"]["spec"]
        command = main_container(spec)["command"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
        assert volume["configMap"]["items"] == [{"key": f"{stage}.yaml", "path": f"{stage}.yaml"}]
        if stage == "data":
            assert command[:2] == ["lift", "data"]
            args = parser.parse_args(command[1:])
        else:
            assert command[:4] == ["torchrun", "--module", "lift", stage], command
            args = parser.parse_args(command[3:])
        assert args.config == f"/etc/lift/{stage}.yaml"
        path = tmp_path / f"{stage}.yaml"
        path.write_text(configs[stage])
        overrides = list(args.overrides)
        if stage == "data":  # as lift.cli does for `lift data toy|import`
            overrides += [f"out={args.out}", f"source={args.action}"]
            if args.action == "import":
                overrides += [f"release.json={args.release}", f"release.videos={args.videos}"]
        cfg = stages.load(stage, str(path), overrides)
        assert cfg.run == r.merged["run"]
        assert args.force == bool(r.merged["stages"][stage].get("force"))


def test_torchrun_takes_the_operator_environment(monkeypatch):
    """The container passes no launcher flags: torchrun reads PET_* set by the operator, then runs `-m lift`."""
    from torch.distributed.run import get_args_parser

    env = {"PET_NNODES": "4", "PET_NODE_RANK": "2", "PET_NPROC_PER_NODE": "8",
           "PET_MASTER_ADDR": "lift-critic-master-0", "PET_MASTER_PORT": "23456"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    command = main_container(pod_templates(render("multinode-gpu").jobs()["critic"])["Worker"]["spec"])["command"]
    args = get_args_parser().parse_args(command[1:])
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("4", 2, "8")
    assert (args.master_addr, args.master_port) == ("lift-critic-master-0", 23456)
    assert args.module and args.training_script == "lift"
    assert args.training_script_args == ["critic", "--config", "/etc/lift/critic.yaml"]
    assert importlib.util.find_spec("lift.__main__") is not None


def test_data_stage_runs_import_with_release_urls():
    command = main_container(pod_templates(render("custom-storage").jobs()["data"])["Master"]["spec"])["command"]
    assert command == ["lift", "data", "import", "s3://minio-bucket/LiFT-HRA/LiFT-HRA-data.json",
                       "s3://minio-bucket/LiFT-HRA/videos", "s3://minio-bucket/lift/runs/minio/data",
                       "--config", "/etc/lift/data.yaml"]


# ------------------------------------------------------------------------------------- process layout


def test_process_layout_and_resources():
    jobs = render("multinode-gpu").jobs()
    critic = jobs["critic"]["spec"]
    replicas = critic["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 3)
    assert critic["nprocPerNode"] == "8" and "elasticPolicy" not in critic
    assert critic["runPolicy"] == {"cleanPodPolicy": "All", "backoffLimit": 5, "ttlSecondsAfterFinished": 86400,
                                   "activeDeadlineSeconds": 172800, "suspend": True,
                                   "schedulingPolicy": {"minAvailable": 4, "queue": "gpu",
                                                        "priorityClass": "training-high"}}
    for template in pod_templates(jobs["critic"]).values():
        resources = main_container(template["spec"])["resources"]
        assert resources["requests"] == resources["limits"]
        assert resources["limits"]["nvidia.com/gpu"] == "8"
        spec = template["spec"]
        assert spec["priorityClassName"] == "training-high"
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
        assert "podAntiAffinity" in spec["affinity"]
        assert [s["name"] for s in spec["imagePullSecrets"]] == ["regcred", "regcred-mirror"]
        assert main_container(spec)["image"].startswith("registry.example.com:5000/ml/lift@sha256:")
    assert jobs["generate"]["spec"]["nprocPerNode"] == "gpu"
    data = jobs["data"]["spec"]
    assert list(data["pytorchReplicaSpecs"]) == ["Master"] and data["nprocPerNode"] == "1"
    data_pod = data["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "nvidia.com/gpu" not in main_container(data_pod)["resources"]["limits"]
    assert not {"nodeSelector", "tolerations", "affinity"} & set(data_pod)
    assert "schedulingPolicy" not in data["runPolicy"]
    for stage, job in render("default").jobs().items():
        assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"] and job["spec"]["nprocPerNode"] == "1"


def test_elastic_policy():
    jobs = render("elastic").jobs()
    align = jobs["align"]["spec"]
    assert align["elasticPolicy"] == {"minReplicas": 2, "maxReplicas": 4, "maxRestarts": 3, "rdzvBackend": "c10d",
                                      "rdzvPort": 29500, "rdzvHost": "lift-align-master-0"}
    assert align["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2 and align["nprocPerNode"] == "4"
    critic = jobs["critic"]["spec"]
    assert critic["elasticPolicy"]["minReplicas"] == critic["elasticPolicy"]["maxReplicas"] == 2
    assert "elasticPolicy" not in jobs["score"]["spec"]


# ----------------------------------------------------------------------------------------------- ordering


def wait_urls(job: dict) -> list[str] | None:
    """URLs the stage's init container waits for, or None without one (checked identical in every replica)."""
    found = set()
    for template in pod_templates(job).values():
        inits = template["spec"].get("initContainers", [])
        if not inits:
            found.add(None)
            continue
        (init,) = inits
        command = init["command"]
        assert command[:2] == ["lift", "wait"] and init["name"] == "wait-inputs"
        found.add(tuple(command[2:command.index("--timeout")]))
    assert len(found) == 1, found
    (urls,) = found
    return list(urls) if urls is not None else None


def test_stage_ordering_follows_the_registry():
    """One install runs the pipeline in order: each stage waits for exactly its inputs' markers."""
    r = render("default")
    run = r.merged["run"]
    for stage, job in r.jobs().items():
        expected = [f"{run}/{folder}" for _, folder in INPUTS[stage]]
        assert wait_urls(job) == (expected or None), stage


def test_registry_inputs_match_lift_defaults():
    """The registry's inputs, which the chart waits for, agree with the stages' configs: each stage's `out`, each
    consumer's defaults, and every producer before its consumers."""
    run = "s3://b/r"
    for stage, folder in PRODUCES.items():
        assert stages.load(stage, None, [f"run={run}"]).out == f"{run}/{folder}"
    producer_of = {folder: stage for stage, folder in PRODUCES.items()}
    for stage, inputs in INPUTS.items():
        cfg = stages.load(stage, None, [f"run={run}"])
        for key, folder in inputs:
            value = functools.reduce(lambda node, part: node[part], key.split("."), cfg)
            assert value == f"{run}/{folder}" or value.startswith(f"{run}/{folder}/"), (stage, key, value)
            assert STAGES.index(producer_of[folder]) < STAGES.index(stage)


def test_chart_components_and_cli_follow_the_registry():
    """Everything that lists stages agrees with lift/stages/__init__.py: charts/files/stages.json (as
    scripts/render-manifests.py writes it), the chart's rendered stage list, one TorchX component per cluster stage
    and one `lift STAGE` subcommand per stage."""
    registry = stages.cluster_stages()
    written = (CHART / "files" / "stages.json").read_text()
    assert written == _render_manifests_module().stages_json(), \
        "charts/files/stages.json is not the registry's; run `python scripts/render-manifests.py`"
    assert [(e["name"], e["output"], [tuple(i) for i in e["inputs"]]) for e in json.loads(written)] == \
        [(s.name, s.output, list(s.inputs)) for s in registry]
    # Every stage is enabled by default: one PyTorchJob and one config file each, in pipeline order.
    r = render("default")
    assert list(r.jobs()) == list(r.stage_configs()) == [s.name for s in registry]
    assert sorted(p.stem for p in (ROOT / "components").glob("*.py")) == sorted(s.section for s in registry)
    for s in registry:
        app = get_component(f"{ROOT}/components/{s.section}.py:{s.section}").fn()
        argv = component.torchrun_argv(app.roles[0])
        assert app.name == f"lift-{s.name}" and argv[argv.index("-m") + 1:] == ["lift", s.name], s.name
    parser = cli.build_parser()
    (commands,) = [a for a in parser._subparsers._group_actions if a.dest == "command"]
    # `lift data` has toy|import|export actions; every other stage is a `lift STAGE [key=value ...]` subcommand
    stage_commands = {name: p.description for name, p in commands.choices.items()
                      if p.epilog and p.epilog.startswith("Every key of `lift config show")}
    assert stage_commands == {s.name: s.help for s in stages.STAGES.values() if s.name != "data"}
    assert "data" in commands.choices


def test_inputs_pointed_elsewhere_are_not_waited_for():
    r = render("single-stage")
    assert list(r.jobs()) == ["align"]
    run = r.merged["run"]
    # `real` is set in the stage's config, so data is not waited for; waitFor adds its own URL.
    assert wait_urls(r.jobs()["align"]) == [f"{run}/rollouts", f"{run}/scores", "s3://lift-test/real-captions"]
    # Models pointed at a volume do not change what is waited for: model keys are not inputs with markers.
    storage = render("custom-storage")
    for stage, job in storage.jobs().items():
        expected = [f"{storage.merged['run']}/{folder}" for _, folder in INPUTS[stage]]
        assert wait_urls(job) == (expected or None), stage


# ---------------------------------------------------------------------------------- security and secrets


@pytest.mark.parametrize("source", [*SOURCES, *TRAINJOB_SETS])
def test_hardened_pods(source):
    """The same hardening whichever API runs the stage. A TrainJob on Trainer's torch-distributed runtime cannot
    set automountServiceAccountToken (Trainer v2.3.0's runtime patches do not take it): there the chart's
    ServiceAccount mounts no token."""
    r = render(source)
    home = r.merged["home"].rstrip("/")
    pods = r.stage_pods()
    assert len({stage for stage, _ in pods}) == len(enabled_stages(r))
    for _, template in pods:
        spec = template["spec"]
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert min(ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) > 0
        if "automountServiceAccountToken" in spec or r.merged["serviceAccount"]["create"]:
            automount = spec.get("automountServiceAccountToken", r.merged["serviceAccount"]["automountToken"])
            assert automount is False
        assert spec["serviceAccountName"] not in ("", "default")
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert not any("hostPath" in v for v in volumes.values())
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and volumes["dshm"]["emptyDir"]["sizeLimit"]
        assert volumes["tmp"]["emptyDir"]["sizeLimit"] and volumes["cache"]["emptyDir"]["sizeLimit"]
        for container in all_containers(spec):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp" and mounts["/dev/shm"] == "dshm"
            assert mounts[f"{home}/.cache"] == "cache" and mounts["/etc/lift"] == "config"
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["HOME"] == home
            for var in ("HF_HOME", "LIFT_CACHE", "XDG_CACHE_HOME", "TORCH_HOME", "TRITON_CACHE_DIR"):
                assert env[var].startswith(f"{home}/.cache"), var


@pytest.mark.parametrize("source", [*SOURCES, *TRAINJOB_SETS])
def test_credentials_only_by_secret_reference(source):
    """Credentials reach a pod only from the named Secret: as files it mounts read-only (the default) or through
    secretKeyRef (storage.secret.mount env); a credential variable holds a path into the mounted Secret at most."""
    r = render(source)
    assert SECRET_SENTINEL not in r.text
    assert not r.kind("Secret")
    secretish = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.I)
    for _, template in r.stage_pods():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for container in all_containers(template["spec"]):
            for env in container["env"]:
                if secretish.search(env["name"]) and "value" in env:
                    assert env["value"].startswith("/var/run/secrets/lift/"), env
                    assert volumes["credentials"]["secret"]["secretName"] == r.merged["storage"]["secret"]["name"]
                elif secretish.search(env["name"]):
                    assert "secretKeyRef" in env["valueFrom"], env


def _env_form() -> Rendered:
    """custom-storage with the credentials as environment variables (storage.secret.mount env), not scanned by
    checkov: the form CKV_K8S_35 flags, kept as an option."""
    values = _layer(values_of("custom-storage"), {"storage": {"secret": {
        "mount": "env", "accessKeyIdKey": "rootUser", "secretAccessKeyKey": "rootPassword",
        "sessionTokenKey": "sessionToken"}}})
    out = chart().render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [doc for name, text in sorted(out.items()) if name.endswith(".yaml") for doc in yaml.safe_load_all(text)
               if doc]
    return Rendered(values, chart().merge_values(values), objects, "".join(out.values()), "")


def test_credentials_as_files_by_default():
    """A named Secret is mounted read-only and the SDKs read files: a credentials file, or a web-identity token."""
    example = render("example-8gpu")
    for stage, template in example.stage_pods():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["credentials"]["secret"] == {"secretName": "lift-s3", "defaultMode": 0o440, "optional": False,
                                                    "items": [{"key": "credentials", "path": "credentials"}]}
        for container in all_containers(template["spec"]):
            env = {e["name"]: e for e in container["env"]}
            assert env["AWS_SHARED_CREDENTIALS_FILE"] == {"name": "AWS_SHARED_CREDENTIALS_FILE",
                                                          "value": "/var/run/secrets/lift/credentials"}
            assert not any("valueFrom" in e for e in env.values()), stage
            assert {"name": "credentials", "mountPath": "/var/run/secrets/lift", "readOnly": True} \
                in container["volumeMounts"]
    for source in ("custom-storage", "custom-storage+trainjob"):
        for _, template in render(source).stage_pods():
            (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "credentials"]
            assert volume["secret"]["items"] == [{"key": "web-identity-token", "path": "token"}]
            assert volume["secret"]["optional"] is True
            env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
            assert env["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/lift-minio"
            assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == "/var/run/secrets/lift/token"
            assert "AWS_SHARED_CREDENTIALS_FILE" not in env and "AWS_ACCESS_KEY_ID" not in env


def test_storage_endpoint_and_secret_references():
    r = _env_form()
    for job in r.kind("PyTorchJob"):
        for template in pod_templates(job).values():
            assert "credentials" not in {v["name"] for v in template["spec"]["volumes"]}
            for container in all_containers(template["spec"]):
                env = {e["name"]: e for e in container["env"]}
                assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.minio.svc.cluster.local:9000"
                assert env["AWS_REGION"]["value"] == "eu-west-1"
                refs = {k: env[k]["valueFrom"]["secretKeyRef"]
                        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
                assert refs == {
                    "AWS_ACCESS_KEY_ID": {"name": "minio-credentials", "key": "rootUser", "optional": True},
                    "AWS_SECRET_ACCESS_KEY": {"name": "minio-credentials", "key": "rootPassword", "optional": True},
                    "AWS_SESSION_TOKEN": {"name": "minio-credentials", "key": "sessionToken", "optional": True},
                }
                assert env["AWS_S3_ADDRESSING_STYLE"]["value"] == "path"
                assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
            assert template["spec"]["serviceAccountName"] == "ml-pipelines"
    assert not r.kind("ServiceAccount")
    # Workload identity: no credentials at all, the ServiceAccount carries the annotation.
    gpu = render("multinode-gpu")
    (sa,) = gpu.kind("ServiceAccount")
    gsa = "lift@my-project.iam.gserviceaccount.com"
    assert sa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": gsa}
    assert sa["automountServiceAccountToken"] is False
    assert "AWS_ACCESS_KEY_ID" not in gpu.text


def test_rbac_is_read_only_and_bound_to_the_service_account():
    r = render("multinode-gpu")
    (role,) = r.kind("Role")
    (binding,) = r.kind("RoleBinding")
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in role["rules"])
    assert not any("*" in rule["resources"] + rule["verbs"] + rule["apiGroups"] for rule in role["rules"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lift", "namespace": NAMESPACE}]
    assert not render("default").kind("Role")


def test_network_policy_admits_only_the_release():
    (policy,) = render("default").kind("NetworkPolicy")
    selector = {"app.kubernetes.io/name": "lift", "app.kubernetes.io/instance": RELEASE}
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": selector}}]}]


def test_checkov_finds_nothing_beyond_accepted_skips(tmp_path):
    """Every pod of every values set for both job APIs (as Pods, beside the set's NetworkPolicy) and manifests/;
    a TrainJob's pods as Trainer makes them from its runtime, patches and trainer (k8s_schemas.trainjob_pod); those
    on Trainer's torch-distributed runtime may also have TRAINER_RUNTIME_SKIPS' findings."""
    for name in [*VALUE_SETS, *TRAINJOB_SETS]:
        r = render(name)
        objects = [*r.kind("NetworkPolicy"), *r.kind("ServiceAccount"), *r.kind("Role"), *r.kind("RoleBinding")]
        for job in r.kind("PyTorchJob"):
            objects += pods_from_job(job)
        for stage, pod in r.stage_pods() if r.kind("TrainJob") else []:
            objects.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": f"lift-{stage}-node-0-0", "namespace": NAMESPACE, **pod["metadata"]}, "spec": pod["spec"]})
        on_trainer_runtime = r.kind("TrainJob") and not r.kind("TrainingRuntime")
        path = tmp_path / (f"{name}{TRAINER_RUNTIME_FILE}" if on_trainer_runtime else f"{name}.yaml")
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    failed = run_checkov([tmp_path, MANIFESTS])
    unexpected = [f for f in failed if not accepted(f)]
    assert not unexpected, "checkov findings:\n" + describe(unexpected)
    stale = set(CHECKOV_SKIPS) - {f["check_id"] for f in failed}
    on_runtime = {f["check_id"] for f in failed if f["file_path"].endswith(TRAINER_RUNTIME_FILE)}
    stale |= set(TRAINER_RUNTIME_SKIPS) - on_runtime
    assert not stale, f"accepted checkov findings that no longer occur; remove them from the skip lists: {stale}"


# ---------------------------------------------------------------------------------------- invalid values

SCHEMA_REJECTS = [
    ({"defaults": {"nodes": -1}}, "/defaults/nodes", "minimum"),
    ({"stages": {"critic": {"nodez": 2}}}, "/stages/critic", "'nodez' not allowed"),
    ({"stages": {"finetune": {"enabled": True, "config": {}}}}, "/stages", "'finetune' not allowed"),
    ({"defaults": {"runPolicy": {"cleanPodPolicy": "Sometimes"}}}, "/defaults/runPolicy/cleanPodPolicy", "one of"),
    ({"stages": {"align": {"restartPolicy": "Maybe"}}}, "/stages/align/restartPolicy", "one of"),
    ({"stages": {"data": {"nodes": 2}}}, "/stages/data", "'nodes' not allowed"),
    ({"stages": {"score": {"resources": {"memory": "lots"}}}}, "/stages/score/resources/memory", "pattern"),
    ({"stages": {"score": {"resources": {"gpus": -1}}}}, "/stages/score/resources/gpus", "minimum"),
    ({"stages": {"score": {"nprocPerNode": "many"}}}, "/stages/score/nprocPerNode", "oneOf"),
    ({"image": {"digest": "sha256:abc"}}, "/image/digest", "pattern"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "one of"),
    ({"run": ""}, "/run", "minLength"),
    ({"storage": {"endpoint": "minio:9000"}}, "/storage/endpoint", "pattern"),
    ({"podSecurityContext": {"runAsUsr": 0}}, "/podSecurityContext", "'runAsUsr' not allowed"),
    ({"defaults": {"elastic": {"rdzvBackend": "zookeeper"}}}, "/defaults/elastic/rdzvBackend", "one of"),
]


@pytest.mark.parametrize("values,where,what", SCHEMA_REJECTS, ids=[w for _, w, _ in SCHEMA_REJECTS])
def test_schema_refuses_bad_values(values, where, what):
    with pytest.raises(helm.HelmValuesError) as e:
        chart().render(values=values, name=RELEASE, namespace=NAMESPACE)
    message = str(e.value)
    assert f"at '{where}'" in message and what in message, message


CROSS_FIELD_REJECTS = [
    ({"stages": {"critic": {"elastic": {"enabled": True}}}}, None,
     "stages.critic.elastic.enabled: an elastic job needs nodes >= 2"),
    ({"stages": {"align": {"nodes": 2, "elastic": {"enabled": True, "minNodes": 3}}}}, None,
     "stages.align.elastic: need minNodes <= nodes <= maxNodes, got 3 <= 2 <= 2"),
    ({"stages": {"data": {"config": {"source": "import"}}}}, None,
     "stages.data.config.release.json and .videos: both are required"),
    ({"stages": {s: {"enabled": False} for s in STAGES}}, None, "no stage is enabled"),
    ({"serviceAccount": {"create": False}}, None, "serviceAccount.name: required when serviceAccount.create is false"),
    ({}, "1lift", "is not a DNS-1035 label"),
    ({"stages": {"align": {"nprocPerNode": 16, "resources": {"gpus": 8}}}}, None,
     "stages.align.nprocPerNode: 16 processes per node but only 8 GPUs"),
]


@pytest.mark.parametrize("values,release,message", CROSS_FIELD_REJECTS, ids=[m[:40] for *_, m in CROSS_FIELD_REJECTS])
def test_cross_field_checks_refuse_bad_values(values, release, message):
    with pytest.raises(helm.HelmRenderError) as e:
        chart().render(values=values or None, name=release or RELEASE, namespace=NAMESPACE)
    assert "lift chart: invalid values" in str(e.value) and message in str(e.value), str(e.value)


# ------------------------------------------------------------------------------ values, schema and notes


def _documented(lines: list[str], line: int) -> bool:
    """Whether the key on `line` (0-based) sits under a `# --` comment block."""
    i = line - 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if lines[i].lstrip().startswith("# --"):
            return True
        i -= 1
    return False


def _check_documented(node, lines, path, missing):
    for key, value in node.value:
        here = f"{path}.{key.value}".lstrip(".")
        if _documented(lines, key.start_mark.line):
            continue
        if isinstance(value, yaml.MappingNode) and value.value:
            _check_documented(value, lines, here, missing)  # a group: its keys carry the comments
        else:
            missing.append(here)


def test_every_value_is_documented():
    text = (CHART / "values.yaml").read_text()
    missing: list[str] = []
    _check_documented(yaml.compose(text), text.splitlines(), "", missing)
    assert not missing, f"values without a `# --` comment: {missing}"


def test_schema_matches_values_and_lift():

    schema = chart().schema
    values = yaml.safe_load((CHART / "values.yaml").read_text())  # in file order (the SDK's dict is sorted)
    chart().validate_schema(values)
    # values.yaml documents each stage in prose, and the schema gives data its own definition: both are written
    # by hand, and must name exactly the registry's cluster stages, in order.
    assert list(schema["properties"]["stages"]["properties"]) == STAGES == list(values["stages"])
    assert schema["properties"]["stages"]["required"] == STAGES
    settings = schema["definitions"]["settings"]["properties"]
    assert set(settings) == set(values["defaults"])
    assert set(schema["properties"]) == set(values)


def test_notes_tell_how_to_follow_and_warn():
    notes = render("default").notes
    assert f"kubectl get pytorchjobs -n {NAMESPACE} -l app.kubernetes.io/instance={RELEASE}" in notes
    assert f"kubectl logs -n {NAMESPACE} -l app.kubernetes.io/instance={RELEASE}" in notes
    single = render("single-stage").notes
    assert "stage align waits for s3://lift-test/runs/r1/rollouts/_SUCCESS, which stage generate writes" in single
    storage = render("custom-storage").notes
    assert "plain http" in storage and "storage.secret.optional=true" in storage
    gpu = render("multinode-gpu").notes
    assert "cleanPodPolicy=All" in gpu and "pullPolicy other than Always" not in gpu


# ------------------------------------------------------------------------------------------- manifests


def _render_manifests_module():
    spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "scripts" / "render-manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifests_match_the_chart():
    module = _render_manifests_module()
    problems = module.diff(module.render(), MANIFESTS)
    assert not problems, "manifests/ drifted from the chart; run `python scripts/render-manifests.py`:\n" + \
        "\n".join(problems)


def test_manifests_kustomization_lists_every_object():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert kustomization["resources"] == files and kustomization["namespace"] == NAMESPACE
    kinds = {o["kind"] for o in render("manifests").objects}
    assert kinds == {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "PyTorchJob"}
    assert sorted(render("manifests").jobs()) == sorted(STAGES)
    assert "helm.sh/chart" not in render("manifests").text


# ------------------------------------------------------------------------------------ Kubeflow Trainer v2


@pytest.mark.parametrize("source", TRAINJOB_SETS)
def test_trainjobs_validate_against_trainer_crds(source):
    """Every TrainJob (and the chart's own TrainingRuntimes) against Trainer v2.3.0's CRD schemas with unknown
    fields rejected and its CEL rules; the pod Trainer makes of each against the core schema, strictly."""
    from lift.launch import trainjob

    r = render(source)
    jobs = r.trainjobs()
    assert sorted(jobs) == sorted(enabled_stages(r)) and not r.kind("PyTorchJob")
    own = r.merged["trainJob"]["runtime"]["create"]
    assert len(r.kind("TrainingRuntime")) == (len(jobs) if own else 0)
    for obj in [*jobs.values(), *r.kind("TrainingRuntime")]:
        problems = trainer_errors(obj) + (trainjob.admission_errors(obj) if obj["kind"] == "TrainJob" else [])
        assert not problems, f"{obj['kind']}/{obj['metadata']['name']}:\n" + "\n".join(problems)
    for stage, pod in r.stage_pods():
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"lift-{stage}-node-0-0"},
                                      "spec": pod["spec"]}, KUBE_VERSIONS[-1], strict=True)


def test_strict_trainer_crd_rejects_a_misspelt_field():
    job = copy.deepcopy(render("default+trainjob").trainjobs()["critic"])
    job["spec"]["trainer"]["numNode"] = 2
    job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"][
        "spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    errors = trainer_errors(job)
    assert any("numNode" in e for e in errors) and any("volumeMount" in e for e in errors), errors
    runtime = copy.deepcopy(render("default+trainjob-runtime").kind("TrainingRuntime")[0])
    runtime["spec"]["mlPolicy"]["torchh"] = {}
    assert any("torchh" in e for e in trainer_errors(runtime))


@pytest.mark.parametrize("name", VALUE_SETS)
def test_trainjob_runs_the_same_stage_as_the_pytorchjob(name):
    """One stage definition, two renderers: the TrainJob's node runs the PyTorchJob's image, command, env,
    resources, volumes and security contexts, on as many nodes, and waits for the same inputs."""
    pytorch, trainer = render(name), render(f"{name}+trainjob")
    trainer_pods = dict(trainer.stage_pods())
    for stage, job in pytorch.jobs().items():
        master = pod_templates(job)["Master"]["spec"]
        theirs = trainer_pods[stage]["spec"]
        ours, node = main_container(master), theirs["containers"][0]
        assert (node["name"], node["image"]) == ("node", ours["image"])
        for key in ("env", "resources", "securityContext", "volumeMounts"):
            assert node[key] == ours[key], (stage, key)
        for key in ("securityContext", "serviceAccountName", "volumes", "nodeSelector", "tolerations", "affinity"):
            assert theirs.get(key) == master.get(key), (stage, key)
        assert trainer.trainjobs()[stage]["spec"]["trainer"]["numNodes"] == \
            sum(spec["replicas"] for spec in job["spec"]["pytorchReplicaSpecs"].values())
        command = node["command"]
        if command[0] == "bash":  # the wait for the inputs, then exec of the stage's own command
            assert command[1] == "-c" and command[2].endswith(' && exec "$0" "$@"')
            waited = re.findall(r"'([^']*)'", command[2].split(" --timeout ")[0])
            assert waited == wait_urls(job), stage
            command = command[3:]
        else:
            assert wait_urls(job) is None, stage
        if job["spec"].get("elasticPolicy"):
            assert command[1:3] == ["--nnodes", f"{job['spec']['elasticPolicy']['minReplicas']}:"
                                                f"{job['spec']['elasticPolicy']['maxReplicas']}"]
            command = [command[0], *command[command.index("--max-restarts") + 2:]]
        assert command == ours["command"], stage


def test_trainjobs_on_the_charts_own_runtime_keep_the_whole_pod():
    r = render("multinode-gpu+trainjob-runtime")
    pytorch = render("multinode-gpu").jobs()
    for stage, job in r.trainjobs().items():
        assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                             "name": job["metadata"]["name"]}
        assert "runtimePatches" not in job["spec"]
        (runtime,) = [rt for rt in r.kind("TrainingRuntime") if rt["metadata"]["name"] == job["metadata"]["name"]]
        (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
        pod = node["template"]["spec"]["template"]["spec"]
        master = pod_templates(pytorch[stage])["Master"]["spec"]
        assert pod.get("initContainers") == master.get("initContainers")
        assert pod["automountServiceAccountToken"] is False and pod["priorityClassName"] == "training-high"
        # restartPolicy ExitCode has no Job equivalent: Never, with the job's backoffLimit
        assert pod["restartPolicy"] == "Never" and node["template"]["spec"]["backoffLimit"] == 5
        assert job["spec"]["trainer"]["command"] == main_container(master)["command"]


@pytest.mark.parametrize("source", ["multinode-gpu", "multinode-gpu+trainjob", "multinode-gpu+trainjob-runtime"])
def test_kueue_queue_and_priority_per_stage(source):
    """`queue` labels every job for its LocalQueue and creates it suspended, for both APIs; a stage's
    workloadPriorityClass labels its own job; the pods carry neither (Kueue's pod integration would queue them)."""
    r = render(source)
    jobs = r.trainjobs() or r.jobs()
    for stage, job in jobs.items():
        labels = job["metadata"]["labels"]
        assert labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        assert labels.get("kueue.x-k8s.io/priority-class") == ("training-critical" if stage == "critic" else None)
        suspended = job["spec"]["suspend"] if job["kind"] == "TrainJob" else job["spec"]["runPolicy"]["suspend"]
        assert suspended is True
    for _, pod in r.stage_pods():
        assert not any(k.startswith("kueue.x-k8s.io/") for k in pod["metadata"]["labels"])
    for job in render("default+trainjob").trainjobs().values():
        assert "suspend" not in job["spec"] and "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert f"kubectl get workloads -n {NAMESPACE}" in r.notes
    assert "kubectl get workloads" not in render("default").notes


def test_notes_follow_the_job_api():
    assert f"kubectl get trainjobs -n {NAMESPACE} -l app.kubernetes.io/instance={RELEASE}" in \
        render("default+trainjob").notes
    assert "kubectl get pytorchjobs" not in render("default+trainjob").notes
