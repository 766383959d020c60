"""How long a fresh machine takes to install lift with its test extras: `scripts/setup.sh --test` (uv) against the
same two steps with pip (torch and torchvision pinned, then the project), each into a new virtual environment with
empty download caches, as CI's clean machine starts. CI pays this before its first test.

    .venv/bin/python benchmarks/install.py      # ~6 minutes; results/install.json
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Clock, ratio_line, save_result  # noqa: E402

TORCH = ("torch==2.14.1", "torchvision==0.29.1")  # scripts/setup.sh's defaults


def _pip(venv: Path, env: dict) -> None:
    """The baseline: the project's install as pip does it (setup.sh's steps before it used uv)."""
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True, env=env)
    for args in (TORCH, ("-e", ".[test]")):
        subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", *args], check=True, env=env, cwd=ROOT)


def _setup(venv: Path, env: dict) -> None:
    subprocess.run(["bash", "scripts/setup.sh", "--test"], check=True, env={**env, "LIFT_VENV": str(venv)}, cwd=ROOT)


def main() -> None:
    result = {"runs": {}}
    for name, install in (("pip", _pip), ("setup.sh (uv)", _setup)):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PIP_CACHE_DIR": f"{tmp}/pip-cache", "UV_CACHE_DIR": f"{tmp}/uv-cache"}
            with Clock() as clock:
                install(Path(tmp) / "venv", env)
            result["runs"][name] = {"wall_s": round(clock.wall, 1), "cpu_s": round(clock.cpu, 1)}
            print(f"{name}: {clock.wall:.1f} s wall, {clock.cpu:.1f} CPU-s", flush=True)
    save_result("install", result)
    pip, uv = result["runs"]["pip"]["wall_s"], result["runs"]["setup.sh (uv)"]["wall_s"]
    print(ratio_line("install wall time, pip / setup.sh (uv)", pip / uv, ">= 2", pip / uv >= 2))


if __name__ == "__main__":
    main()
