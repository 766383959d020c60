"""The distributed runtime under real torchrun processes (gloo), and as a no-op in a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lift.core import dist
from lift.io import storage

WORKER = Path(__file__).with_name("torchrun_shards.py")


def test_single_process_is_a_noop(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    rt = dist.init()
    assert (rt.rank, rt.world_size, rt.is_main, rt.distributed) == (0, 1, True, False)
    assert dist.all_gather_objects("x") == ["x"]
    dist.barrier()


def _torchrun(out: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER), out]
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.slow
def test_two_ranks_share_one_output(s3_url):
    """Over s3://; two ranks sharing a local output are tests/test_reliability_crash.py's generate and score runs."""
    out = f"{s3_url}/scores"
    run = _torchrun(out)
    assert run.returncode == 0, run.stderr[-3000:]
    marker = storage.read_marker(out)
    assert marker["counts"] == {"ranks": 2, "parts_written": 5}
    shards = storage.Shards(out, num_shards=5)
    assert shards.committed() == set(range(5))
    ranks = [json.loads(storage.read_text(shards.part(s)))["rank"] for s in range(5)]
    assert ranks == [0, 1, 0, 1, 0]
    again = _torchrun(out)
    assert again.returncode == 0 and "already complete, skipping" in again.stderr
