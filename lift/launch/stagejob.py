"""A stage's Kubernetes job, read once off its TorchX `AppDef` (lift/launch/component.py): the one source that both
job renderers, lift/launch/pytorchjob.py (kubeflow.org/v1 PyTorchJob) and lift/launch/trainjob.py
(trainer.kubeflow.org/v1alpha1 TrainJob), turn into their API's object.

Nothing about the stage is restated: image, the `lift ...` command, nodes x processes, resources, env, volumes and
retries come from the AppDef's single role, and the torchrun flags are parsed back with torchrun's own parser. What
is added is what Kubernetes needs and TorchX cannot say: the hardened pod (lift/launch/hardening.py), credentials
from an existing Secret, and Kueue's labels.

Credentials (`secret`): by default the Secret is mounted read-only as files at `CREDENTIALS_DIR` and the SDKs are
pointed at them (`AWS_SHARED_CREDENTIALS_FILE` = its `credentials` key, an AWS credentials file; `HF_TOKEN_PATH` =
its optional `HF_TOKEN` key); `credentials="env"` exports its keys as variables through `secretKeyRef` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from kubernetes.client import (
    V1Container,
    V1EnvVar,
    V1EnvVarSource,
    V1ObjectMeta,
    V1PersistentVolumeClaimVolumeSource,
    V1PodSpec,
    V1PodTemplateSpec,
    V1ResourceRequirements,
    V1SecretKeySelector,
    V1SecretVolumeSource,
    V1Volume,
    V1VolumeMount,
)
from torchx import specs

from lift.launch import hardening
from lift.launch.component import CREDENTIALS, CREDENTIALS_DIR, RDZV_PORT_NAME, torchrun_argv

# Secret keys mapped to environment variables of the same name (credentials="env"); optional keys may be absent.
SECRET_KEYS = {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False, "AWS_SESSION_TOKEN": True, "HF_TOKEN": True}
# credentials="file": the variable -> the key file (under CREDENTIALS_DIR) the SDKs read.
CREDENTIAL_FILES = {"AWS_SHARED_CREDENTIALS_FILE": "credentials", "HF_TOKEN_PATH": "HF_TOKEN"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # Kueue admits a job to the LocalQueue this label names
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"  # ... at the WorkloadPriorityClass this one names
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class StageJob:
    """Everything a job API needs to run one stage, in API-neutral form."""

    name: str
    """Job name, a DNS-1035 label."""
    namespace: Optional[str]
    """Namespace (None: the client's)."""
    stage: str
    """The lift command (`align`, `data`, ...)."""
    image: str
    """Container image."""
    module_args: List[str]
    """What follows `torchrun ... -m`: `lift STAGE ...`, with `$(` escaped for Kubernetes."""
    min_nodes: int
    """Fewest nodes of an elastic job (= max_nodes when static)."""
    max_nodes: int
    """Nodes (pods) of the job."""
    nproc: str
    """Processes per node, as torchrun takes it (an integer, or auto/gpu/cpu)."""
    max_restarts: int
    """torchrun's in-place restarts of the worker group."""
    port: int
    """Container port of the rendezvous."""
    retries: int
    """Pod failures the job tolerates (the AppDef's max_retries)."""
    env: List[V1EnvVar]
    """Environment of the training container, credentials included (as references or file paths)."""
    resources: V1ResourceRequirements
    """Per node; requests equal limits."""
    volumes: List[V1Volume]
    """Scratch emptyDirs, claims and the credentials Secret."""
    mounts: List[V1VolumeMount]
    """Their mounts in the training container."""
    node_selector: Dict[str, str]
    """From the named resource's instance type, if any."""
    labels: Dict[str, str] = field(default_factory=dict)
    """Labels of the job and its pods (app.kubernetes.io/*, Kueue's)."""
    queue: Optional[str] = None
    """Kueue LocalQueue: the job is created suspended and Kueue admits it."""

    @property
    def elastic(self) -> bool:
        return self.min_nodes < self.max_nodes

    def pod_template(self, container: str, port_name: str, service_account: Optional[str],
                     priority_class: Optional[str]) -> V1PodTemplateSpec:
        """The hardened pod of every node; `container` and `port_name` are what the job API looks for."""
        from kubernetes.client import V1ContainerPort

        main = V1Container(name=container, image=self.image, env=self.env, resources=self.resources,
                           volume_mounts=list(self.mounts),
                           ports=[V1ContainerPort(name=port_name, container_port=self.port, protocol="TCP")])
        template = V1PodTemplateSpec(
            # Kueue's labels stay on the job: on a pod they would make Kueue's pod integration queue it a second time.
            metadata=V1ObjectMeta(labels={k: v for k, v in self.labels.items() if not k.startswith("kueue.x-k8s.io/")},
                                  annotations={"sidecar.istio.io/inject": "false"}),
            spec=V1PodSpec(containers=[main], volumes=list(self.volumes), service_account_name=service_account,
                           priority_class_name=priority_class, node_selector=self.node_selector or None),
        )
        hardening.harden(template)
        return template


def _resources(resource: specs.Resource) -> V1ResourceRequirements:
    """Requests equal limits (Guaranteed QoS: a training pod is never the first one evicted)."""
    amounts: Dict[str, str] = {}
    if resource.cpu > 0:
        amounts["cpu"] = str(resource.cpu)
    if resource.memMB > 0:
        amounts["memory"] = f"{resource.memMB}Mi"
    if resource.gpu > 0:
        amounts["nvidia.com/gpu"] = str(resource.gpu)
    amounts.update({device: str(count) for device, count in resource.devices.items()})
    return V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def _volumes(role: specs.Role, shm_size: Optional[str]) -> tuple[list, list]:
    volumes, mounts = hardening.scratch_volumes(shm_size)
    for i, mount in enumerate(role.mounts):
        if not isinstance(mount, specs.VolumeMount):
            raise ValueError(
                f"mount {mount} is not allowed in a Kubernetes job: only persistent volume claims "
                "(type=volume,src=CLAIM,dst=PATH); host paths and devices break the pod's isolation"
            )
        claim = V1PersistentVolumeClaimVolumeSource(claim_name=mount.src)
        volumes.append(V1Volume(name=f"mount-{i}", persistent_volume_claim=claim))
        mounts.append(V1VolumeMount(name=f"mount-{i}", mount_path=mount.dst_path, read_only=mount.read_only))
    return volumes, mounts


def _credentials(secret: Optional[str], how: str) -> tuple[list, list, list]:
    """(env, volumes, mounts) that hand the Secret's credentials to the container."""
    if not secret:
        return [], [], []
    if how == "env":
        env = [V1EnvVar(name=key, value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(
            name=secret, key=key, optional=optional or None))) for key, optional in SECRET_KEYS.items()]
        return env, [], []
    if how != "file":
        raise ValueError(f"credentials must be one of {', '.join(CREDENTIALS)}, got {how!r}")
    env = [V1EnvVar(name=var, value=f"{CREDENTIALS_DIR}/{key}") for var, key in CREDENTIAL_FILES.items()]
    # Owner-read only; the pod's fsGroup makes the files readable by the non-root user.
    volume = V1Volume(name="credentials", secret=V1SecretVolumeSource(secret_name=secret, default_mode=0o440))
    return env, [volume], [V1VolumeMount(name="credentials", mount_path=CREDENTIALS_DIR, read_only=True)]


