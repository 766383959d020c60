"""The chart's optional `serve` block (templates/serve.yaml): off by default; when on, a Deployment whose pod passes
the stage pods' hardening checks, a readiness probe on /readyz, GPU resources, the token only by Secret reference,
a config file that `lift serve` loads, and Kubernetes schema and checkov checks."""

from __future__ import annotations

import pytest
import yaml
from checkov_scan import CHECKOV_SKIPS, describe, run_checkov
from test_chart import KUBE_VERSIONS, NAMESPACE, RELEASE, SECRET_SENTINEL, all_containers, chart

from lift import config
from lift.config import schema

SERVE = {"serve": {"enabled": True, "tokenSecret": {"name": "lift-serve-token"},
                   "config": {"critic": "s3://bucket/run/critic/model", "allow": ["s3://bucket/run/"],
                              "batch_size": 16}}}


def _objects(values: dict | None) -> dict[str, dict]:
    out = chart().render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [d for name, text in out.items() if name.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    return {d["kind"]: d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "serve"}


def test_serve_is_off_by_default():
    assert _objects(None) == {}


def test_serve_block_renders_a_hardened_deployment(tmp_path):
    import kubernetes_validate

    objects = _objects(SERVE)
    assert set(objects) == {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}
    spec = objects["Deployment"]["spec"]["template"]["spec"]
    ctx = spec["securityContext"]  # the checks of test_chart.test_hardened_pods
    assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert min(ctx["runAsUser"], ctx["runAsGroup"], ctx["fsGroup"]) > 0
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] not in ("", "default")
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and volumes["tmp"]["emptyDir"]["sizeLimit"]
    assert volumes["token"]["secret"]["secretName"] == "lift-serve-token"
    (container,) = all_containers(spec)
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts["/etc/lift"] == "config"
    # the config file is one `lift serve` loads, pointing at the mounted token
    path = tmp_path / "serve.yaml"
    path.write_text(objects["ConfigMap"]["data"]["serve.yaml"])
    cfg = config.load(schema.ServeConfig, str(path))
    assert cfg.host == "0.0.0.0" and cfg.batch_size == 16 and cfg.allow == ["s3://bucket/run/"]
    assert cfg.token_file == "/var/run/secrets/lift-serve/token" and mounts["/var/run/secrets/lift-serve"] == "token"
    assert container["command"] == ["lift", "serve", "--config", "/etc/lift/serve.yaml"]
    assert SECRET_SENTINEL not in yaml.safe_dump_all(list(objects.values()))
    assert objects["Service"]["spec"]["selector"]["app.kubernetes.io/component"] == "serve"
    for obj in objects.values():
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    (tmp_path / "serve-objects.yaml").write_text(yaml.safe_dump_all(list(objects.values())))
    failed = [f for f in run_checkov([tmp_path]) if f["check_id"] not in CHECKOV_SKIPS]
    assert not failed, "checkov findings:\n" + describe(failed)


def test_serve_needs_a_token_secret():
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError, match="serve.tokenSecret.name: required"):
        chart().render(values={"serve": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    assert "token" not in {v["name"] for v in _objects({"serve": {"enabled": True, "config": {"anonymous": True}}})
                           ["Deployment"]["spec"]["template"]["spec"]["volumes"]}
