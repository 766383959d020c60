"""torch.distributed from the environment that torchrun, TorchX and the PyTorchJob operator set up.

`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` are all we read; without them (or with a
world size of 1) every call here is a no-op, so stages run unchanged as a single plain process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(timeout_s: int = 1800) -> Runtime:
    """Join the process group if launched by torchrun (gloo on CPU, nccl on GPU); idempotent."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                                      device_id=device if device.type == "cuda" else None,
                                      **_attempt_store(rank, world_size, timeout_s))
    return Runtime(rank, world_size, local_rank, device)


def _attempt_store(rank: int, world_size: int, timeout_s: int) -> dict:
    """Under torchrun, the agent's store with keys prefixed by the restart attempt.

    torchrun's agent serves one store for all attempts and torch 2.14's workers no longer prefix their keys per
    attempt, so after `--max-restarts` restarts a worker, its peers can read the dead worker's gloo/NCCL address
    from the first attempt and fail with "connection refused" (pytorch#167288). Outside torchrun: nothing to add.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = torch_dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                is_master=False, timeout=timedelta(seconds=timeout_s))
    return {"store": torch_dist.PrefixStore(f"lift/attempt-{attempt}", store), "rank": rank, "world_size": world_size}


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (a list of one outside a process group)."""
    if not torch_dist.is_initialized():
        return [obj]
    out = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def compute_dtype(device: str | torch.device, mixed_precision: str = "bf16") -> torch.dtype:
    """The dtype a model computes in, for the critic and the text-to-video pipelines alike: bfloat16 on CUDA unless
    a trainer's `mixed_precision` is fp32, float32 on CPU always."""
    bf16 = torch.device(device).type == "cuda" and mixed_precision == "bf16"
    return torch.bfloat16 if bf16 else torch.float32
