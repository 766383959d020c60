"""The container image, checked statically (no Docker engine here): base image, non-root user, entrypoint, what
is copied in, and agreement with the pods that run it (lift/launch/hardening.py, the chart)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
import yaml

from lift.launch import hardening

ROOT = Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        op, _, rest = full.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


def _args(op: str) -> list[str]:
    return [rest for o, rest in _instructions() if o == op]


def _env() -> dict[str, str]:
    env = {}
    for rest in _args("ENV"):
        env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
    return env


def test_base_is_a_cuda_pytorch_image_in_the_supported_range():
    (arg,) = [a for a in _args("ARG") if a.startswith("BASE_IMAGE=")]
    image = arg.split("=", 1)[1]
    m = re.fullmatch(r"pytorch/pytorch:(\d+)\.(\d+)\.(\d+)-cuda[\d.]+-cudnn\d+-runtime", image)
    assert m, image
    pyproject = (ROOT / "pyproject.toml").read_text()
    low, high = re.search(r'"torch>=(\d+\.\d+),<(\d+\.\d+)"', pyproject).groups()
    version = tuple(map(int, m.groups()[:2]))
    assert tuple(map(int, low.split("."))) <= version < tuple(map(int, high.split(".")))
    assert _args("FROM") == ["${BASE_IMAGE}"]


def test_runs_as_the_non_root_user_the_pods_expect():
    users = _args("USER")
    assert users and users[-1] == f"{hardening.UID}:{hardening.UID}", "the last USER must be numeric and non-root"
    assert hardening.UID >= 10000
    assert _env()["HOME"] == hardening.HOME
    run = " ".join(_args("RUN"))
    assert f"useradd --uid {hardening.UID}" in run and f"--home-dir {hardening.HOME}" in run
    # every cache a library writes lives under HOME/.cache, the writable emptyDir of the read-only pods
    for key in ("XDG_CACHE_HOME", "HF_HOME", "LIFT_CACHE", "TORCH_HOME", "TRITON_CACHE_DIR", "MPLCONFIGDIR"):
        assert _env()[key].startswith(f"{hardening.HOME}/.cache"), key


def test_entrypoint_is_lift():
    assert _args("ENTRYPOINT") == ['["lift"]']
    assert "lift" in (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n")[1]


def test_install_keeps_the_base_images_torch():
    run = " ".join(_args("RUN"))
    assert "--constraint" in run and "torch" in run and "pip install" in run
    assert not re.search(r"pip install[^;]*\btorch(==|>=| )", run), "torch must not be (re)installed"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics for the patterns used here: last match wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_every_copy_source_exists_and_is_in_the_build_context():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = _args("COPY")
    assert copies
    for rest in copies:
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        for src in words[:-1]:
            assert (ROOT / src).exists(), f"COPY source {src} is missing"
            assert not _ignored(src, patterns), f"COPY source {src} is excluded by .dockerignore"
    for heavy in (".venv", ".venv-checkov", "runs", ".git", "tests", "charts", ".pytest_cache"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"
    assert _ignored("lift/__pycache__", patterns)


def test_chart_runs_the_image_as_its_user():
    values = ROOT / "charts" / "values.yaml"
    if not values.exists():
        pytest.skip("the Helm chart is not in this tree")
    v = yaml.safe_load(values.read_text())
    assert v["home"] == hardening.HOME
    assert v["podSecurityContext"]["runAsUser"] == v["securityContext"]["runAsUser"] == hardening.UID
