"""A stage's TorchX `AppDef` (lift/launch/component.py) as a kubeflow.org/v1 PyTorchJob, built with the
kubeflow-training models.

Nothing about the stage is restated here: the image, the `lift ...` command, nodes x processes, resources, env,
volumes and retries are all read off the AppDef's single role, and the torchrun flags are parsed back with
torchrun's own argument parser. What is added is what the Kubeflow training operator needs and TorchX cannot say:

- replicas: Master (exactly 1) + Worker (nodes - 1); an elastic `-j MIN:MAXxN` becomes Worker-only with an
  elasticPolicy (c10d rendezvous on worker-0, as the operator sets it up);
- rendezvous: static, from the MASTER_ADDR / MASTER_PORT / RANK the operator injects (`$(VAR)` is expanded by
  Kubernetes, no shell involved);
- the hardened pod of lift/launch/hardening.py (non-root, no privilege escalation, no capabilities, seccomp, read-only
  root filesystem with emptyDir scratch, /dev/shm in memory, no API token);
- credentials: `secretKeyRef`s into an existing Secret (keys named like the variables), never values.

Kubeflow Trainer v2 (TrainJob) is the alpha successor; only this module would change for it.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import yaml
from kubeflow.training import ApiClient, models
from torchx import specs

from lift.launch import hardening
from lift.launch.component import RDZV_PORT_NAME, torchrun_argv

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER = "pytorch"  # the operator finds the training container by this name
PORT_NAME = "pytorchjob-port"  # ... and the rendezvous port by this one
# Secret keys mapped to environment variables of the same name; optional keys may be absent from the Secret.
SECRET_KEYS = {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False, "AWS_SESSION_TOKEN": True, "HF_TOKEN": True}
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _resources(resource: specs.Resource) -> models.V1ResourceRequirements:
    """Requests equal limits (Guaranteed QoS: a training pod is never the first one evicted)."""
    amounts: Dict[str, str] = {}
    if resource.cpu > 0:
        amounts["cpu"] = str(resource.cpu)
    if resource.memMB > 0:
        amounts["memory"] = f"{resource.memMB}Mi"
    if resource.gpu > 0:
        amounts["nvidia.com/gpu"] = str(resource.gpu)
    amounts.update({device: str(count) for device, count in resource.devices.items()})
    return models.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def _volumes(role: specs.Role, shm_size: Optional[str]) -> tuple[list, list]:
    volumes, mounts = hardening.scratch_volumes(shm_size)
    for i, mount in enumerate(role.mounts):
        if not isinstance(mount, specs.VolumeMount):
            raise ValueError(
                f"mount {mount} is not allowed in a PyTorchJob: only persistent volume claims "
                "(type=volume,src=CLAIM,dst=PATH); host paths and devices break the pod's isolation"
            )
        claim = models.V1PersistentVolumeClaimVolumeSource(claim_name=mount.src)
        volumes.append(models.V1Volume(name=f"mount-{i}", persistent_volume_claim=claim))
        mounts.append(models.V1VolumeMount(name=f"mount-{i}", mount_path=mount.dst_path, read_only=mount.read_only))
    return volumes, mounts


def _env(role: specs.Role, secret: Optional[str]) -> List[models.V1EnvVar]:
    env = [models.V1EnvVar(name=k, value=v) for k, v in role.env.items()]
    if secret:
        env += [
            models.V1EnvVar(name=key, value_from=models.V1EnvVarSource(
                secret_key_ref=models.V1SecretKeySelector(name=secret, key=key, optional=optional or None)))
            for key, optional in SECRET_KEYS.items()
        ]
    return env


def _escape(arg: str) -> str:
    """Kubernetes expands `$(VAR)` in container args; a user's literal `$(` must stay literal."""
    return arg.replace("$(", "$$(")


