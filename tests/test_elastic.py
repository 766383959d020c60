"""Losing a node of an elastic stage (issue 20 item 5), on CPU: two torchrun agents on loopback, one per "node",
meet in a c10d rendezvous with --nnodes 1:2; the second node (its agent and its worker together) is SIGKILLed
mid-training, the first re-forms alone, resumes from the newest checkpoint at world size 1 and finishes.

The stage (tests/torchrun_elastic.py) writes a sharded output and then trains: the output must hold every item
exactly once in the part layout it started with, and the weights must equal those of an uninterrupted run at the
same global batch (4 x 2 ranks = 4 x 1 rank x 2 accumulated) within fp32 tolerance; the resharded DCP checkpoint
and the adjusted accumulation are what make them equal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lift.config import ConfigError
from lift.io import storage
from lift.train.checkpoint import Checkpointer

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "torchrun_elastic.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "LIFT_LOG_LEVEL": "INFO"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _agent(port: int, host: bool, out: Path, result: Path, log: Path) -> subprocess.Popen:
    """One node: a torchrun agent with one worker, writing its log to `log`."""
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nnodes", "1:2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "elastic-test", "--max_restarts", "3",
           "--rdzv_conf", f"is_host={int(host)},last_call_timeout=2,join_timeout=60", "--monitor_interval", "0.5",
           "--local_addr", "127.0.0.1", str(WORKER), str(out), str(result), "batch_size=4", "grad_accum=1",
           "hold_at=3"]
    return subprocess.Popen(cmd, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in sessions of their own)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _kill_node(agent: subprocess.Popen) -> None:
    """SIGKILL a node's agent and its workers at once, as losing the machine would."""
    for pid in [*_descendants(agent.pid), agent.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    agent.wait()


@pytest.mark.slow
def test_a_lost_node_rejoins_smaller_and_finishes_like_an_uninterrupted_run(tmp_path):
    out, result = tmp_path / "run", tmp_path / "elastic.pt"
    # The uninterrupted run at the same global batch, beside the elastic one.
    reference = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "ref"), str(tmp_path / "ref.pt"),
                                  "batch_size=4", "grad_accum=2"], env=_env(),
                                 stdout=(tmp_path / "reference.log").open("w"), stderr=subprocess.STDOUT)
    port = _free_port()
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    first = _agent(port, True, out, result, logs[0])
    second = _agent(port, False, out, result, logs[1])
    try:
        deadline = time.time() + 240
        while not (out / "held").exists():  # rank 0 holds before step 3, after the checkpoint of step 2
            assert first.poll() is None and second.poll() is None, logs[0].read_text()[-3000:]
            assert time.time() < deadline, logs[0].read_text()[-3000:]
            time.sleep(0.1)
        _kill_node(second)
        (out / "release").write_text("")
        assert first.wait(timeout=240) == 0, logs[0].read_text()[-5000:]
        assert reference.wait(timeout=240) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        for agent in (first, second):
            if agent.poll() is None:
                _kill_node(agent)
        if reference.poll() is None:
            reference.kill()
    text = logs[0].read_text()
    # The survivor re-formed alone and resumed a world-size-2 checkpoint with twice the accumulation.
    assert "world size changed: accumulation adjusted" in text and "world_size=2->1" in text, text[-5000:]
    assert "grad_accum=1->2" in text
    finished = torch.load(result)
    assert finished["world_size"] == 1 and finished["restarts"] >= 1
    markers = [storage.read_marker(str(out / "train" / "checkpoints" / f"step-{s:08d}")) for s in (2, 12)]
    assert [m["counts"]["world_size"] for m in markers] == [2, 1]
    assert {m["counts"]["global_batch"] for m in markers} == {8}

    # The sharded output: written at world size 2 as two parts, every item exactly once.
    parts = sorted(p.name for p in (out / "parts").glob("part-*"))
    assert parts == ["part-00000-of-00002.jsonl", "part-00001-of-00002.jsonl"]
    items = [json.loads(line)["item"] for line in (out / "parts" / "items.jsonl").read_text().splitlines()]
    assert sorted(items) == list(range(12))

    expected = torch.load(tmp_path / "ref.pt")["weights"]
    assert finished["weights"].keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(finished["weights"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def _checkpoint_at(url: str, step: int, world_size: int, global_batch: int) -> Checkpointer:
    ckpt = Checkpointer(url, {"model": "mlp"})
    storage.write_marker(f"{url}/step-{step:08d}", "checkpoint", "", {"step": step, "world_size": world_size,
                                                                     "global_batch": global_batch},
                         fingerprint={"model": "mlp"}, settings={})
    return ckpt


def test_accumulation_keeps_the_checkpoints_global_batch_or_refuses(tmp_path):
    ckpt = _checkpoint_at(str(tmp_path / "ckpt"), 6, world_size=4, global_batch=32)
    # 4 ranks x batch 4 x 2 micro-batches: on 2 ranks 4, on 8 ranks 1, on 4 ranks unchanged.
    assert [ckpt.grad_accum(4, 2, w) for w in (2, 8, 4, 1)] == [4, 1, 2, 8]
    for world in (3, 16):  # 32 / (4 x 3) is no whole number; 16 ranks x 4 is already more than 32
        with pytest.raises(ConfigError, match=rf"global batch of 32 \(world size 4\); at world size {world} with "
                                              r"trainer.batch_size=4 no grad_accum keeps it"):
            ckpt.grad_accum(4, 2, world)
    # A new training takes the configured accumulation and records its own global batch.
    fresh = Checkpointer(str(tmp_path / "new"), {"model": "mlp"})
    assert fresh.grad_accum(4, 3, 2) == 3 and (fresh.world_size, fresh.global_batch) == (2, 24)


def test_sharded_output_keeps_its_part_layout_at_another_world_size(tmp_path):
    url = str(tmp_path / "out")
    assert storage.Shards.layout(url, 0, 4).num_shards == 4  # nothing written yet: one part per rank
    first = storage.Shards(url, 4)
    first.commit(1, b'{"item": 1}\n')
    assert storage.Shards.layout(url, 0, 2).num_shards == 4  # restarted on 2 ranks: still 4 parts
    assert storage.Shards.layout(url, 0, 2).todo(0, 2) == [0, 2] and storage.Shards.layout(url, 0, 2).todo(1, 2) == [3]
    assert storage.Shards.layout(url, 3, 2).num_shards == 3  # an explicit num_shards is taken as it is
