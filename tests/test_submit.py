"""`lift submit` / `lift status` / `lift logs`: the PyTorchJob and the Trainer v2 TrainJob derived from the component
AppDef, validated like the chart's (strict CRD schemas, webhook and CEL rules, SDK models, core pod schema,
hardening), and the API requests made for each, recorded by a loopback API server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from checkov_scan import TRAINER_RUNTIME_FILE, accepted, describe, pods_from_job, run_checkov
from k8s_schemas import (
    assert_valid_pod,
    assert_valid_pytorchjob,
    crd_errors,
    trainer_errors,
    trainjob_pod,
    write_network_policies,
)

from lift import cli
from lift.launch import component, hardening, pytorchjob, stagejob, trainjob

pytestmark = pytest.mark.filterwarnings("ignore:HTTPResponse.getheaders:DeprecationWarning")
NAME = "lift-align-test"


def _flag(argv, *flags: str) -> list[str]:
    """Insert flags before `--` (everything after it is an override)."""
    argv = list(argv)
    at = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:at], *flags, *argv[at:]]


def _dry_run(capsys, *argv: str) -> dict:
    assert cli.main(["submit", *_flag(argv, "--dry-run")]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _containers(job: dict) -> dict[str, dict]:
    replicas = job["spec"]["pytorchReplicaSpecs"]
    return {rtype: spec["template"]["spec"]["containers"][0] for rtype, spec in replicas.items()}


CASES = {
    "cpu-one-node": (["align", "--name", NAME, "--", "run=s3://b/run"], {"Master": 1}),
    "gpu-4x8-secret": (["align", "--name", NAME, "-j", "4x8", "--gpu", "8", "--cpu", "64", "--memMB", "480000",
                        "--secret", "lift-s3", "--endpoint", "http://minio:9000", "--service-account", "lift",
                        "--shm-size", "64Gi", "--priority-class", "training", "--ttl", "86400", "--max_retries", "3",
                        "--", "run=s3://b/run", "trainer.lr=1e-5"], {"Master": 1, "Worker": 3}),
    "elastic": (["critic", "--name", "lift-critic-el", "-j", "2:4x8", "--gpu", "8", "--max_restarts", "3", "--",
                 "run=s3://b/run"], {"Worker": 4}),
    "data": (["data", "--name", "lift-data-x", "-j", "1x1", "--", "toy", "s3://b/run/data", "toy.num_clips=20"],
             {"Master": 1}),
    "named-resource-pvc": (["critic-eval", "--name", "lift-ce", "-h", "gpu.xlarge", "-j", "1x8", "--mounts",
                            "type=volume,src=lift-runs,dst=/runs,readonly", "--", "run=/runs/r1"], {"Master": 1}),
}


@pytest.mark.parametrize("case", CASES)
def test_dry_run_is_a_valid_pytorchjob(case, capsys):
    argv, replicas = CASES[case]
    job = _dry_run(capsys, *argv)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert {k: v["replicas"] for k, v in job["spec"]["pytorchReplicaSpecs"].items()} == replicas
    assert_valid_pytorchjob(job)
    for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
        assert_valid_pod(spec["template"], name=f"{job['metadata']['name']}-{rtype.lower()}-0")


@pytest.mark.parametrize("case", CASES)
def test_dry_run_passes_the_strict_crd_schema(case, capsys):
    assert crd_errors(_dry_run(capsys, *CASES[case][0])) == []


def test_without_the_crd_only_that_check_is_skipped_with_a_reason(monkeypatch, tmp_path):
    import k8s_schemas

    monkeypatch.setattr(k8s_schemas, "CRD", tmp_path / "absent.yaml")
    with pytest.raises(pytest.skip.Exception, match="PyTorchJob CRD schema is not at"):
        k8s_schemas.crd_errors({})


def test_pods_are_hardened_and_credentials_come_from_the_secret(capsys):
    job = _dry_run(capsys, *CASES["gpu-4x8-secret"][0])
    text = yaml.safe_dump(job)
    for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
        pod = spec["template"]["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                          "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
        assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "lift"
        assert pod["priorityClassName"] == "training"
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
        assert volumes["tmp"]["emptyDir"] == {} and volumes["cache"]["emptyDir"] == {}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts == {"/dev/shm": "dshm", "/tmp": "tmp", f"{hardening.HOME}/.cache": "cache",
                          stagejob.CREDENTIALS_DIR: "credentials"}
        assert c["resources"]["requests"] == c["resources"]["limits"] == {
            "cpu": "64", "memory": "480000Mi", "nvidia.com/gpu": "8"}
        assert c["name"] == "pytorch" and c["ports"] == [
            {"name": "pytorchjob-port", "containerPort": 29500, "protocol": "TCP"}]
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
        # The Secret as read-only files (the default), the SDKs pointed at them; no credential in a variable.
        assert volumes["credentials"]["secret"] == {"secretName": "lift-s3", "defaultMode": 0o440}
        assert env["AWS_SHARED_CREDENTIALS_FILE"]["value"] == f"{stagejob.CREDENTIALS_DIR}/credentials"
        assert env["HF_TOKEN_PATH"]["value"] == f"{stagejob.CREDENTIALS_DIR}/HF_TOKEN"
        assert not any("valueFrom" in e for e in env.values())
        assert spec["restartPolicy"] == "OnFailure"
    run = job["spec"]["runPolicy"]
    assert run == {"backoffLimit": 3, "cleanPodPolicy": "None", "ttlSecondsAfterFinished": 86400}
    assert "testing-secret" not in text


def test_the_job_runs_the_components_command(capsys):
    """Derived, not redefined: the container runs the AppDef's `lift ...` argv under torchrun with its layout."""
    argv, _ = CASES["gpu-4x8-secret"]
    job = _dry_run(capsys, *argv)
    app = component.stage_app("align", "run=s3://b/run", "trainer.lr=1e-5", name=NAME, j="4x8", gpu=8)
    lift_argv = component.torchrun_argv(app.roles[0])
    lift_argv = lift_argv[lift_argv.index("-m"):]
    assert job["spec"]["nprocPerNode"] == "8"
    for c in _containers(job).values():
        assert c["command"] == ["torchrun"] and c["image"] == component.DEFAULT_IMAGE
        args = c["args"]
        assert args[args.index("-m"):] == lift_argv
        assert args[:args.index("-m")] == ["--nnodes", "4", "--nproc_per_node", "8", "--max_restarts", "0",
                                           "--node_rank", "$(RANK)", "--master_addr", "$(MASTER_ADDR)",
                                           "--master_port", "$(MASTER_PORT)"]


