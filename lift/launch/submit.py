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
CustomObjectsApi and CoreV1Api (their pods are the JobSet's, rank 0 on node 0).

    lift status lift-align-3f9c1a --api trainjob
    lift logs lift-align-3f9c1a --api trainjob --follow
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import secrets
import sys
import threading
import time
import typing
from typing import Callable, List, Optional

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


def _add_api_argument(parser) -> None:
    parser.add_argument("--api", choices=APIS, default="pytorchjob",
                        help="pytorchjob: kubeflow.org/v1 PyTorchJob (training operator v1); trainjob: "
                             "trainer.kubeflow.org/v1alpha1 TrainJob (Kubeflow Trainer v2) (default: pytorchjob)")


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
        _add_api_argument(job)
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

    st = sub.add_parser("status", help="state of a submitted job", description="Print a PyTorchJob's (or "
                        "TrainJob's) state, conditions and replica (child job) counts.")
    st.add_argument("job", metavar="JOB", help="job name (printed by lift submit)")
    _add_api_argument(st)
    _add_cluster_arguments(st)

    lg = sub.add_parser("logs", help="logs of a submitted job", description="Print (or follow) the logs of a "
                        "PyTorchJob's (or TrainJob's) pods: rank 0's by default.")
    lg.add_argument("job", metavar="JOB", help="job name (printed by lift submit)")
    lg.add_argument("-f", "--follow", action="store_true", help="stream until the pods finish")
    lg.add_argument("--all", action="store_true", help="every pod, not only the first node's")
    _add_api_argument(lg)
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


def _sdk(what: str, fn, *a, **kw):
    """Call the SDK or the kubernetes client, turning an API error (the SDK wraps it in RuntimeError/TimeoutError)
    into one clear line."""
    from kubernetes.client.rest import ApiException

    try:
        return fn(*a, **kw)
    except (ApiException, RuntimeError, TimeoutError) as e:
        cause = e if isinstance(e, ApiException) else e.__cause__
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
        from lift.launch import trainjob

        name = job["metadata"]["name"]
        _sdk(f"creating TrainJob {namespace}/{name}", client.custom_api.create_namespaced_custom_object,
             trainjob.GROUP, trainjob.VERSION, namespace, trainjob.PLURAL, job)
    else:
        name = job.metadata.name
        _sdk(f"creating PyTorchJob {namespace}/{name}", client.create_job, job=job, namespace=namespace)
    api = " --api trainjob" if args.api == "trainjob" else ""
    logs.event(log, "submitted", job=name, namespace=namespace, follow=f"lift logs {name}{api} -n {namespace} -f")
    print(name)


def _print_status(namespace: str, name: str, conditions: list[tuple], counts: dict[str, dict], idle: str) -> None:
    """`NAMESPACE/NAME: STATE` (the last condition that holds, else `idle`), one line per condition (type, status,
    time, reason, message) and per replica or child job with its pod counts."""
    active = [c for c in conditions if c[1] == "True"]
    print(f"{namespace}/{name}: {active[-1][0] if active else idle}")
    for kind, state, when, reason, message in conditions:
        print(f"  {kind:<11} {state:<5} {when:<25} {reason or ''}: {message or ''}")
    for group, numbers in sorted(counts.items()):
        print(f"  {group}: " + " ".join(f"{k}={v or 0}" for k, v in numbers.items()))


def status(args: argparse.Namespace) -> None:
    namespace = _namespace(args)
    client = _client(args, namespace)
    if args.api == "trainjob":
        from lift.launch import trainjob

        job = _sdk(f"reading TrainJob {namespace}/{args.job}", client.custom_api.get_namespaced_custom_object,
                   trainjob.GROUP, trainjob.VERSION, namespace, trainjob.PLURAL, args.job)
        state = job.get("status") or {}
        conditions = [(c["type"], c["status"], c.get("lastTransitionTime", ""), c.get("reason"), c.get("message"))
                      for c in state.get("conditions") or []]
        counts = {j["name"]: {k: j.get(k) for k in ("active", "ready", "succeeded", "failed", "suspended")}
                  for j in state.get("jobsStatus") or []}
        idle = "Suspended" if (job.get("spec") or {}).get("suspend") else "Pending"
        _print_status(namespace, args.job, conditions, counts, idle)
        return
    job = _sdk(f"reading PyTorchJob {namespace}/{args.job}", client.get_job, name=args.job, namespace=namespace)
    conditions = [(c.type, c.status, getattr(c.last_transition_time, "isoformat", lambda: "")(), c.reason, c.message)
                  for c in (job.status.conditions if job.status else None) or []]
    counts = {rtype: {"active": rs.active, "succeeded": rs.succeeded, "failed": rs.failed}
              for rtype, rs in ((job.status.replica_statuses if job.status else None) or {}).items()}
    _print_status(namespace, args.job, conditions, counts, "Pending")


def _print_logs(found: dict[str, str]) -> None:
    for pod, text in sorted(found.items()):
        if len(found) > 1:
            print(f"==> {pod} <==")
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def _trainjob_logs(args: argparse.Namespace, client, namespace: str) -> None:
    """Rank 0 runs on node 0: the pod of completion index 0 of the JobSet's `node` job (the TrainJob's name)."""
    from lift.launch import trainjob

    selector = (f"jobset.sigs.k8s.io/jobset-name={args.job},"
                f"jobset.sigs.k8s.io/replicatedjob-name={trainjob.REPLICATED_JOB}")
    if not args.all:
        selector += ",batch.kubernetes.io/job-completion-index=0"

    def pods() -> list:
        return _sdk(f"listing pods of {namespace}/{args.job}", client.core_api.list_namespaced_pod, namespace,
                    label_selector=selector).items

    found = pods()
    if not found:
        raise ClusterError(f"TrainJob {namespace}/{args.job} has no pods (yet); "
                           f"see `lift status {args.job} --api trainjob`")
    names = sorted(p.metadata.name for p in found)
    if not args.follow:
        _print_logs({name: _sdk(f"reading logs of {namespace}/{name}", client.core_api.read_namespaced_pod_log,
                                name, namespace, container=trainjob.CONTAINER) for name in names})
        return
    _wait_for_start(args.job, found, pods)
    _follow(client.core_api, names, namespace, trainjob.CONTAINER)


def _wait_for_start(job: str, pods: list, list_pods: Callable[[], list]) -> None:
    """Return once one of the job's pods has left Pending (a pod's log can be followed only then)."""
    while all(p.status is not None and p.status.phase == "Pending" for p in pods):
        logs.event(log, "waiting for the pods to start", job=job)
        time.sleep(5)
        pods = list_pods()


def _follow(core, names: list[str], namespace: str, container: str) -> None:
    """Stream each pod's log until its container ends; lines are prefixed `[Pod NAME]: ` when there are several
    pods, as the kubeflow-training SDK prints a PyTorchJob's."""
    from kubernetes import watch

    lock = threading.Lock()

    def stream(name: str) -> None:
        for line in watch.Watch().stream(core.read_namespaced_pod_log, name=name, namespace=namespace,
                                         container=container):
            with lock:
                print(f"[Pod {name}]: {line}" if len(names) > 1 else line, flush=True)

    threads = [threading.Thread(target=stream, args=(name,), daemon=True) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def logs_(args: argparse.Namespace) -> None:
    namespace = _namespace(args)
    client = _client(args, namespace)
    if args.api == "trainjob":
        _trainjob_logs(args, client, namespace)
        return
    # Rank 0 runs on the Master pod, or on worker-0 in an elastic job (which has no Master).
    selectors = [{}] if args.all else [{"is_master": True}, {"replica_type": "worker", "replica_index": 0}]
    for selector in selectors:
        pods = _sdk(f"listing pods of {namespace}/{args.job}", client.get_job_pods, name=args.job,
                    namespace=namespace, **selector)
        if pods:
            break
    else:
        raise ClusterError(f"PyTorchJob {namespace}/{args.job} has no pods (yet); see `lift status {args.job}`")
    if args.follow:
        _wait_for_start(args.job, pods, lambda: client.get_job_pods(name=args.job, namespace=namespace, **selector))
    selector = {"is_master": False, **selector}
    found, _ = _sdk(f"reading logs of {namespace}/{args.job}", client.get_job_logs, name=args.job,
                    namespace=namespace, follow=args.follow, **selector)
    if not args.follow:  # following prints as it goes ("[Pod NAME]: line")
        _print_logs(found)


def dispatch(args: argparse.Namespace) -> None:
    {"submit": submit, "status": status, "logs": logs_}[args.command](args)
