"""The shared training loop: FSDP2 parity of 2 ranks vs 1 process, exact resume, non-finite losses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lift.io import storage
from lift.train import sampler

WORKER = Path(__file__).with_name("torchrun_train.py")


def _run(out: str, result: Path, *overrides: str, nproc: int = 1, env: dict | None = None):
    cmd = [sys.executable, str(WORKER), out, str(result), *overrides]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *cmd[1:]]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


def _weights(result: Path) -> dict[str, torch.Tensor]:
    return torch.load(result, weights_only=True)["weights"]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_global_batch_sampler_splits_global_batches_by_rank():
    one = sampler.GlobalBatchSampler(20, 4, 0, 1, seed=3)
    r0, r1 = (sampler.GlobalBatchSampler(20, 2, r, 2, seed=3) for r in (0, 1))
    assert [a + b for a, b in zip(r0, r1)] == list(one)
    one.set_position(epoch=1, start=2)
    assert len(list(one)) == 3 and list(one) != list(sampler.GlobalBatchSampler(20, 4, 0, 1, seed=3))[2:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        sampler.GlobalBatchSampler(3, 2, 0, 2, seed=0)


@pytest.mark.slow
def test_two_rank_fsdp_matches_one_process(tmp_path):
    single = _run(str(tmp_path / "one"), tmp_path / "one.pt", "batch_size=8")
    assert single.returncode == 0, single.stderr[-3000:]
    double = _run(str(tmp_path / "two"), tmp_path / "two.pt", "batch_size=4", nproc=2)
    assert double.returncode == 0, double.stderr[-3000:]
    assert _max_diff(_weights(tmp_path / "one.pt"), _weights(tmp_path / "two.pt")) < 1e-5
    accum = _run(str(tmp_path / "acc"), tmp_path / "acc.pt", "batch_size=4", "grad_accum=2")
    assert accum.returncode == 0, accum.stderr[-3000:]
    assert torch.load(tmp_path / "acc.pt", weights_only=True)["counts"]["steps"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("where", ["file", "s3"])
def test_stop_and_resume_gives_identical_weights(where, tmp_path, request):
    root = str(tmp_path) if where == "file" else request.getfixturevalue("s3_url")
    clean = _run(f"{root}/clean", tmp_path / "clean.pt", nproc=2)
    assert clean.returncode == 0, clean.stderr[-3000:]
    crashed = _run(f"{root}/crash", tmp_path / "crash.pt", nproc=2, env={"CRASH_AT": "6"})
    assert crashed.returncode != 0
    assert storage.listdir(f"{root}/crash/checkpoints") == ["step-00000002", "step-00000004"]
    resumed = _run(f"{root}/crash", tmp_path / "crash.pt", nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint" in resumed.stderr and "step=4" in resumed.stderr
    assert _max_diff(_weights(tmp_path / "clean.pt"), _weights(tmp_path / "crash.pt")) <= 1e-6
    assert storage.listdir(f"{root}/crash/checkpoints") == ["step-00000006", "step-00000008"]


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused(tmp_path):
    assert _run(str(tmp_path / "o"), tmp_path / "a.pt").returncode == 0
    again = _run(str(tmp_path / "o"), tmp_path / "b.pt", "model=other")
    assert again.returncode != 0
    assert "checkpoint is incompatible with this run: 'model' was 'mlp', now 'other'" in again.stderr


@pytest.mark.slow
def test_nonfinite_loss_skip_or_stop(tmp_path):
    """A NaN loss stops the run naming the step and batch; an infinite one is skipped and counted."""
    stop = _run(str(tmp_path / "s"), tmp_path / "s.pt", env={"NONFINITE_AT_STEP": "3"})
    assert stop.returncode != 0 and "non-finite loss at step 3" in stop.stderr and "batch ids [" in stop.stderr
    skip = _run(str(tmp_path / "k"), tmp_path / "k.pt", "on_nonfinite=skip",
                env={"NONFINITE_AT_STEP": "3", "NONFINITE_LOSS": "inf"})
    assert skip.returncode == 0, skip.stderr[-3000:]
    counts = torch.load(tmp_path / "k.pt", weights_only=True)["counts"]
    assert counts["skipped_steps"] == 1 and counts["steps"] == 8