def _escape(arg: str) -> str:
    """Kubernetes expands `$(VAR)` in container args; a user's literal `$(` must stay literal."""
    return arg.replace("$(", "$$(")


def from_app(app: specs.AppDef, *, namespace: Optional[str] = None, secret: Optional[str] = None,
             credentials: str = "file", shm_size: Optional[str] = None, labels: Optional[Dict[str, str]] = None,
             queue: Optional[str] = None, workload_priority: Optional[str] = None) -> StageJob:
    """The stage job of `app`'s single role; `shm_size` caps /dev/shm (e.g. 16Gi; unset: the memory limit)."""
    from torch.distributed.run import (
        get_args_parser,  # torch's own parser reads the launcher flags back
    )

    if len(app.roles) != 1:
        raise ValueError(f"{app.name}: a Kubernetes job runs one role, the AppDef has {len(app.roles)}")
    role = app.roles[0]
    run = get_args_parser().parse_args(torchrun_argv(role)[1:])
    if not run.module:
        raise ValueError(f"{app.name}: expected `torchrun ... -m MODULE`, got script {run.training_script!r}")
    if not DNS1035.match(app.name) or len(app.name) > 63:
        raise ValueError(f"job name {app.name!r} must be a DNS-1035 label: a-z, 0-9 and '-', starting with a "
                         "letter, <= 63")
    low, _, high = str(run.nnodes).rpartition(":")
    stage = run.training_script_args[0] if run.training_script_args else role.name
    volumes, mounts = _volumes(role, shm_size)
    cred_env, cred_volumes, cred_mounts = _credentials(secret, credentials)
    job_labels = {
        "app.kubernetes.io/name": "lift",
        "app.kubernetes.io/instance": app.name,
        "app.kubernetes.io/component": stage,
        "app.kubernetes.io/managed-by": "lift-submit",
        **({QUEUE_LABEL: queue} if queue else {}),
        **({PRIORITY_LABEL: workload_priority} if workload_priority else {}),
        **(labels or {}),
    }
    return StageJob(
        name=app.name, namespace=namespace, stage=stage, image=role.image,
        module_args=[run.training_script, *(_escape(a) for a in run.training_script_args)],
        min_nodes=int(low or high), max_nodes=int(high), nproc=str(run.nproc_per_node),
        max_restarts=run.max_restarts, port=role.port_map.get(RDZV_PORT_NAME, 29500), retries=role.max_retries,
        env=[V1EnvVar(name=k, value=v) for k, v in role.env.items()] + cred_env,
        resources=_resources(role.resource), volumes=volumes + cred_volumes, mounts=mounts + cred_mounts,
        node_selector={k: v for k, v in role.resource.capabilities.items() if k == "node.kubernetes.io/instance-type"},
        labels=job_labels, queue=queue,
    )
