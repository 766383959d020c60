"""Worker for test_elastic: one elastic "stage" under torchrun that first writes a sharded output (one record per
item) and then trains the MLP of tests/torchrun_train.py with checkpoints, so a node lost mid-run can be checked on
both. Alone (no torchrun) it is the uninterrupted reference. Writes, on rank 0, the final full weights and the world
sizes it ran at. With `hold_at=N`, rank 0 of a two-rank run writes OUT/held before optimizer step N and waits
there until OUT/release exists (at most two minutes), so the test can kill the other node at a known point; a run on one rank never holds.

    python tests/torchrun_elastic.py OUT RESULT batch_size=4 grad_accum=1 [hold_at=3]
"""

import json
import os
import sys
import time

import torch
from torchrun_train import Points, collate, model_for_test

from lift.config.schema import TrainerConfig
from lift.core import dist, logs
from lift.io import sharded, storage
from lift.train import loop, parallel

ITEMS = 12


def main(out: str, result: str, *overrides: str) -> None:
    logs.setup()
    runtime = dist.init()
    fields = dict(o.split("=", 1) for o in overrides)
    hold_at = int(fields.get("hold_at", -1))

    def work(_, mine):
        yield [{"item": item, "world_size": runtime.world_size} for item in mine]

    shards = storage.Shards.layout(f"{out}/parts", 0, runtime.world_size)
    sharded.run_parts(shards, list(range(ITEMS)), work, runtime, "items.jsonl", "items")

    def loss_fn(model, batch, step):
        if step == hold_at and runtime.world_size == 2 and runtime.is_main:
            storage.write_text(f"{out}/held", str(step))
            deadline = time.time() + 120
            while not storage.exists(f"{out}/release") and time.time() < deadline:
                time.sleep(0.1)  # the other node is killed meanwhile; the next collective then fails
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}

    cfg = TrainerConfig(lr=1e-2, batch_size=int(fields["batch_size"]), grad_accum=int(fields["grad_accum"]),
                        max_steps=12, checkpoint_every=2, keep_checkpoints=10, async_checkpoint=False, log_every=4,
                        num_workers=0, mixed_precision="fp32", warmup_steps=2)
    model = model_for_test()
    model = parallel.shard_model(model, list(model)[:-1], runtime, cfg)
    loop.fit(model=model, dataset=Points(), collate=collate, loss_fn=loss_fn, cfg=cfg, out_url=f"{out}/train",
             fingerprint={"model": "mlp"}, runtime=runtime)
    weights = parallel.full_state_dict(model)
    if runtime.is_main:
        torch.save({"weights": weights, "world_size": runtime.world_size,
                    "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))}, result)
        print(json.dumps({"done": True, "world_size": runtime.world_size}), flush=True)
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