def test_elastic_job_uses_the_operators_rendezvous(capsys):
    job = _dry_run(capsys, *CASES["elastic"][0])
    assert job["spec"]["elasticPolicy"] == {"maxReplicas": 4, "maxRestarts": 3, "minReplicas": 2,
                                            "rdzvBackend": "c10d", "rdzvId": "lift-critic-el"}
    (c,) = _containers(job).values()
    assert c["args"][:c["args"].index("-m")] == [
        "--nnodes", "2:4", "--nproc_per_node", "8", "--max_restarts", "3", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", "$(PET_RDZV_ENDPOINT)", "--rdzv_id", "lift-critic-el"]


def test_data_runs_one_process_by_default(capsys):
    job = _dry_run(capsys, "data", "--name", "lift-d", "--", "toy", "s3://b/run/data")
    assert job["spec"]["nprocPerNode"] == "1" and list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    (c,) = _containers(job).values()
    assert c["args"][c["args"].index("-m"):] == ["-m", "lift", "data", "toy", "s3://b/run/data"]


def test_literal_dollar_parens_stay_literal(capsys):
    job = _dry_run(capsys, "score", "--name", "lift-s", "--", "out=s3://b/$(x)")
    (c,) = _containers(job).values()
    assert c["args"][-1] == "out=s3://b/$$(x)"


def test_named_resource_and_pvc(capsys):
    job = _dry_run(capsys, *CASES["named-resource-pvc"][0])
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "64", "memory": "262144Mi", "nvidia.com/gpu": "8"}
    assert {"name": "mount-0", "persistentVolumeClaim": {"claimName": "lift-runs"}} in pod["volumes"]
    assert {"name": "mount-0", "mountPath": "/runs", "readOnly": True} in pod["containers"][0]["volumeMounts"]


