"""A stage's job (lift/launch/stagejob.py, read off its TorchX AppDef) as a Kubeflow Trainer v2 TrainJob
(trainer.kubeflow.org/v1alpha1), the second renderer beside lift/launch/pytorchjob.py.

The TrainJob references a training runtime, by default Trainer's `torch-distributed` ClusterTrainingRuntime: a
JobSet of `numNodes` pods whose container `node` gets the PET_* rendezvous variables (PET_NNODES, PET_NODE_RANK,
PET_MASTER_ADDR/PORT, PET_NPROC_PER_NODE). The TrainJob sets what its API lets a job set:

- `spec.trainer`: image, `torchrun` and its arguments, env (credentials as file paths or secretKeyRefs), numNodes,
  numProcPerNode and resourcesPerNode (requests = limits);
- `spec.runtimePatches` (v2.3.0's only way to shape the runtime's pods): the pod's security context, service
  account, node selector and volumes (scratch emptyDirs, claims, the credentials Secret), and the container's
  security context and mounts. Trainer v2.3.0 does not let a patch set `automountServiceAccountToken`,
  `imagePullPolicy` or `priorityClassName`: with a runtime that does not set them, the ServiceAccount's own automount
  setting applies (the chart's account mounts none), a digest pins the image, and priority comes from Kueue's
  WorkloadPriorityClass label;
- rendezvous: static from the PET_* variables, or for an elastic `-j MIN:MAXxN` a c10d rendezvous at node 0
  (Trainer v2.3.0's torch policy has no elastic settings, so torchrun's own flags carry them); numNodes is MAX;
- Kueue: with a queue, the queue-name label and `spec.suspend: true`.

The `kubeflow` SDK (Trainer v2's) is not used to build or create the job: its `TrainerClient.train` reads the
runtime from the cluster first (no offline `--dry-run`), cannot create a job suspended, and ships a second
`kubeflow` top-level package beside kubeflow-training's; the object is a plain dict, validated offline against the
v2.3.0 CRD by the tests and created with the kubernetes client's CustomObjectsApi.
"""

from __future__ import annotations

import re
from typing import Optional

import yaml
from kubernetes.client import ApiClient
from torchx import specs

from lift.launch import stagejob
from lift.launch.component import TRAINER_RUNTIME

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
REPLICATED_JOB = CONTAINER = "node"  # the runtime's replicated job and training container (the torch plugin's names)
PATCH_MANAGER = "lift.kubeflow.org/submit"  # owner of the runtime patch


def render(job: stagejob.StageJob, *, runtime: str = TRAINER_RUNTIME, runtime_kind: str = "ClusterTrainingRuntime",
           service_account: Optional[str] = None) -> dict:
    """The TrainJob that runs `job` on Kubeflow Trainer v2, as the API server receives it."""
    client = ApiClient()
    if job.elastic:
        rdzv = ["--rdzv_backend", "c10d", "--rdzv_endpoint", "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)",
                "--rdzv_id", job.name, "--nnodes", f"{job.min_nodes}:{job.max_nodes}"]
    else:
        rdzv = ["--nnodes", "$(PET_NNODES)", "--node_rank", "$(PET_NODE_RANK)", "--master_addr",
                "$(PET_MASTER_ADDR)", "--master_port", "$(PET_MASTER_PORT)"]
    args = [*rdzv, "--nproc_per_node", job.nproc, "--max_restarts", str(job.max_restarts), "-m", *job.module_args]
    pod = client.sanitize_for_serialization(job.pod_template(CONTAINER, "c10d", service_account, None))
    (container,) = pod["spec"]["containers"]
    pod_patch = {k: v for k, v in pod["spec"].items()
                 if k in ("securityContext", "serviceAccountName", "nodeSelector", "volumes")}
    pod_patch["containers"] = [{k: container[k] for k in ("name", "securityContext", "volumeMounts")}]
    trainer = {
        "image": job.image,
        "command": ["torchrun"],
        "args": args,
        "env": container["env"],
        "numNodes": job.max_nodes,
        "resourcesPerNode": container["resources"],
    }
    if job.nproc.isdigit():  # auto/gpu/cpu are left to the runtime (the torch plugin derives them from resources)
        trainer["numProcPerNode"] = int(job.nproc)
    spec = {
        "runtimeRef": {"apiGroup": GROUP, "kind": runtime_kind, "name": runtime},
        "trainer": trainer,
        "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": REPLICATED_JOB, "template": {"spec": {"template": {
                "metadata": {"labels": pod["metadata"]["labels"], "annotations": pod["metadata"]["annotations"]},
                "spec": pod_patch}}}}]}}}}],
    }
    if job.queue:
        spec["suspend"] = True
    metadata = {"name": job.name, **({"namespace": job.namespace} if job.namespace else {}), "labels": job.labels}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def from_app(app: specs.AppDef, *, namespace: Optional[str] = None, secret: Optional[str] = None,
             credentials: str = "file", service_account: Optional[str] = None, shm_size: Optional[str] = None,
             runtime: str = TRAINER_RUNTIME, queue: Optional[str] = None, workload_priority: Optional[str] = None,
             labels: Optional[dict] = None) -> dict:
    """The TrainJob of `app`'s role (see lift/launch/stagejob.py for `secret` and `credentials`)."""
    job = stagejob.from_app(app, namespace=namespace, secret=secret, credentials=credentials, shm_size=shm_size,
                            labels=labels, queue=queue, workload_priority=workload_priority)
    return render(job, runtime=runtime, service_account=service_account)


def to_yaml(job: dict) -> str:
    return yaml.safe_dump(job, sort_keys=False, width=1 << 16)


def admission_errors(job: dict) -> list[str]:
    """Trainer's CEL rules on a TrainJob that a JSON schema validator does not run, as messages (empty: valid)."""
    errors = []
    name = job.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        errors.append(f"metadata.name {name!r} must match RFC 1035 DNS label format")
    if len(name) > 63:
        errors.append("metadata.name must be no more than 63 characters")
    trainer = job.get("spec", {}).get("trainer", {})
    if "numProcPerNode" in trainer and trainer["numProcPerNode"] < 1:
        errors.append("numProcPerNode must be greater than or equal to 1")
    return errors
