"""A stage's job (lift/launch/stagejob.py, read off its TorchX AppDef) as a kubeflow.org/v1 PyTorchJob, built with
the kubeflow-training models; lift/launch/trainjob.py renders the same stage job for Kubeflow Trainer v2.

What is added for the Kubeflow training operator:

- replicas: Master (exactly 1) + Worker (nodes - 1); an elastic `-j MIN:MAXxN` becomes Worker-only with an
  elasticPolicy (c10d rendezvous on worker-0, as the operator sets it up);
- rendezvous: static, from the MASTER_ADDR / MASTER_PORT / RANK the operator injects (`$(VAR)` is expanded by
  Kubernetes, no shell involved);
- Kueue: with a queue the job carries `kueue.x-k8s.io/queue-name` and is created with `runPolicy.suspend`, which
  Kueue lifts when it admits the job.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import yaml
from kubeflow.training import ApiClient, models
from torchx import specs

from lift.launch import stagejob

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER = "pytorch"  # the operator finds the training container by this name
PORT_NAME = "pytorchjob-port"  # ... and the rendezvous port by this one


def render(job: stagejob.StageJob, *, service_account: Optional[str] = None, priority_class: Optional[str] = None,
           ttl_seconds_after_finished: Optional[int] = None) -> models.KubeflowOrgV1PyTorchJob:
    """The PyTorchJob that runs `job` on the training operator."""
    launcher = ["--nnodes", f"{job.min_nodes}:{job.max_nodes}" if job.elastic else str(job.max_nodes),
                "--nproc_per_node", job.nproc, "--max_restarts", str(job.max_restarts)]
    if job.elastic:
        # The operator points PET_RDZV_ENDPOINT at worker-0's port; every worker joins the c10d rendezvous there.
        launcher += ["--rdzv_backend", "c10d", "--rdzv_endpoint", "$(PET_RDZV_ENDPOINT)", "--rdzv_id", job.name]
    else:
        # Static rendezvous on the Master pod; RANK is the node's rank (Master 0, Worker i -> i + 1).
        launcher += ["--node_rank", "$(RANK)", "--master_addr", "$(MASTER_ADDR)", "--master_port", "$(MASTER_PORT)"]
    template = job.pod_template(CONTAINER, PORT_NAME, service_account, priority_class)
    (container,) = template.spec.containers
    container.command, container.args = ["torchrun"], [*launcher, "-m", *job.module_args]
    # A failed pod is retried in place only when the AppDef asked for retries (the stage resumes from its outputs).
    restart = "OnFailure" if job.retries > 0 else "Never"
    replicas: Dict[str, models.KubeflowOrgV1ReplicaSpec] = {}
    if not job.elastic:
        replicas["Master"] = models.KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy=restart, template=template)
    workers = job.max_nodes if job.elastic else job.max_nodes - 1
    if workers:
        replicas["Worker"] = models.KubeflowOrgV1ReplicaSpec(
            replicas=workers, restart_policy=restart, template=template)
    return models.KubeflowOrgV1PyTorchJob(
        api_version=API_VERSION,
        kind=KIND,
        metadata=models.V1ObjectMeta(name=job.name, namespace=job.namespace, labels=dict(job.labels)),
        spec=models.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=job.nproc,
            pytorch_replica_specs=replicas,
            elastic_policy=models.KubeflowOrgV1ElasticPolicy(
                min_replicas=job.min_nodes, max_replicas=job.max_nodes, rdzv_backend="c10d", rdzv_id=job.name,
                max_restarts=job.max_restarts,
            ) if job.elastic else None,
            run_policy=models.KubeflowOrgV1RunPolicy(
                backoff_limit=job.retries,
                clean_pod_policy="None",  # keep finished pods so `lift logs` can still read them
                ttl_seconds_after_finished=ttl_seconds_after_finished,
                suspend=True if job.queue else None,
            ),
        ),
    )


def from_app(app: specs.AppDef, *, namespace: Optional[str] = None, secret: Optional[str] = None,
             credentials: str = "file", service_account: Optional[str] = None, shm_size: Optional[str] = None,
             priority_class: Optional[str] = None, ttl_seconds_after_finished: Optional[int] = None,
             labels: Optional[Dict[str, str]] = None, queue: Optional[str] = None,
             workload_priority: Optional[str] = None) -> models.KubeflowOrgV1PyTorchJob:
    """The PyTorchJob that runs `app`'s role like the TorchX kubernetes scheduler would, on the training operator.
    `secret` names an existing Secret with the credentials (see lift/launch/stagejob.py for its keys)."""
    job = stagejob.from_app(app, namespace=namespace, secret=secret, credentials=credentials, shm_size=shm_size,
                            labels=labels, queue=queue, workload_priority=workload_priority)
    return render(job, service_account=service_account, priority_class=priority_class,
                  ttl_seconds_after_finished=ttl_seconds_after_finished)


def to_dict(job: models.KubeflowOrgV1PyTorchJob) -> dict:
    """The job as the API server receives it (camelCase keys, unset fields left out)."""
    return ApiClient().sanitize_for_serialization(job)


def to_yaml(job) -> str:
    return yaml.safe_dump(to_dict(job), sort_keys=False, width=1 << 16)


def webhook_errors(job: dict) -> List[str]:
    """The training operator's admission rules that its CRD schema does not express, as messages (empty: valid)."""
    errors = []
    name = job.get("metadata", {}).get("name", "")
    if not stagejob.DNS1035.match(name) or len(name) > 63:
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = job.get("spec", {})
    replicas = spec.get("pytorchReplicaSpecs") or {}
    if not replicas:
        errors.append("spec.pytorchReplicaSpecs is empty")
    for rtype, rspec in replicas.items():
        if rtype not in ("Master", "Worker"):
            errors.append(f"replica type {rtype!r} is not Master or Worker")
        containers = (rspec.get("template", {}).get("spec", {}) or {}).get("containers") or []
        named = [c for c in containers if c.get("name") == CONTAINER]
        if not named:
            errors.append(f"{rtype}: no container named {CONTAINER!r}")
        elif not named[0].get("image"):
            errors.append(f"{rtype}: container {CONTAINER!r} has no image")
    if "Master" in replicas and replicas["Master"].get("replicas", 1) != 1:
        errors.append(f"Master must have exactly 1 replica, has {replicas['Master'].get('replicas')}")
    if spec.get("elasticPolicy") is not None and "Worker" not in replicas:
        errors.append("elasticPolicy requires a Worker replica spec")
    return errors