@pytest.mark.parametrize("argv, message", [
    (["align", "--", "trainer.lrr=1"], "unknown config key 'trainer.lrr'"),
    (["align", "--name", "Lift_Align"], "DNS-1035"),
    (["align", "--mounts", "type=bind,src=/etc,dst=/x"], "only persistent volume claims"),
    (["align", "--env", "AWS_SECRET_ACCESS_KEY=x"], "credentials must not be passed"),
    (["align", "-j", "2y8"], "-j must look like"),
])
def test_bad_submissions_fail_before_anything_is_sent(argv, message, capsys):
    assert cli.main(["submit", *_flag(argv, "--dry-run")]) != 0
    err = capsys.readouterr().err
    assert message in err and err.startswith("lift: ") and "Traceback" not in err


def test_dry_run_pods_pass_the_security_scanner(tmp_path, capsys):
    """The pods the operator makes from every case's replica templates, and the pod Trainer makes of the case's
    TrainJob, through checkov, with only the project's accepted findings (the same list as the chart's)."""
    pods, trainer_pods = [], []
    for case, (argv, _) in CASES.items():
        pods += pods_from_job(_dry_run(capsys, *_flag(argv, "-n", "lift")))
        job = _dry_run(capsys, *_as_trainjob(argv, "-n", "lift"))
        # the pod Trainer makes of the TrainJob on its torch-distributed runtime
        pod = trainjob_pod(job, {})
        name = f"{job['metadata']['name']}-node-0-0"
        trainer_pods.append({"apiVersion": "v1", "kind": "Pod", "spec": pod["spec"],
                             "metadata": {"name": name, "namespace": "lift", **pod["metadata"]}})
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(pods))
    (tmp_path / f"trainjobs{TRAINER_RUNTIME_FILE}").write_text(yaml.safe_dump_all(trainer_pods))
    write_network_policies(tmp_path, "lift")
    failed = run_checkov([tmp_path])
    unexpected = [f for f in failed if not accepted(f)]
    assert not unexpected, "checkov findings:\n" + describe(unexpected)


def test_credentials_as_environment_variables_on_request(capsys):
    job = _dry_run(capsys, *_flag(CASES["gpu-4x8-secret"][0], "--credentials", "env"))
    for c in _containers(job).values():
        env = {e["name"]: e for e in c["env"]}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN"):
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "lift-s3" and ref["key"] == key and "value" not in env[key]
        assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
        assert "optional" not in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
        assert "AWS_SHARED_CREDENTIALS_FILE" not in env and stagejob.CREDENTIALS_DIR not in str(c["volumeMounts"])


# --------------------------------------------------------------------------------------------- TrainJob
def _as_trainjob(argv, *flags: str) -> list[str]:
    """A case's arguments for `--api trainjob`, without the PyTorchJob-only --priority-class and --ttl."""
    argv = list(argv)
    for flag in ("--priority-class", "--ttl"):
        if flag in argv:
            del argv[argv.index(flag):argv.index(flag) + 2]
    return _flag(argv, "--api", "trainjob", *flags)


def test_pytorchjob_only_options_are_refused_for_a_trainjob(capsys):
    assert cli.main(["submit", *_flag(CASES["gpu-4x8-secret"][0], "--api", "trainjob", "--dry-run")]) != 0
    assert "--priority-class and --ttl are PyTorchJob options" in capsys.readouterr().err


@pytest.mark.parametrize("case", CASES)
def test_trainjob_dry_run_is_valid_and_runs_the_pytorchjobs_stage(case, capsys):
    """`--api trainjob` renders the same stage job: strict v2.3.0 CRD schema and CEL rules, and the pod Trainer
    makes of it (torch-distributed runtime + patches + trainer) is the PyTorchJob's hardened pod."""
    argv, replicas = CASES[case]
    job = _dry_run(capsys, *_as_trainjob(argv))
    pytorch = _dry_run(capsys, *argv)
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert trainer_errors(job) == [] and trainjob.admission_errors(job) == []
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                         "name": "torch-distributed"}
    assert job["spec"]["trainer"]["numNodes"] == sum(replicas.values())
    pod = trainjob_pod(job, {})
    assert_valid_pod(pod, name=f"{job['metadata']['name']}-node-0-0")
    (theirs,) = pod["spec"]["containers"]
    ours = next(iter(pytorch["spec"]["pytorchReplicaSpecs"].values()))["template"]
    mine = ours["spec"]["containers"][0]
    for key in ("image", "env", "resources", "securityContext", "volumeMounts"):
        assert theirs[key] == mine[key], key
    for key in ("securityContext", "serviceAccountName", "volumes", "nodeSelector"):
        assert pod["spec"].get(key) == ours["spec"].get(key), key
    # the same `lift ...` command after torchrun's flags
    assert theirs["args"][theirs["args"].index("-m"):] == mine["args"][mine["args"].index("-m"):]
    assert job["metadata"]["labels"] == pytorch["metadata"]["labels"]


