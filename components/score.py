"""TorchX component for `lift score`; the launch logic is stage_app (lift/launch/component.py), shared by all.

    torchx run -s local_cwd components/score.py:score -j 1x2 -- run=./runs/default
    torchx run -s kubernetes --dryrun --workspace "" -cfg queue=default components/score.py:score \\
        -j 4x8 --gpu 8 --cpu 64 --memMB 480000 --image REGISTRY/lift:0.1.0 -- run=s3://bucket/run
"""

from typing import Dict, List, Optional

from torchx import specs

from lift.launch.component import DEFAULT_IMAGE, options, stage_app


def score(
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
    """Rate the rollouts with the critic and compute rewards (`lift score`, sharded).

    Args:
        overrides: `key=value` overrides of `lift config show score`, after `--`
        config: YAML config file or URL (s3://, gs://, file://), read by every process
        image: container image with the project installed (ignored by local_cwd, which runs the working tree)
        name: job name (lift-score when unset)
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
    return stage_app("score", *overrides, **options(locals()))
