"""How long a fresh machine takes to install lift with its test extras: `scripts/setup.sh --test` with uv against
the same script with pip (`LIFT_NO_UV=1`), each into a new virtual environment with empty download caches, as CI's
clean machine starts. CI pays this before its first test.

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


def _setup(venv: Path, env: dict) -> None:
    subprocess.run(["bash", "scripts/setup.sh", "--test"], check=True, env={**env, "LIFT_VENV": str(venv)}, cwd=ROOT)


def main() -> None:
    result = {"runs": {}}
    for name, installer in (("pip", {"LIFT_NO_UV": "1"}), ("setup.sh (uv)", {"LIFT_NO_UV": ""})):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PIP_CACHE_DIR": f"{tmp}/pip-cache", "UV_CACHE_DIR": f"{tmp}/uv-cache", **installer}
            with Clock() as clock:
                _setup(Path(tmp) / "venv", env)
            result["runs"][name] = {"wall_s": round(clock.wall, 1), "cpu_s": round(clock.cpu, 1)}
            print(f"{name}: {clock.wall:.1f} s wall, {clock.cpu:.1f} CPU-s", flush=True)
    save_result("install", result)
    pip, uv = result["runs"]["pip"]["wall_s"], result["runs"]["setup.sh (uv)"]["wall_s"]
    print(ratio_line("install wall time, pip / setup.sh (uv)", pip / uv, ">= 2", pip / uv >= 2))


if __name__ == "__main__":
    main()