def from_app(
    app: specs.AppDef,
    *,
    namespace: Optional[str] = None,
    secret: Optional[str] = None,
    service_account: Optional[str] = None,
    shm_size: Optional[str] = None,
    priority_class: Optional[str] = None,
    ttl_seconds_after_finished: Optional[int] = None,
    labels: Optional[Dict[str, str]] = None,
) -> models.KubeflowOrgV1PyTorchJob:
    """The PyTorchJob that runs `app`'s role like the TorchX kubernetes scheduler would, on the training operator.

    `secret` names an existing Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and optionally
    AWS_SESSION_TOKEN, HF_TOKEN); `shm_size` caps /dev/shm (e.g. 16Gi; unset: bounded by the memory limit).
    """
    from torch.distributed.run import (
        get_args_parser,  # torch's own parser reads the launcher flags back
    )

    if len(app.roles) != 1:
        raise ValueError(f"{app.name}: a PyTorchJob runs one role, the AppDef has {len(app.roles)}")
    role = app.roles[0]
    run = get_args_parser().parse_args(torchrun_argv(role)[1:])
    if not run.module:
        raise ValueError(f"{app.name}: expected `torchrun ... -m MODULE`, got script {run.training_script!r}")
    name = app.name
    if not _DNS1035.match(name) or len(name) > 63:
        raise ValueError(f"job name {name!r} must be a DNS-1035 label: a-z, 0-9 and '-', starting with a letter, <= 63")
    low, _, high = str(run.nnodes).rpartition(":")
    min_nodes, max_nodes = int(low or high), int(high)
    elastic = min_nodes < max_nodes
    port = role.port_map.get(RDZV_PORT_NAME, 29500)
    nproc = str(run.nproc_per_node)

    launcher = ["--nnodes", str(run.nnodes), "--nproc_per_node", nproc, "--max_restarts", str(run.max_restarts)]
    if elastic:
        # The operator points PET_RDZV_ENDPOINT at worker-0's port; every worker joins the c10d rendezvous there.
        launcher += ["--rdzv_backend", "c10d", "--rdzv_endpoint", "$(PET_RDZV_ENDPOINT)", "--rdzv_id", name]
    else:
        # Static rendezvous on the Master pod; RANK is the node's rank (Master 0, Worker i -> i + 1).
        launcher += ["--node_rank", "$(RANK)", "--master_addr", "$(MASTER_ADDR)", "--master_port", "$(MASTER_PORT)"]
    command = [*launcher, "-m", run.training_script, *(_escape(a) for a in run.training_script_args)]

    volumes, volume_mounts = _volumes(role, shm_size)
    job_labels = {
        "app.kubernetes.io/name": "lift",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": run.training_script_args[0] if run.training_script_args else role.name,
        "app.kubernetes.io/managed-by": "lift-submit",
        **(labels or {}),
    }
    container = models.V1Container(
        name=CONTAINER,
        image=role.image,
        command=["torchrun"],
        args=command,
        env=_env(role, secret),
        ports=[models.V1ContainerPort(name=PORT_NAME, container_port=port, protocol="TCP")],
        resources=_resources(role.resource),
        volume_mounts=volume_mounts,
    )
    node_selector = {k: v for k, v in role.resource.capabilities.items() if k == "node.kubernetes.io/instance-type"}
    template = models.V1PodTemplateSpec(
        metadata=models.V1ObjectMeta(labels=job_labels, annotations={"sidecar.istio.io/inject": "false"}),
        spec=models.V1PodSpec(
            containers=[container],
            volumes=volumes,
            service_account_name=service_account,
            priority_class_name=priority_class,
            node_selector=node_selector or None,
        ),
    )
    hardening.harden(template)
    # A failed pod is retried in place only when the AppDef asked for retries (the stage resumes from its outputs).
    restart = "OnFailure" if role.max_retries > 0 else "Never"
    replicas: Dict[str, models.KubeflowOrgV1ReplicaSpec] = {}
    if not elastic:
        replicas["Master"] = models.KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy=restart, template=template)
    workers = max_nodes if elastic else max_nodes - 1
    if workers:
        replicas["Worker"] = models.KubeflowOrgV1ReplicaSpec(
            replicas=workers, restart_policy=restart, template=template)
    return models.KubeflowOrgV1PyTorchJob(
        api_version=API_VERSION,
        kind=KIND,
        metadata=models.V1ObjectMeta(name=name, namespace=namespace, labels=job_labels),
        spec=models.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=nproc,
            pytorch_replica_specs=replicas,
            elastic_policy=models.KubeflowOrgV1ElasticPolicy(
                min_replicas=min_nodes, max_replicas=max_nodes, rdzv_backend="c10d", rdzv_id=name,
                max_restarts=run.max_restarts,
            ) if elastic else None,
            run_policy=models.KubeflowOrgV1RunPolicy(
                backoff_limit=role.max_retries,
                clean_pod_policy="None",  # keep finished pods so `lift logs` can still read them
                ttl_seconds_after_finished=ttl_seconds_after_finished,
            ),
        ),
    )


def to_dict(job: models.KubeflowOrgV1PyTorchJob) -> dict:
    """The job as the API server receives it (camelCase keys, unset fields left out)."""
    return ApiClient().sanitize_for_serialization(job)


def to_yaml(job: models.KubeflowOrgV1PyTorchJob) -> str:
    return yaml.safe_dump(to_dict(job), sort_keys=False, width=1 << 16)


def webhook_errors(job: dict) -> List[str]:
    """The training operator's admission rules that its CRD schema does not express, as messages (empty: valid)."""
    errors = []
    name = job.get("metadata", {}).get("name", "")
    if not _DNS1035.match(name) or len(name) > 63:
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
