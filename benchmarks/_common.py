"""Shared pieces of the benchmarks: machine description, CPU-time clocks, a loopback S3 endpoint (moto's server in
its own process, so its CPU is not billed to the code under test), and the result file each script leaves.

Every benchmark measures its baseline in the same run, on the same machine, and prints its ratio(s) last. Machines
here are shared: wall-clock numbers move with the neighbours' load, CPU-seconds much less, so per-core figures are
computed from CPU time (this process and its reaped children) and wall figures are reported beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench-key-id", "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
          "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "lift-bench"
LOAD_AT_START = os.getloadavg()[0]  # 1-minute load average when the benchmark started (this module is imported first)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": len(os.sched_getaffinity(0)), "cpu": cpu_model(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_avg_1m_at_start": round(LOAD_AT_START, 2), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}


def cpu_seconds(children: bool = True) -> float:
    """User + system CPU of this process (all threads) and, with `children`, of its reaped child processes."""
    t = os.times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


class Clock:
    """Wall and CPU seconds of a block: `with Clock() as c: ...; c.wall, c.cpu`."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, cpu_seconds() - self.c0


def process_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used so far by another process (default: the benchmark's moto server), from /proc."""
    pid = pid or int(os.environ.get("LIFT_BENCH_MOTO_PID", "0"))
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 in a child process; the AWS environment points every client at it.
    Yields an empty prefix URL in a fresh bucket."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL", "LIFT_BENCH_MOTO_PID"]}
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("moto server did not start")
            time.sleep(0.2)
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", LIFT_BENCH_MOTO_PID=str(proc.pid))
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def save_result(name: str, result: dict, path: Path | None = None) -> Path:
    """benchmarks/results/<name>.json (or `path`): the numbers docs/BENCHMARKS.md quotes, with the machine they
    came from."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, "command": f".venv/bin/python benchmarks/{name}.py",
                                "machine": machine(), **result}, indent=2, sort_keys=True) + "\n")
    return path


def ratio_line(label: str, value: float, target: str, met: bool) -> str:
    return f"RATIO {label}: {value:.3f} (target {target}: {'met' if met else 'NOT met'})"
