"""How a stage is launched, defined once: the TorchX `AppDef` that runs `lift STAGE` under torchrun.

Every file in `components/` is a typed signature and docstring around one line,
`return stage_app(COMMAND, *overrides, **options(locals()))` (TorchX reads a literal function per file, with its
options and their help; no logic lives there), and `lift submit` derives its PyTorchJob from the same `AppDef`
(lift/launch/pytorchjob.py), so the command a stage runs is written here and nowhere else.

    # locally, 1 node x 2 processes on CPU (needs `torchrun` on PATH: activate the virtualenv)
    torchx run -s local_cwd components/align.py:align --config align.yaml -- trainer.max_steps=10
    # on Kubernetes through Volcano, 4 nodes x 8 GPUs (add --dryrun --workspace "" to print the job instead)
    torchx run -s kubernetes -cfg queue=default components/align.py:align -j 4x8 --gpu 8 --cpu 64 \\
        --memMB 480000 --image REGISTRY/lift:0.1.0 --endpoint https://minio.example:9000 -- run=s3://bucket/run
    # the same stage as a kubeflow.org/v1 PyTorchJob (credentials from an existing Secret)
    lift submit align -j 4x8 --gpu 8 --image REGISTRY/lift:0.1.0 --secret lift-s3 -- run=s3://bucket/run

On Kubernetes the pods are hardened like the chart's and `lift submit`'s (lift/launch/hardening.py: non-root, read-only
root filesystem with scratch volumes, no capabilities), TorchX's own rendering amended through `StageRole.pre_proc`.

Credentials never travel as arguments: `stage_app` refuses credential variables in `env`. On TorchX they come from
the cluster's workload identity (`-cfg service_account=SA` bound to an IAM role / GCP service account) or, locally,
from the caller's environment, which `local_cwd` inherits; `lift submit --secret NAME` and the Helm chart read them
from an existing Secret through `secretKeyRef`.
"""

from __future__ import annotations

import inspect
import shlex
from typing import Dict, List, Optional

from torchx import specs
from torchx.specs import macros

from lift.core.logs import SECRET_ENV
from lift.stages import cluster_stages

# The project's published image (the Helm chart's default too); for your own build pass --image REGISTRY/lift:TAG.
DEFAULT_IMAGE = "ghcr.io/lift-k8s/lift:0.1.0"
# Commands a component may launch: the cluster stages of the registry (`lift data ...` and every `lift STAGE`).
COMMANDS = tuple(s.name for s in cluster_stages())
# The container port torchrun's rendezvous (c10d store / MASTER_PORT) listens on in multi-node runs.
RDZV_PORT_NAME = "c10d"
# How `lift submit --secret` hands the object-storage credentials to the pods (lift/launch/stagejob.py): the Secret
# mounted read-only as files under CREDENTIALS_DIR, or its keys as environment variables.
CREDENTIALS = ("file", "env")
CREDENTIALS_DIR = "/var/run/secrets/lift"
# Kubeflow Trainer's ClusterTrainingRuntime for PyTorch: where `lift submit --api trainjob` runs by default.
TRAINER_RUNTIME = "torch-distributed"


class StageRole(specs.Role):
    """A TorchX role whose Kubernetes pods are hardened (lift/launch/hardening.py).

    TorchX 0.7.0's kubernetes scheduler renders an empty securityContext and has no option for one, but it calls
    every role's `pre_proc` on the scheduler request during `submit_dryrun`, the step both `--dryrun` and a real
    submission go through; this amends each pod of the Volcano job there. Other schedulers are left alone.
    """

    def pre_proc(self, scheduler: str, dryrun_info):
        if scheduler == "kubernetes":
            from lift.launch import hardening

            for task in dryrun_info.request.resource["spec"]["tasks"]:
                hardening.harden(task["template"])
        return dryrun_info


class _NoQuote(str):
    """An argument the shell must expand (an environment variable), so it is not quoted."""


def _shell_join(args: List[str]) -> str:
    return " ".join(a if isinstance(a, _NoQuote) else shlex.quote(a) for a in args)


def parse_j(j: str) -> tuple[int, int, int]:
    """`[MIN:]NODESxNPROC` -> (min nodes, max nodes, processes per node); a bare `N` is 1 node x N processes."""
    nodes, sep, nproc = j.partition("x")
    if not sep:
        nodes, nproc = "1", nodes
    low, _, high = nodes.rpartition(":")
    try:
        lo, hi, n = int(low or high), int(high), int(nproc)
    except ValueError:
        raise ValueError(f"-j must look like 2x8, 1:4x8 or 8, got {j!r}") from None
    if not 1 <= lo <= hi or n < 1:
        raise ValueError(f"-j {j!r}: need 1 <= min nodes <= nodes and >= 1 process per node")
    return lo, hi, n


def lift_argv(command: str, args: List[str], config: Optional[str], force: bool) -> List[str]:
    """`lift COMMAND ARGS... [--config URL] [--force]`: flags last, so `lift data toy OUT` forms parse too."""
    if command not in COMMANDS:
        raise ValueError(f"unknown lift command {command!r}; expected one of {', '.join(COMMANDS)}")
    return [command, *args, *(["--config", config] if config else []), *(["--force"] if force else [])]