def test_trainjob_rendezvous_static_and_elastic(capsys):
    static = _dry_run(capsys, *_as_trainjob(CASES["gpu-4x8-secret"][0]))["spec"]["trainer"]
    assert static["args"][:8] == ["--nnodes", "$(PET_NNODES)", "--node_rank", "$(PET_NODE_RANK)", "--master_addr",
                                  "$(PET_MASTER_ADDR)", "--master_port", "$(PET_MASTER_PORT)"]
    assert (static["numNodes"], static["numProcPerNode"]) == (4, 8)
    elastic = _dry_run(capsys, *_as_trainjob(CASES["elastic"][0]))["spec"]["trainer"]
    assert elastic["numNodes"] == 4 and elastic["args"][:8] == [
        "--rdzv_backend", "c10d", "--rdzv_endpoint", "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)", "--rdzv_id",
        "lift-critic-el", "--nnodes", "2:4"]
    from torch.distributed.run import get_args_parser

    run = get_args_parser().parse_args(elastic["args"])
    assert (run.nnodes, run.rdzv_backend, run.max_restarts, run.module) == ("2:4", "c10d", 3, True)


def test_strict_trainer_crd_rejects_a_misspelt_field(capsys):
    job = _dry_run(capsys, *_as_trainjob(CASES["gpu-4x8-secret"][0]))
    job["spec"]["trainer"]["resourcesPerNod"] = {}
    job["spec"]["runtimeRef"]["kindd"] = "ClusterTrainingRuntime"
    errors = trainer_errors(job)
    assert any("resourcesPerNod" in e for e in errors) and any("kindd" in e for e in errors), errors


@pytest.mark.parametrize("api", ["pytorchjob", "trainjob"])
def test_queue_labels_the_job_and_creates_it_suspended(api, capsys):
    argv = _as_trainjob(CASES["gpu-4x8-secret"][0]) if api == "trainjob" else CASES["gpu-4x8-secret"][0]
    job = _dry_run(capsys, *_flag(argv, "--queue", "team-a", "--workload-priority", "batch-low"))
    labels = job["metadata"]["labels"]
    assert (labels[stagejob.QUEUE_LABEL], labels[stagejob.PRIORITY_LABEL]) == ("team-a", "batch-low")
    assert (job["spec"]["suspend"] if api == "trainjob" else job["spec"]["runPolicy"]["suspend"]) is True
    assert "kueue.x-k8s.io" not in yaml.safe_dump(pod_of(job)["metadata"])
    plain = _dry_run(capsys, *argv)
    assert "suspend" not in (plain["spec"] if api == "trainjob" else plain["spec"]["runPolicy"])


def pod_of(job: dict) -> dict:
    if job["kind"] == "TrainJob":
        return job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
            "template"]["spec"]["template"]
    return next(iter(job["spec"]["pytorchReplicaSpecs"].values()))["template"]


# --------------------------------------------------------------------------------------------- webhook / schema
def _valid_job(capsys) -> dict:
    return _dry_run(capsys, *CASES["gpu-4x8-secret"][0])


@pytest.mark.parametrize("mutate, message", [
    (lambda j: j["metadata"].update(name="9-bad"), "DNS-1035"),
    (lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "Master must have exactly 1 replica"),
    (lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(name="main"),
     "no container named 'pytorch'"),
    (lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0].pop("image"),
     "has no image"),
    (lambda j: (j["spec"].update(elasticPolicy={"minReplicas": 1}), j["spec"]["pytorchReplicaSpecs"].pop("Worker")),
     "elasticPolicy requires a Worker"),
])
def test_webhook_rules(mutate, message, capsys):
    job = _valid_job(capsys)
    mutate(job)
    assert any(message in e for e in pytorchjob.webhook_errors(job))


