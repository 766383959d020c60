"""Worker for test_dist: under torchrun, every rank commits its shards of one output through `run_stage`."""

import json
import sys

from lift import stages
from lift.core import dist, logs
from lift.io import storage
from lift.stages import runner


def stage(cfg) -> dict:
    rt = dist.init()
    shards = storage.Shards(cfg.out, num_shards=5)
    mine = shards.todo(rt.rank, rt.world_size)
    for shard in mine:
        shards.commit(shard, json.dumps({"shard": shard, "rank": rt.rank}).encode() + b"\n")
    done = dist.all_gather_objects(len(mine))
    return {"ranks": rt.world_size, "parts_written": sum(done)}


if __name__ == "__main__":
    logs.setup()
    cfg = stages.load("score", None, [f"out={sys.argv[1]}"])
    runner.run_stage("score", cfg, target="torchrun_shards:stage")
    dist.shutdown()
