"""`lift submit`, `lift status`, `lift logs`: run a stage as a kubeflow.org/v1 PyTorchJob (or, with `--api trainjob`,
a Kubeflow Trainer v2 TrainJob) and follow it.

    lift submit align -j 4x8 --gpu 8 --cpu 64 --memMB 480000 --image REGISTRY/lift:0.1.0 \\
        --secret lift-s3 --endpoint https://minio.example:9000 -- run=s3://bucket/run
    lift submit align ... --dry-run > align.yaml          # the YAML instead, for review or `kubectl create -f`
    lift submit align --api trainjob --queue team-a ... -- run=s3://bucket/run   # a TrainJob, admitted by Kueue
    lift status lift-align-3f9c1a
    lift logs lift-align-3f9c1a --follow

The job is the stage's TorchX AppDef (lift.launch.stage_app, the builder every components/*.py calls) converted by
lift/launch/stagejob.py and rendered by lift/launch/pytorchjob.py or lift/launch/trainjob.py, so the launch options
are the components' own, spelled as in `torchx run` (-j, -h, --cpu, --gpu, --memMB, --image, --config, --env,
--max_retries, ...). The cluster is the current kube context (or --context) and its namespace (or --namespace);
PyTorchJobs go through the kubeflow-training SDK's TrainingClient, TrainJobs through the kubernetes client's
CustomObjectsApi (`status` and `logs` follow PyTorchJobs).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import secrets
import sys
import time
import typing
from typing import List, Optional

from torchx.specs.file_linter import get_fn_docstring
from torchx.util.types import decode, decode_optional

from lift import stages
from lift.core import logs
from lift.launch import component

log = logging.getLogger("lift.submit")
COMMANDS = ("submit", "status", "logs")
APIS = ("pytorchjob", "trainjob")


class ClusterError(ValueError):
    """The cluster could not be reached or refused a request; the message says which and why."""


# --------------------------------------------------------------------------------------------------- parsers
def _launch_params() -> List[inspect.Parameter]:
    """The builder's keyword options: declared once there, offered here and by every component."""
    return [p for p in inspect.signature(component.stage_app).parameters.values() if p.kind is p.KEYWORD_ONLY]


def _add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    _, docs = get_fn_docstring(component.stage_app)
    hints = typing.get_type_hints(component.stage_app)
    group = parser.add_argument_group("launch options (the TorchX components' own, see components/)")
    for param in _launch_params():
        flag = f"-{param.name}" if len(param.name) == 1 else f"--{param.name}"
        kind = decode_optional(hints[param.name])
        default = "" if param.default is None else f" (default: {param.default})"
        if kind is bool:
            group.add_argument(flag, dest=param.name, action="store_true", help=docs[param.name])
        elif kind in (int, float, str):
            group.add_argument(flag, dest=param.name, type=kind, default=param.default, metavar=kind.__name__.upper(),
                               help=docs[param.name] + default)
        else:  # Dict / List, written as torchx writes them: A=1,B=2 / a,b
            group.add_argument(flag, dest=param.name, default=None, metavar="A=1,B=2" if "Dict" in str(kind) else "A,B",
                               help=docs[param.name])


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the kube context's, else 'default')")
    parser.add_argument("--context", help="kube context (default: the current one)")
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")


