"""Worker for test_train: fits a small block-structured MLP with `lift.train.fit`, alone or under torchrun,
and saves the final full weights so runs can be compared. `CRASH_AT=N` dies at optimizer step N."""

import os
import sys

import torch

from lift.config.schema import TrainerConfig
from lift.core import dist, logs
from lift.train import loop, parallel


class Points(torch.utils.data.Dataset):
    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.sin(self.x.sum(1, keepdim=True))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "id": i}


def collate(items):
    return {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items]),
            "ids": [i["id"] for i in items]}


def model_for_test() -> torch.nn.Sequential:
    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(8 if i == 0 else 16, 16), torch.nn.Tanh()) for i in range(3)]
    return torch.nn.Sequential(*blocks, torch.nn.Linear(16, 1))


def loss_fn(model, batch, step):
    if step + 1 == int(os.environ.get("CRASH_AT", "0")):
        raise SystemExit(17)
    if os.environ.get("NONFINITE_AT_STEP") == str(step):  # NONFINITE_LOSS: nan (default), inf or -inf
        return torch.tensor(float(os.environ.get("NONFINITE_LOSS", "nan")), requires_grad=True), {}
    pred = model(batch["x"])
    return torch.nn.functional.mse_loss(pred, batch["y"]), {"pred_mean": pred.mean().item()}


def main(out_url: str, result: str, *overrides: str) -> None:
    logs.setup()
    runtime = dist.init()
    fields = dict(o.split("=", 1) for o in overrides)
    cfg = TrainerConfig(lr=1e-2, batch_size=int(fields.get("batch_size", 4)), max_steps=8, checkpoint_every=2,
                        log_every=2, num_workers=0, mixed_precision="fp32", warmup_steps=2,
                        grad_accum=int(fields.get("grad_accum", 1)), on_nonfinite=fields.get("on_nonfinite", "stop"))
    model = model_for_test()
    model = parallel.shard_model(model, list(model)[:-1], runtime, cfg)
    counts = loop.fit(model=model, dataset=Points(), collate=collate, loss_fn=loss_fn, cfg=cfg, out_url=out_url,
                       fingerprint={"model": fields.get("model", "mlp")}, runtime=runtime)
    weights = parallel.full_state_dict(model)
    if runtime.is_main:
        torch.save({"weights": weights, "counts": counts}, result)
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