def stage_app(
    command: str,
    *overrides: str,
    config: Optional[str] = None,
    image: str = DEFAULT_IMAGE,
    name: Optional[str] = None,
    j: str = "1x2",
    h: Optional[str] = None,
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    endpoint: Optional[str] = None,
    region: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
    max_restarts: int = 0,
    rdzv_port: int = 29500,
    mounts: Optional[List[str]] = None,
    force: bool = False,
) -> specs.AppDef:
    """Run `lift COMMAND` under torchrun on NODES x NPROC processes, as one TorchX role.

    Args:
        command: the lift command (a stage, or `data`)
        overrides: `key=value` config overrides (for `data`: its arguments, e.g. toy OUT_URL toy.num_clips=20)
        config: YAML config file or URL (s3://, gs://, file://), read by every process
        image: container image with the project installed (ignored by local_cwd, which runs the working tree)
        name: job name (lift-COMMAND when unset)
        j: [MIN:]NODESxNPROC: nodes (a MIN:MAX range makes an elastic job) x processes per node, one per GPU
        h: a registered TorchX named resource (e.g. gpu.xlarge); overrides cpu, gpu and memMB
        cpu: CPU cores per node
        gpu: GPUs per node (set j's NPROC to match)
        memMB: memory per node in MB (/dev/shm, a memory-backed volume on Kubernetes, counts against it)
        endpoint: S3-compatible object-store endpoint (AWS_ENDPOINT_URL), e.g. http://minio.minio:9000
        region: object-store region (AWS_REGION)
        env: extra environment, e.g. LIFT_LOG_LEVEL=DEBUG,NCCL_DEBUG=INFO (credentials are refused here)
        max_retries: times the scheduler reruns the whole job after a failure (the stage resumes from its outputs)
        max_restarts: times torchrun restarts the worker group in place before failing the node
        rdzv_port: port of the c10d rendezvous store on the first node (multi-node only)
        mounts: volumes, type=volume,src=PVC,dst=/path[,readonly] (see torchx.specs.parse_mounts)
        force: rerun even if the output's _SUCCESS marker matches the config
    """
    min_nodes, max_nodes, nproc = parse_j(j)
    parsed_mounts = specs.parse_mounts(mounts) if mounts else []
    if any(isinstance(m, specs.DeviceMount) for m in parsed_mounts):
        raise ValueError("device mounts make TorchX run the pod privileged; GPUs come from the device plugin (--gpu)")
    env = dict(env or {})
    refused = sorted(k for k in env if k in SECRET_ENV)
    if refused:
        raise ValueError(
            f"credentials must not be passed as arguments ({', '.join(refused)}): use workload identity "
            "(-cfg service_account=SA) or `lift submit --secret NAME`"
        )
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    if region:
        env["AWS_REGION"] = region
    env.setdefault("PYTHONUNBUFFERED", "1")

    if max_nodes == 1:
        # One agent hosts every worker: a free local port, no cross-node rendezvous.
        endpoint_arg = "localhost:0"
    else:
        # The scheduler names the first node in $TORCHX_RANK0_HOST-like variables (`$$` escapes TorchX's macros).
        endpoint_arg = _NoQuote(f"$${{{macros.rank0_env}:=localhost}}:{rdzv_port}")
    nnodes = f"{min_nodes}:{max_nodes}" if min_nodes < max_nodes else str(max_nodes)
    launcher = [
        "torchrun",
        "--rdzv_backend", "c10d",
        "--rdzv_endpoint", endpoint_arg,
        "--rdzv_id", macros.app_id,
        "--nnodes", nnodes,
        "--nproc_per_node", str(nproc),
        "--max_restarts", str(max_restarts),
        "-m", "lift",
    ]
    argv = lift_argv(command, list(overrides), config, force)
    return specs.AppDef(
        name=name or f"lift-{command}",
        roles=[
            StageRole(
                # No '-' in role names: TorchX names the first node's variable VC_<ROLE>_0_HOSTS from it, while
                # Volcano turns '-' into '_' in its own, so `critic-eval` would never find its rendezvous host.
                name=command.replace("-", "_"),
                image=image,
                entrypoint="bash",
                args=["-c", _shell_join(launcher + argv)],
                env=env,
                num_replicas=max_nodes,
                min_replicas=min_nodes,
                resource=specs.resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h),
                port_map={RDZV_PORT_NAME: rdzv_port},
                max_retries=max_retries,
                mounts=parsed_mounts,
            )
        ],
    )


# The options every component declares after its `*overrides`, in order: stage_app's keyword-only parameters.
OPTIONS = tuple(p.name for p in inspect.signature(stage_app).parameters.values() if p.kind is p.KEYWORD_ONLY)


def options(scope: dict[str, object]) -> dict[str, object]:
    """A component's options out of its `locals()`, for `stage_app(COMMAND, *overrides, **options(locals()))`: TorchX
    hands them to the component function as its own parameters, which must mirror stage_app's."""
    return {name: scope[name] for name in OPTIONS}


def torchrun_argv(role: specs.Role) -> List[str]:
    """The torchrun command line a role runs (inverse of the `bash -c` wrapping above), shell-split."""
    if role.entrypoint != "bash" or len(role.args) != 2 or role.args[0] != "-c":
        raise ValueError(f"role {role.name!r} is not a `bash -c 'torchrun ...'` role built by lift.launch")
    argv = shlex.split(role.args[1])
    if not argv or argv[0] != "torchrun":
        raise ValueError(f"role {role.name!r} does not run torchrun: {role.args[1][:80]}")
    return argv