def add_parsers(sub) -> None:
    """Register `submit`, `status` and `logs` on the `lift` subcommand parser."""
    p = sub.add_parser(
        "submit", help="run a stage on Kubernetes as a PyTorchJob or TrainJob (or print it with --dry-run)",
        description="Build a stage's PyTorchJob (or TrainJob, --api trainjob) from its TorchX component "
                    "and create it in the current kube context. `lift submit STAGE --help` lists the options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lift submit align -j 4x8 --gpu 8 --image REGISTRY/lift:0.1.0 --secret lift-s3 "
               "-- run=s3://bucket/run\n  lift submit data --dry-run -- toy s3://bucket/run/data",
    )
    stages = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in component.COMMANDS:
        s = stages.add_parser(
            stage, add_help=False, help=f"submit `lift {stage}`",
            description=f"Submit `lift {stage}` as a PyTorchJob or TrainJob. -h is TorchX's named resource, as in "
                        "`torchx run`; "
                        "--help shows this text.",
        )
        s.add_argument("--help", action="help", help="show this help message and exit")
        s.add_argument("overrides", nargs="*", metavar="key=value" if stage != "data" else "ARG",
                       help="config overrides, after --" if stage != "data" else
                       "arguments of `lift data`, after --: toy OUT_URL [key=value ...]")
        job = s.add_argument_group("Kubernetes job options")
        job.add_argument("--api", choices=APIS, default="pytorchjob",
                         help="pytorchjob: kubeflow.org/v1 PyTorchJob (training operator v1); trainjob: "
                              "trainer.kubeflow.org/v1alpha1 TrainJob (Kubeflow Trainer v2) (default: pytorchjob)")
        job.add_argument("--dry-run", action="store_true", help="print the job as YAML instead of creating it")
        job.add_argument("--secret", help="existing Secret with the object-storage credentials: with --credentials "
                                          f"file, a key `credentials` (an AWS credentials file) mounted at "
                                          f"{component.CREDENTIALS_DIR} (optional key HF_TOKEN); with env, keys "
                                          "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (optional: AWS_SESSION_TOKEN, "
                                          "HF_TOKEN) read through secretKeyRef")
        job.add_argument("--credentials", choices=component.CREDENTIALS, default="file",
                         help="how --secret reaches the pods: mounted as files (default) or as env variables")
        job.add_argument("--queue", help="Kueue LocalQueue: labels the job kueue.x-k8s.io/queue-name and creates it "
                                         "suspended for Kueue to admit")
        job.add_argument("--workload-priority", help="Kueue WorkloadPriorityClass (kueue.x-k8s.io/priority-class)")
        job.add_argument("--runtime", default=component.TRAINER_RUNTIME,
                         help="--api trainjob: the ClusterTrainingRuntime to run on "
                              f"(default: {component.TRAINER_RUNTIME})")
        job.add_argument("--service-account", help="pod service account (bind it to cloud IAM for workload identity)")
        job.add_argument("--shm-size", help="size limit of /dev/shm, e.g. 16Gi (default: bounded by the memory limit)")
        job.add_argument("--priority-class", help="PriorityClass of the pods")
        job.add_argument("--ttl", type=int, metavar="SECONDS", help="delete the finished job after this long")
        _add_cluster_arguments(job)
        _add_launch_arguments(s)
        if stage == "data":
            s.set_defaults(j="1x1")  # one process, as components/data.py and the chart run it

    st = sub.add_parser("status", help="state of a submitted PyTorchJob", description="Print a PyTorchJob's state, "
                        "conditions and replica counts.")
    st.add_argument("job", metavar="JOB", help="PyTorchJob name (printed by lift submit)")
    _add_cluster_arguments(st)

    lg = sub.add_parser("logs", help="logs of a submitted PyTorchJob", description="Print (or follow) the logs of a "
                        "PyTorchJob's pods: rank 0's by default.")
    lg.add_argument("job", metavar="JOB", help="PyTorchJob name")
    lg.add_argument("-f", "--follow", action="store_true", help="stream until the pods finish")
    lg.add_argument("--all", action="store_true", help="every pod, not only the first node's")
    _add_cluster_arguments(lg)


# --------------------------------------------------------------------------------------------------- actions
def build_job(args: argparse.Namespace, namespace: str):
    """The PyTorchJob of `lift submit`'s arguments: the builder's AppDef, converted."""
    # imported here, not at the top: the Kubernetes client's models take a second to import, which every `lift`
    # process (each rank of each stage) would pay
    from lift.launch import pytorchjob, stagejob, trainjob

    hints = typing.get_type_hints(component.stage_app)
    options = {p.name: getattr(args, p.name) for p in _launch_params()}
    for key, value in options.items():
        kind = decode_optional(hints[key])
        if isinstance(value, str) and kind is not str:
            options[key] = decode(value, kind)
    if args.stage != "data":
        stages.load(args.stage, None, args.overrides)  # unknown keys fail here, before anything is created
    if options["config"] and "://" not in options["config"]:
        log.warning("--config %s is a local path: the pods read it from their own filesystem (use a URL)",
                    options["config"])
    options["name"] = options["name"] or f"lift-{args.stage}-{secrets.token_hex(3)}"
    app = component.stage_app(args.stage, *args.overrides, **options)
    stage = stagejob.from_app(app, namespace=namespace, secret=args.secret, credentials=args.credentials,
                              shm_size=args.shm_size, queue=args.queue, workload_priority=args.workload_priority)
    if args.api == "trainjob":
        if args.priority_class or args.ttl:
            raise ValueError("--priority-class and --ttl are PyTorchJob options: a TrainJob takes priority from "
                             "--workload-priority (Kueue) and its lifetime from the runtime")
        job = trainjob.render(stage, runtime=args.runtime, service_account=args.service_account)
        errors = trainjob.admission_errors(job)
        operator = "Kubeflow Trainer"
    else:
        job = pytorchjob.render(stage, service_account=args.service_account, priority_class=args.priority_class,
                                ttl_seconds_after_finished=args.ttl)
        errors = pytorchjob.webhook_errors(pytorchjob.to_dict(job))
        operator = "the training operator"
    if errors:
        raise ValueError(f"{operator} would refuse this job: " + "; ".join(errors))
    return job


def _kubeconfig(args: argparse.Namespace) -> Optional[str]:
    # Read at call time: the kubernetes client captures $KUBECONFIG once, when it is imported.
    return args.kubeconfig or os.environ.get("KUBECONFIG") or None


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return args.namespace
    from kubernetes import config as kube_config

    try:
        contexts, current = kube_config.list_kube_config_contexts(config_file=_kubeconfig(args))
    except (kube_config.ConfigException, FileNotFoundError, TypeError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == args.context), current) if args.context else current
    return (chosen or {}).get("context", {}).get("namespace") or "default"


