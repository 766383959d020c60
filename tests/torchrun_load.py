"""Worker for test_sharded_load: loads models the way the training stages do (built empty, adapted, sharded, each
rank reading its shard) under torchrun, and writes what the test checks into OUT:

- rank{R}.json: the rank's peak resident memory while loading REAL (a critic folder of at least 1 GB) over its
  resident memory just before, the bytes of its own shard, the largest difference between its shard and the
  file's rows (read independently, memory-mapped) and whether the lm_head still shares the embeddings;
- real.pt (rank 0): REAL's logits on fixed tokens;
- zoo.pt (rank 0): the tiny critic's (LoRA, frozen vision tower) gathered weights and loss on a video, and each
  text-to-video family's gathered transformer weights and per-sample losses on fixed latents;
- bf16.pt (rank 0): the tiny critic loaded as the stage loads it on a GPU (bfloat16 compute): its parameters'
  dtypes, the largest difference between a frozen shard and the file's rows in bfloat16, and the loss and the
  adapters' gathered gradients of one forward and backward;
- stored-bf16.pt (rank 0): the same of STORED_BF16 (the tiny critic saved in bfloat16) loaded on this CPU
  (float32 compute).

    torchrun --nproc-per-node 2 tests/torchrun_load.py OUT ZOO REAL STORED_BF16
"""

import json
import sys

import peft  # noqa: F401  (imported before the baseline, like the model's code: the load is measured, not imports)
import torch
from safetensors import safe_open
from transformers import Qwen2VLForConditionalGeneration  # noqa: F401

from lift import models, stages
from lift.core import dist
from lift.models import critic as critic_data
from lift.models import families
from lift.stages import critic
from lift.train import parallel

FAMILIES = ("cogvideox", "wan")
TOKENS = torch.arange(16).view(1, 16) * 997 % 5000 + 100  # fixed ids inside every critic's vocabulary


def _memory(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS: resident now; VmHWM: the peak since the last reset)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def critic_config(path: str, *extra: str):
    """The critic stage's settings for the critic folder `path` with the recipe's LoRA and frozen vision tower."""
    return stages.load("critic", None, [f"model.name_or_path={path}", "run=memory://unused", "data=memory://unused",
                                        "lora.enabled=true", "model.freeze_vision=true", *extra])


def load_critic(path: str, runtime: dist.Runtime, *extra: str, compute: torch.dtype | None = None):
    """The critic stage's model loading (critic.run), for the recipe's LoRA and frozen vision tower; `compute`: the
    dtype it computes in, as on a GPU (by default this CPU's, float32)."""
    cfg = critic_config(path, *extra)
    skeleton, weights = models.critic_skeleton(path)
    empty = parallel.EmptyModel(skeleton)
    torch.manual_seed(cfg.trainer.seed)
    model = empty.adapt(lambda m: critic.adapt(m, cfg))
    model = parallel.shard_model(model, critic.blocks(model), runtime, cfg.trainer,
                                 lambda m: empty.materialise(m, runtime.device, weights), compute=compute,
                                 stored=weights.dtype)
    return model, weights


def _file_rows(weights, name: str, param) -> torch.Tensor:
    """This rank's rows of the weight `name` as the file holds them (read independently, memory-mapped)."""
    base = name.removeprefix("base_model.model.").replace(".base_layer", "")
    file, stored = weights.where[base]
    start = parallel_start(param)
    with safe_open(file, "pt") as f:
        return f.get_slice(stored)[start:start + param.to_local().shape[0]]


def real(out: str, path: str, runtime: dist.Runtime) -> None:
    open("/proc/self/clear_refs", "w").write("5")  # the peak restarts from here: imports and gloo are not the load
    before = _memory("VmRSS")
    model, weights = load_critic(path, runtime, "lora.r=8", "trainer.activation_checkpointing=false")
    peak = _memory("VmHWM") - before
    local = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    differs = 0.0
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        rows = param.to_local()
        differs = max(differs, float((rows - _file_rows(weights, name, param)).abs().max()) if rows.numel() else 0.0)
    with open(f"{out}/rank{runtime.rank}.json", "w") as f:
        base = model.get_base_model()
        json.dump({"peak": peak, "local": local, "differs": differs,
                   "tied": base.lm_head.weight is base.get_input_embeddings().weight}, f)
    with torch.no_grad():
        logits = model.eval()(input_ids=TOKENS).logits
    if runtime.is_main:
        torch.save(logits, f"{out}/real.pt")


