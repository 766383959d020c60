"""Offline security scan of Kubernetes objects with checkov, shared by the chart, manifest and TorchX tests.

checkov lives in its own virtual environment (scripts/setup-checkov.sh -> .venv-checkov/; it pins old boto
releases) and runs as a subprocess with --skip-download, so nothing leaves the machine. It does not know
PyTorchJobs (or Volcano Jobs): `pods_from_job` takes each replica's pod template out and wraps it into the bare
Pod the operator would create from it, which checkov scans with all its pod and container checks.

CHECKOV_SKIPS is the one list of accepted findings, each with its reason; anything else that fails is a test
failure. Where checkov is missing, tests skip, except under CI (the CI variable set), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# check id -> why the finding is accepted (one line each).
CHECKOV_SKIPS: dict[str, str] = {
    "CKV_K8S_8": "liveness probe: training pods run to completion and serve nothing to probe; a hung collective "
                 "ends on the process-group timeout (checkov exempts Jobs for the same reason).",
    "CKV_K8S_9": "readiness probe: no Service routes traffic to training pods; torchrun's rendezvous is their "
                 "readiness.",
    "CKV_K8S_43": "image digest: the default pins an immutable release tag (appVersion); image.digest pins by "
                  "digest and passes (tests/chart_values/multinode-gpu.yaml).",
}
# Accepted in addition for the pods of TrainJobs on Trainer's own torch-distributed ClusterTrainingRuntime, scanned
# from files named *TRAINER_RUNTIME_FILE: what that runtime's pod lacks and Trainer v2.3.0's runtime patches cannot
# set (a container patch takes only env, securityContext and volumeMounts). Neither occurs on the chart's own
# runtime (trainJob.runtime.create), whose pods are scanned under CHECKOV_SKIPS alone.
TRAINER_RUNTIME_FILE = "-on-trainer-runtime.yaml"
TRAINER_RUNTIME_SKIPS: dict[str, str] = {
    "CKV_K8S_38": "service account token: a patch cannot set automountServiceAccountToken; the chart's ServiceAccount "
                  "mounts none (serviceAccount.automountToken false), and `lift submit --service-account` names one.",
    "CKV_K8S_15": "image pull policy: a patch cannot set it; the kubelet pulls a tag it does not have, and a digest "
                  "(image.digest, --image REPO@sha256:...) pins what runs.",
}


def accepted(finding: dict) -> bool:
    """A finding in CHECKOV_SKIPS, or in TRAINER_RUNTIME_SKIPS from a file of torch-distributed TrainJob pods."""
    return finding["check_id"] in CHECKOV_SKIPS or (
        finding["file_path"].endswith(TRAINER_RUNTIME_FILE) and finding["check_id"] in TRAINER_RUNTIME_SKIPS)


def find_checkov() -> str | None:
    """$LIFT_CHECKOV when set (a path or a command on PATH), else the repo's .venv-checkov/bin/checkov, else None."""
    candidate = os.environ.get("LIFT_CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    return shutil.which(candidate)


def require_checkov() -> str:
    """The checkov executable; skips the test when absent, but fails it under CI, which installs checkov."""
    exe = find_checkov()
    if exe is None:
        reason = ("checkov not found: run `bash scripts/setup-checkov.sh` (installs .venv-checkov/) or set "
                  "LIFT_CHECKOV to the executable")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it", pytrace=False)
        pytest.skip(reason)
    return exe


def pods_from_job(job: dict, replica_specs: str = "pytorchReplicaSpecs") -> list[dict]:
    """One bare Pod per replica type of a job: the pod its operator creates from the template. `replica_specs` names
    the field under spec: a map of replica type -> spec (PyTorchJob's pytorchReplicaSpecs) or a list of specs with
    a `name` (Volcano Job's tasks)."""
    specs = job["spec"][replica_specs]
    if isinstance(specs, list):
        specs = {spec["name"]: spec for spec in specs}
    pods = []
    for replica, spec in specs.items():
        template = spec["template"]
        meta = template.get("metadata", {})
        pods.append({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job['metadata']['name']}-{replica.lower()}-0",
                "namespace": job["metadata"].get("namespace", "default"),
                "labels": meta.get("labels", {}),
                "annotations": meta.get("annotations", {}),
            },
            "spec": template["spec"],
        })
    return pods


def run_checkov(paths: list[Path], timeout: float = 300) -> list[dict]:
    """Scan files or folders of Kubernetes YAML offline; returns checkov's failed checks (dicts), none skipped."""
    exe = require_checkov()
    cmd = [exe, "--framework", "kubernetes", "--skip-download", "--output", "json", "--compact", "--quiet"]
    for path in paths:
        cmd += ["--directory" if Path(path).is_dir() else "--file", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 1):  # 1 means "some check failed"; anything else is checkov itself failing
        raise RuntimeError(f"checkov exited {proc.returncode}: {proc.stderr[-2000:]}")
    reports, decoder, at = [], json.JSONDecoder(), 0
    while at < len(proc.stdout.rstrip()):  # one JSON document per scanned path, one after another
        at += len(proc.stdout[at:]) - len(proc.stdout[at:].lstrip())
        report, at = decoder.raw_decode(proc.stdout, at)
        reports += report if isinstance(report, list) else [report]
    failed, scanned = [], 0
    for report in reports:
        if "results" not in report:  # an empty scan reports only a summary
            continue
        scanned += report["summary"]["resource_count"]
        failed += report["results"]["failed_checks"]
    if scanned == 0:
        raise RuntimeError(f"checkov scanned no resource in {[str(p) for p in paths]}")
    return failed


def describe(failures: list[dict]) -> str:
    """One line per failed check: id, name, resource and file."""
    return "\n".join(f"{f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']})" for f in failures)