def test_strict_crd_schema_rejects_a_misspelt_field(capsys):
    job = _valid_job(capsys)
    job["spec"]["runPolicy"]["backofLimit"] = 3
    errors = crd_errors(job)
    assert any("backofLimit" in e for e in errors), errors


# --------------------------------------------------------------------------------------------- loopback API
class FakeAPI(ThreadingHTTPServer):
    """Records every request; answers from `responses` (method, path) -> (status, body)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.responses: dict[tuple[str, str], tuple[int, object]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, method: str):
        parsed = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append({"method": method, "path": parsed.path, "query": parse_qs(parsed.query),
                                     "body": body, "auth": self.headers.get("Authorization")})
        status, answer = self.server.responses.get((method, parsed.path), (404, {"kind": "Status", "code": 404}))
        if callable(answer):
            answer = answer(body)
        data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")


@pytest.fixture
def api(tmp_path, monkeypatch):
    server = FakeAPI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "loop", "cluster": {"server": server.url}}],
        "users": [{"name": "me", "user": {"token": "loopback-token"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "loop", "user": "me", "namespace": "team-a"}},
                     {"name": "other", "context": {"cluster": "loop", "user": "me", "namespace": "team-b"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield server
    server.shutdown()
    server.server_close()


JOBS = "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs"


def test_submit_posts_the_job_to_the_current_context_namespace(api, capsys):
    api.responses[("POST", JOBS.format(ns="team-a"))] = (201, lambda body: body)
    argv = CASES["gpu-4x8-secret"][0]
    assert cli.main(["submit", *argv]) == 0
    assert capsys.readouterr().out.strip() == NAME
    (request,) = api.requests
    assert (request["method"], request["path"]) == ("POST", JOBS.format(ns="team-a"))
    assert request["auth"] == "Bearer loopback-token"
    body = request["body"]
    assert body["metadata"] == {"name": NAME, "namespace": "team-a", "labels": {
        "app.kubernetes.io/name": "lift", "app.kubernetes.io/instance": NAME, "app.kubernetes.io/component": "align",
        "app.kubernetes.io/managed-by": "lift-submit"}}
    assert_valid_pytorchjob(body)
    # what was sent is exactly what --dry-run prints for the same arguments (namespace included)
    assert _dry_run(capsys, *argv) == body
    master = body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert master["args"][-4:] == ["lift", "align", "run=s3://b/run", "trainer.lr=1e-5"]


TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"


def test_submit_posts_the_trainjob(api, capsys):
    api.responses[("POST", TRAINJOBS.format(ns="team-a"))] = (201, lambda body: body)
    argv = _as_trainjob(CASES["gpu-4x8-secret"][0], "--queue", "gpu")
    assert cli.main(["submit", *argv]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == NAME and f"lift logs {NAME} --api trainjob -n team-a -f" in printed.err
    (request,) = api.requests
    assert (request["method"], request["path"]) == ("POST", TRAINJOBS.format(ns="team-a"))
    assert request["auth"] == "Bearer loopback-token"
    body = request["body"]
    assert body["metadata"]["namespace"] == "team-a" and body["spec"]["suspend"] is True
    assert trainer_errors(body) == []
    assert _dry_run(capsys, *argv) == body  # what was sent is what --dry-run prints


def test_submit_trainjob_refused_by_the_cluster_is_one_line(api, capsys):
    api.responses[("POST", TRAINJOBS.format(ns="team-a"))] = (404, {
        "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
        "message": "the server could not find the requested resource"})
    assert cli.main(["submit", "align", "--name", NAME, "--api", "trainjob"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lift: error: creating TrainJob team-a/{NAME}: 404")
    assert "could not find the requested resource" in err[-1]


def test_submit_honours_context_and_namespace_flags(api, capsys):
    for ns in ("team-b", "ml"):
        api.responses[("POST", JOBS.format(ns=ns))] = (201, lambda body: body)
    assert cli.main(["submit", "score", "--name", "s1", "--context", "other"]) == 0
    assert cli.main(["submit", "score", "--name", "s2", "--context", "other", "-n", "ml"]) == 0
    assert [r["path"] for r in api.requests] == [JOBS.format(ns="team-b"), JOBS.format(ns="ml")]
    assert [r["body"]["metadata"]["namespace"] for r in api.requests] == ["team-b", "ml"]
    capsys.readouterr()


def test_submit_refused_by_the_cluster_is_one_line(api, capsys):
    api.responses[("POST", JOBS.format(ns="team-a"))] = (409, {
        "kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409,
        "message": f'pytorchjobs.kubeflow.org "{NAME}" already exists'})
    assert cli.main(["submit", "align", "--name", NAME]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lift: error: creating PyTorchJob team-a/{NAME}: 409")
    assert "already exists" in err[-1] and not any("Traceback" in line for line in err)


def test_submit_without_a_cluster_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli.main(["submit", "align", "--name", NAME]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lift: error: no usable kube config") and "Traceback" not in err


def test_status_reads_the_job(api, capsys):
    job = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": NAME, "namespace": "team-a"},
           "spec": {"pytorchReplicaSpecs": {}, "runPolicy": {"cleanPodPolicy": "None"}},
           "status": {"conditions": [
               {"type": "Created", "status": "True", "reason": "PyTorchJobCreated", "message": "created",
                "lastTransitionTime": "2026-11-25T10:00:00Z"},
               {"type": "Running", "status": "True", "reason": "PyTorchJobRunning", "message": "running",
                "lastTransitionTime": "2026-11-25T10:01:00Z"}],
               "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 3}}}}
    api.responses[("GET", f"{JOBS.format(ns='team-a')}/{NAME}")] = (200, job)
    assert cli.main(["status", NAME]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"team-a/{NAME}: Running"
    assert any(line.split()[:2] == ["Running", "True"] for line in out)
    assert "  Worker: active=3 succeeded=0 failed=0" in out


def test_status_of_a_missing_job_is_one_line(api, capsys):
    assert cli.main(["status", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lift: error: reading PyTorchJob team-a/nope: 404") and "\n" not in err


def _pod(name: str, role: str, index: int, phase: str = "Running") -> dict:
    return {"metadata": {"name": name, "namespace": "team-a", "labels": {
        "training.kubeflow.org/job-name": NAME, "training.kubeflow.org/replica-type": role,
        "training.kubeflow.org/replica-index": str(index)}}, "status": {"phase": phase}}


def test_logs_print_rank_zeros_pod(api, capsys):
    pods = "/api/v1/namespaces/team-a/pods"
    api.responses[("GET", pods)] = (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                          "items": [_pod(f"{NAME}-master-0", "master", 0)]})
    api.responses[("GET", f"{pods}/{NAME}-master-0/log")] = (200, "step 1 loss=0.5\nstep 2 loss=0.4\n")
    assert cli.main(["logs", NAME]) == 0
    assert capsys.readouterr().out == "step 1 loss=0.5\nstep 2 loss=0.4\n"
    listing, read = api.requests[0], api.requests[-1]
    assert read["path"].endswith("/log")
    selector = listing["query"]["labelSelector"][0]
    assert f"training.kubeflow.org/job-name={NAME}" in selector and "job-role=master" in selector
    assert read["query"]["container"] == ["pytorch"]


def test_logs_of_a_job_without_pods_is_one_line(api, capsys):
    api.responses[("GET", "/api/v1/namespaces/team-a/pods")] = (200, {"kind": "PodList", "apiVersion": "v1",
                                                                       "metadata": {}, "items": []})
    assert cli.main(["logs", NAME]) == 1
    assert "has no pods (yet)" in capsys.readouterr().err


def test_trainjob_status_reads_its_conditions_and_child_jobs(api, capsys):
    job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
           "metadata": {"name": NAME, "namespace": "team-a"}, "spec": {"suspend": False},
           "status": {"conditions": [
               {"type": "Suspended", "status": "False", "reason": "Resumed", "message": "admitted by Kueue",
                "lastTransitionTime": "2026-11-25T10:00:00Z"},
               {"type": "Complete", "status": "True", "reason": "JobSetCompleted", "message": "jobset completed",
                "lastTransitionTime": "2026-11-25T12:00:00Z"}],
               "jobsStatus": [{"name": "node", "active": 0, "ready": 0, "succeeded": 1, "failed": 0,
                               "suspended": 0}]}}
    api.responses[("GET", f"{TRAINJOBS.format(ns='team-a')}/{NAME}")] = (200, job)
    assert cli.main(["status", NAME, "--api", "trainjob"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"team-a/{NAME}: Complete"
    assert out[1].split()[:3] == ["Suspended", "False", "2026-11-25T10:00:00Z"] and "admitted by Kueue" in out[1]
    assert out[-1] == "  node: active=0 ready=0 succeeded=1 failed=0 suspended=0"
    queued = {**job, "spec": {"suspend": True}, "status": {}}
    api.responses[("GET", f"{TRAINJOBS.format(ns='team-a')}/{NAME}")] = (200, queued)
    assert cli.main(["status", NAME, "--api", "trainjob"]) == 0
    assert capsys.readouterr().out == f"team-a/{NAME}: Suspended\n", "waiting for Kueue to admit it"
    assert cli.main(["status", "nope", "--api", "trainjob"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lift: error: reading TrainJob team-a/nope: 404") and "\n" not in err


def _node_pod(index: int) -> dict:
    return {"metadata": {"name": f"{NAME}-node-0-{index}-x", "namespace": "team-a", "labels": {
        "jobset.sigs.k8s.io/jobset-name": NAME, "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "batch.kubernetes.io/job-completion-index": str(index)}}, "status": {"phase": "Running"}}


@pytest.mark.parametrize("follow", [False, True])
def test_trainjob_logs_read_node_zeros_pod_or_every_pod(follow, api, capsys):
    pods = "/api/v1/namespaces/team-a/pods"
    for i in range(2):
        api.responses[("GET", f"{pods}/{NAME}-node-0-{i}-x/log")] = (200, f"rank {2 * i} step 1\nrank {2 * i} done\n")
    flags = ["--api", "trainjob", *(["-f"] if follow else [])]

    def listing(*indices):
        api.responses[("GET", pods)] = (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                              "items": [_node_pod(i) for i in indices]})

    listing(0)
    assert cli.main(["logs", NAME, *flags]) == 0
    assert capsys.readouterr().out == "rank 0 step 1\nrank 0 done\n"
    selector = api.requests[0]["query"]["labelSelector"][0].split(",")
    assert sorted(selector) == ["batch.kubernetes.io/job-completion-index=0", f"jobset.sigs.k8s.io/jobset-name={NAME}",
                                "jobset.sigs.k8s.io/replicatedjob-name=node"]
    read = api.requests[-1]
    assert read["query"]["container"] == ["node"] and read["query"].get("follow") == (["True"] if follow else None)

    listing(0, 1)
    api.requests.clear()
    assert cli.main(["logs", NAME, "--all", *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "batch.kubernetes.io/job-completion-index" not in api.requests[0]["query"]["labelSelector"][0]
    if follow:  # two streams at once: each pod's lines in order, prefixed with its pod
        for i in range(2):
            assert [x for x in out if f"-{i}-x]" in x] == [f"[Pod {NAME}-node-0-{i}-x]: rank {2 * i} step 1",
                                                          f"[Pod {NAME}-node-0-{i}-x]: rank {2 * i} done"]
    else:
        assert out == [f"==> {NAME}-node-0-0-x <==", "rank 0 step 1", "rank 0 done",
                       f"==> {NAME}-node-0-1-x <==", "rank 2 step 1", "rank 2 done"]

    listing()
    assert cli.main(["logs", NAME, *flags]) == 1
    assert f"TrainJob team-a/{NAME} has no pods (yet); see `lift status {NAME} --api trainjob`" in \
        capsys.readouterr().err


def test_submit_help_lists_the_component_options(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["submit", "align", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("-j", "-h", "--gpu", "--memMB", "--image", "--config", "--secret", "--dry-run", "--namespace"):
        assert f" {flag} " in out or f" {flag}," in out or f"  {flag}" in out, flag