def parallel_start(param) -> int:
    """The first row of this rank's shard (torch.chunk's split, as FSDP2 shards dim 0)."""
    step = -(-param.shape[0] // param.device_mesh.size())
    return min(param.device_mesh.get_local_rank() * step, param.shape[0])


def critic_batch(path: str) -> dict:
    """The model inputs of a batch of one tokenised 8-frame clip with its answer, made by the critic folder `path`'s
    processor as the critic stage trains on."""
    frames = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    example = critic_data.CriticExample("v", "a red circle moves left on a black background", "motion", "Good.", "0")
    return critic_data.Collate(path, fps=4.0)([{"frames": frames, "example": example}])["inputs"]


def t2v_inputs(pipe, family) -> tuple[torch.Tensor, torch.Tensor, list[torch.Generator]]:
    """Latents of two fixed 17x32x32 clips (CogVideoX's tiny transformer's sample size, so its sincos table is
    used) and two prompts' embeddings, for one forward through the family's loss."""
    video = torch.rand(2, 3, 17, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = family.encode_video(pipe, video)
        embeds = family.encode_text(pipe, ["a red circle moves left", "a blue square"], "cpu")
    return latents, embeds, [torch.Generator().manual_seed(i) for i in range(2)]


def zoo(out: str, path: str, runtime: dist.Runtime) -> None:
    results = {}
    model, _ = load_critic(f"{path}/critic", runtime)
    inputs = critic_batch(f"{path}/critic")
    results["critic"] = {"weights": parallel.full_state_dict(model), "loss": model.eval()(**inputs).loss.detach()}
    for name in FAMILIES:
        family = families.get(name)
        skeleton, weights = models.t2v_skeleton(name, f"{path}/{name}")
        empty = parallel.EmptyModel(skeleton)
        pipe = models.load_t2v(name, f"{path}/{name}", transformer=skeleton)
        cfg = stages.load("align", None, ["rollouts=memory://unused", "out=memory://unused"]).trainer
        transformer = parallel.shard_model(skeleton, family.blocks(skeleton), runtime, cfg,
                                           lambda m: empty.materialise(m, runtime.device, weights))
        latents, embeds, generators = t2v_inputs(pipe, family)
        results[name] = {"weights": parallel.full_state_dict(transformer),
                         "loss": family.loss(pipe, transformer.eval(), latents, embeds, generators).detach()}
    if runtime.is_main:
        torch.save(results, f"{out}/zoo.pt")


def bf16(out: str, path: str, runtime: dist.Runtime, file: str, compute: torch.dtype | None = None) -> None:
    """The critic folder `path` loaded computing in `compute`, its frozen base expected in bfloat16: what bf16.pt and
    stored-bf16.pt hold, written to OUT/`file`."""
    model, weights = load_critic(path, runtime, compute=compute)
    differs = 0.0
    for name, param in model.named_parameters():
        if not param.requires_grad and param.to_local().numel():
            rows = _file_rows(weights, name, param).to(torch.bfloat16)
            differs = max(differs, float((param.to_local().float() - rows.float()).abs().max()))
    loss = model.eval()(**critic_batch(path)).loss
    loss.backward()
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters() if p.requires_grad}
    if runtime.is_main:
        torch.save({"dtypes": {name: p.dtype for name, p in model.named_parameters()}, "differs": differs,
                    "loss": loss.detach(), "grads": grads}, f"{out}/{file}")


def main(out: str, zoo_dir: str, real_dir: str, stored_bf16: str) -> None:
    runtime = dist.init()
    real(out, real_dir, runtime)
    zoo(out, zoo_dir, runtime)
    bf16(out, f"{zoo_dir}/critic", runtime, "bf16.pt", compute=torch.bfloat16)
    bf16(out, stored_bf16, runtime, "stored-bf16.pt")
    dist.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