def _client(args: argparse.Namespace, namespace: str):
    from kubeflow.training import TrainingClient
    from kubernetes.config import ConfigException

    try:
        return TrainingClient(config_file=_kubeconfig(args), context=args.context, namespace=namespace)
    except (ConfigException, FileNotFoundError) as e:
        raise ClusterError(f"no usable kube config ({e}); set --kubeconfig/--context or KUBECONFIG") from None


def _create_trainjob(client, job: dict, namespace: str) -> None:
    """POST the TrainJob with the kube config the TrainingClient loaded (its CustomObjectsApi), wrapping API errors
    like the SDK does, so `_sdk` reports them the same way."""
    from kubernetes.client.rest import ApiException

    from lift.launch import trainjob

    try:
        client.custom_api.create_namespaced_custom_object(trainjob.GROUP, trainjob.VERSION, namespace,
                                                          trainjob.PLURAL, job)
    except ApiException as e:
        raise RuntimeError(f"failed to create TrainJob {namespace}/{job['metadata']['name']}") from e


def _sdk(what: str, fn, *a, **kw):
    """Call the SDK, turning its RuntimeError/TimeoutError wrapping into one clear line."""
    try:
        return fn(*a, **kw)
    except (RuntimeError, TimeoutError) as e:
        cause = e.__cause__
        if cause is None or not hasattr(cause, "status"):
            raise ClusterError(f"{what}: {e}") from None
        try:  # the API server's Status object says why in its message
            detail = json.loads(cause.body).get("message") or cause.body
        except (TypeError, ValueError, AttributeError):
            detail = cause.body
        raise ClusterError(f"{what}: {cause.status} {cause.reason}: {detail or ''}".rstrip(": ")) from None


def submit(args: argparse.Namespace) -> None:
    namespace = _namespace(args)
    job = build_job(args, namespace)
    if args.dry_run:
        from lift.launch import pytorchjob, trainjob

        sys.stdout.write(trainjob.to_yaml(job) if args.api == "trainjob" else pytorchjob.to_yaml(job))
        return
    client = _client(args, namespace)
    if args.api == "trainjob":
        name = job["metadata"]["name"]
        _sdk(f"creating TrainJob {namespace}/{name}", _create_trainjob, client, job, namespace)
    else:
        name = job.metadata.name
        _sdk(f"creating PyTorchJob {namespace}/{name}", client.create_job, job=job, namespace=namespace)
    logs.event(log, "submitted", job=name, namespace=namespace, follow=f"lift logs {name} -n {namespace} -f")
    print(name)


def status(args: argparse.Namespace) -> None:
    namespace = _namespace(args)
    client = _client(args, namespace)
    job = _sdk(f"reading PyTorchJob {namespace}/{args.job}", client.get_job, name=args.job, namespace=namespace)
    conditions = (job.status.conditions if job.status else None) or []
    active = [c for c in conditions if c.status == "True"]
    state = active[-1].type if active else "Pending"
    print(f"{namespace}/{args.job}: {state}")
    for c in conditions:
        when = c.last_transition_time.isoformat() if hasattr(c.last_transition_time, "isoformat") else ""
        print(f"  {c.type:<11} {c.status:<5} {when:<25} {c.reason or ''}: {c.message or ''}")
    for rtype, rs in sorted(((job.status.replica_statuses if job.status else None) or {}).items()):
        print(f"  {rtype}: active={rs.active or 0} succeeded={rs.succeeded or 0} failed={rs.failed or 0}")


def logs_(args: argparse.Namespace) -> None:
    namespace = _namespace(args)
    client = _client(args, namespace)
    # Rank 0 runs on the Master pod, or on worker-0 in an elastic job (which has no Master).
    selectors = [{}] if args.all else [{"is_master": True}, {"replica_type": "worker", "replica_index": 0}]
    for selector in selectors:
        pods = _sdk(f"listing pods of {namespace}/{args.job}", client.get_job_pods, name=args.job,
                    namespace=namespace, **selector)
        if pods:
            break
    else:
        raise ClusterError(f"PyTorchJob {namespace}/{args.job} has no pods (yet); see `lift status {args.job}`")
    while args.follow and all(p.status is not None and p.status.phase == "Pending" for p in pods):
        logs.event(log, "waiting for the pods to start", job=args.job)
        time.sleep(5)
        pods = client.get_job_pods(name=args.job, namespace=namespace, **selector)
    selector = {"is_master": False, **selector}
    found, _ = _sdk(f"reading logs of {namespace}/{args.job}", client.get_job_logs, name=args.job,
                    namespace=namespace, follow=args.follow, **selector)
    if not args.follow:  # following prints as it goes ("[Pod NAME]: line")
        for pod, text in sorted(found.items()):
            if len(found) > 1:
                print(f"==> {pod} <==")
            sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def dispatch(args: argparse.Namespace) -> None:
    {"submit": submit, "status": status, "logs": logs_}[args.command](args)
