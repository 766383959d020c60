"""The hardened pod every Kubernetes path of lift uses, defined once: `lift submit` (lift/launch/pytorchjob.py)
builds its pods with it and the TorchX components (lift/launch/component.py) apply it to the Volcano job TorchX
renders. The Helm chart states the same in values.yaml (`podSecurityContext`, `securityContext`, `home`), checked
by tests/test_image.py.

- the image's non-root user, by number (Kubernetes can only verify runAsNonRoot for a numeric user);
- no privilege escalation, every capability dropped, seccomp RuntimeDefault;
- a read-only root filesystem, with emptyDir scratch at /tmp and HOME/.cache (HF_HOME, LIFT_CACHE, torch and
  triton caches all live there, see the Dockerfile), and /dev/shm as a memory-backed emptyDir;
- no Kubernetes API token: nothing in a stage calls the API (EKS IRSA projects its own token).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

UID = 10001  # the image's user and group (Dockerfile: USER 10001:10001), high enough to clash with no host user
HOME = "/home/lift"  # its HOME
SCRATCH = {"tmp": "/tmp", "cache": f"{HOME}/.cache"}  # volume name -> mount path of the writable emptyDirs
SHM = ("dshm", "/dev/shm")


def pod_security_context():
    from kubernetes.client import V1PodSecurityContext, V1SeccompProfile

    return V1PodSecurityContext(run_as_non_root=True, run_as_user=UID, run_as_group=UID, fs_group=UID,
                                seccomp_profile=V1SeccompProfile(type="RuntimeDefault"))


def container_security_context():
    from kubernetes.client import V1Capabilities, V1SeccompProfile, V1SecurityContext

    return V1SecurityContext(
        run_as_non_root=True, run_as_user=UID, run_as_group=UID, privileged=False, allow_privilege_escalation=False,
        read_only_root_filesystem=True, capabilities=V1Capabilities(drop=["ALL"]),
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def scratch_volumes(shm_size: Optional[str] = None, with_shm: bool = True) -> Tuple[List, List]:
    """(volumes, mounts) of the writable emptyDirs; /dev/shm is memory-backed, capped at `shm_size` if given."""
    from kubernetes.client import V1EmptyDirVolumeSource, V1Volume, V1VolumeMount

    volumes, mounts = [], []
    if with_shm:
        volumes.append(V1Volume(name=SHM[0], empty_dir=V1EmptyDirVolumeSource(medium="Memory", size_limit=shm_size)))
        mounts.append(V1VolumeMount(name=SHM[0], mount_path=SHM[1]))
    for name, path in SCRATCH.items():
        volumes.append(V1Volume(name=name, empty_dir=V1EmptyDirVolumeSource()))
        mounts.append(V1VolumeMount(name=name, mount_path=path))
    return volumes, mounts


def harden(pod) -> None:
    """Apply all of the above to a pod (a kubernetes V1Pod or V1PodTemplateSpec) in place, keeping its volumes."""
    spec = pod.spec
    spec.security_context = pod_security_context()
    spec.automount_service_account_token = False
    present = {v.name for v in spec.volumes or []}
    volumes, mounts = scratch_volumes(with_shm=SHM[0] not in present)
    spec.volumes = [*(spec.volumes or []), *(v for v in volumes if v.name not in present)]
    for container in spec.containers:
        container.security_context = container_security_context()
        container.image_pull_policy = "Always"  # every node runs the same build of a mutable tag
        have = {m.mount_path for m in container.volume_mounts or []}
        container.volume_mounts = [*(container.volume_mounts or []), *(m for m in mounts if m.mount_path not in have)]
