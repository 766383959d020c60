"""Offline checks of rendered Kubernetes objects, shared by the tests of `lift submit`, the TorchX dry-runs and the
chart: the PyTorchJob CRD schema of ../shared/k8s/ made strict, the operator's webhook rules, and core objects
against kubernetes-validate's bundled schemas."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import yaml

from lift.launch import pytorchjob

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT.parent / "shared" / "k8s" / "kubeflow.org_pytorchjobs.yaml"
SKIP_CRD = f"the PyTorchJob CRD schema is not at {CRD} (it lives beside the project, not in it; see its README)"


def _strict(schema):
    """Reject unknown fields: additionalProperties false on every object schema that lists properties but does not
    say (the API server would silently prune a misspelt field; the test should fail instead)."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


@functools.lru_cache(maxsize=1)
def crd_validator():
    import jsonschema

    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def crd_errors(job: dict) -> list[str]:
    """Messages of every violation of the strict CRD schema (skips the test when the CRD file is absent)."""
    if not CRD.exists():
        pytest.skip(SKIP_CRD)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in crd_validator().iter_errors(job)]


def assert_valid_pytorchjob(job: dict) -> None:
    """The webhook rules + the SDK's models; the strict CRD schema too where the CRD is present (tests that must
    report its absence call `crd_errors`, which skips with the reason)."""
    from kubeflow.training import ApiClient

    assert pytorchjob.webhook_errors(job) == []

    class _Response:  # what the SDK's deserializer reads from an HTTP response
        data = json.dumps(job)

    model = ApiClient().deserialize(_Response(), "KubeflowOrgV1PyTorchJob")
    assert ApiClient().sanitize_for_serialization(model) == job, "the SDK's models do not round-trip the job"
    if CRD.exists():
        assert crd_errors(job) == []


def latest_kubernetes_schema() -> str:
    """The newest Kubernetes version kubernetes-validate carries offline."""
    import kubernetes_validate

    return kubernetes_validate.latest_version()


def assert_valid_pod(template: dict, name: str = "pod") -> None:
    """A pod template, as a Pod, against the core schemas of the newest bundled Kubernetes version, strictly."""
    import kubernetes_validate

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **(template.get("metadata") or {})},
           "spec": template["spec"]}
    kubernetes_validate.validate(pod, latest_kubernetes_schema(), strict=True)


def write_network_policies(folder: Path, namespace: str) -> None:
    """components/networkpolicy.yaml (what users apply once per namespace for TorchX and `lift submit` jobs) into
    `folder`, placed in `namespace`, for scanners that pair pods with their policies."""
    docs = list(yaml.safe_load_all((ROOT / "components" / "networkpolicy.yaml").read_text()))
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    (folder / "networkpolicy.yaml").write_text(yaml.safe_dump_all(docs))


# ------------------------------------------------------------------------------- Kubeflow Trainer v2 (TrainJob)
TRAINER = ROOT.parent / "shared" / "k8s" / "trainer-v2"
SKIP_TRAINER = f"the Trainer v2.3.0 CRDs are not at {TRAINER} (they live beside the project, not in it; see its README)"


@functools.lru_cache(maxsize=None)
def trainer_validator(kind: str):
    """The strict schema of a Trainer v2.3.0 CRD: `trainjobs`, `trainingruntimes` or `clustertrainingruntimes`."""
    import jsonschema

    crd = yaml.safe_load((TRAINER / f"trainer.kubeflow.org_{kind}.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(_strict(copy.deepcopy(version["schema"]["openAPIV3Schema"])))


def trainer_errors(obj: dict) -> list[str]:
    """Violations of the strict Trainer CRD schema of `obj`'s kind (skips the test when the CRDs are absent)."""
    if not TRAINER.is_dir():
        pytest.skip(SKIP_TRAINER)
    kind = {"TrainJob": "trainjobs", "TrainingRuntime": "trainingruntimes",
            "ClusterTrainingRuntime": "clustertrainingruntimes"}[obj["kind"]]
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in trainer_validator(kind).iter_errors(obj)]


def _merge_named(base: list, patch: list) -> list:
    """A strategic merge of two lists of named objects: same name merges key by key, new names are appended."""
    out = [copy.deepcopy(item) for item in base]
    for item in patch:
        same = [o for o in out if o.get("name") == item.get("name")]
        if same:
            for key, value in item.items():
                same[0][key] = _merge_named(same[0].get(key, []), value) if key in ("volumeMounts", "env") \
                    else copy.deepcopy(value)
        else:
            out.append(copy.deepcopy(item))
    return out


def trainjob_pod(job: dict, runtimes: dict[str, dict]) -> dict:
    """The pod template Kubeflow Trainer runs for each node of a TrainJob: the referenced runtime's `node` pod
    (a TrainingRuntime of `runtimes`, by name, or Trainer's torch-distributed ClusterTrainingRuntime of
    ../shared/k8s/trainer-v2/), with the job's runtime patches merged in and its trainer applied to the `node`
    container (image, command, env, resources), as Trainer's torch plugin builds it."""
    ref = job["spec"]["runtimeRef"]
    if ref["kind"] == "TrainingRuntime":
        runtime = runtimes[ref["name"]]
    else:
        if not TRAINER.is_dir():
            pytest.skip(SKIP_TRAINER)
        runtime = yaml.safe_load((TRAINER / "torch-distributed-runtime.yaml").read_text())
        assert ref["name"] == runtime["metadata"]["name"], ref
    (node,) = [r for r in runtime["spec"]["template"]["spec"]["replicatedJobs"] if r["name"] == "node"]
    pod = copy.deepcopy(node["template"]["spec"]["template"])
    for patch in job["spec"].get("runtimePatches", []):
        for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if rjob["name"] != "node":
                continue
            template = rjob["template"]["spec"]["template"]
            for key in ("labels", "annotations"):
                if key in template.get("metadata", {}):
                    pod.setdefault("metadata", {}).setdefault(key, {}).update(template["metadata"][key])
            for key, value in template.get("spec", {}).items():
                pod["spec"][key] = _merge_named(pod["spec"].get(key, []), value) \
                    if key in ("containers", "initContainers", "volumes") else copy.deepcopy(value)
    trainer = job["spec"]["trainer"]
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "node"]
    container.update(image=trainer["image"], resources=trainer["resourcesPerNode"])
    container.update({k: trainer[k] for k in ("command", "args") if k in trainer})
    container["env"] = _merge_named(container.get("env", []), trainer.get("env", []))
    return pod
