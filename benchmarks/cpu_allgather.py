"""FSDP2's all-gather of a big frozen unit on CPU (gloo, 2 ranks), with and without transparent huge pages.

The unit is the Qwen2.5-VL-7B critic's untied input embeddings (152064 x 3584, float32 as the CPU stages hold
them: 2.2 GB), `fully_shard`ed over 2 ranks and gathered by each forward, as every micro-batch of the 7B critic's
2-rank stage test does for its embeddings and its head. Each gather allocates GBs afresh (the all-gather buffer and
the unsharded parameter); on a VM whose host backs a freshly touched 4 KB page slowly, that allocation, not the
copy, is most of the time. PyTorch's `THP_MEM_ALLOC_ENABLE=1` puts tensors of 2 MB and more on huge pages; the
real-width critic stage test sets it for its torchrun ranks (tests/test_critic_real.py). Both settings run in this
one invocation, alternating, each in fresh torchrun processes (the switch is read at a process's first allocation).

    .venv/bin/python benchmarks/cpu_allgather.py [--rows 152064] [--width 3584] [--gathers 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Clock, ratio_line, save_result  # noqa: E402

SETTINGS = {"4 KB pages": "0", "huge pages": "1"}


def rank_main(args) -> None:
    """One rank: the sharded embeddings gathered by `args.gathers` forwards after one untimed one."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Embedding(args.rows, args.width))
    model.requires_grad_(False)
    fully_shard(model[0])  # a unit of its own, resharded after its forward as the stage's are (the root is not)
    fully_shard(model)
    model.to_empty(device="cpu")
    with torch.no_grad():
        model[0].weight.to_local().normal_()
    ids = torch.arange(64)
    times = []
    for i in range(args.gathers + 1):
        dist.barrier()
        start = time.perf_counter()
        with torch.no_grad():
            model(ids)  # gathers the weight, then reshards (frees) it
        dist.barrier()
        if i:
            times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(times))
    dist.destroy_process_group()


def run(args, thp: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               __file__, "--rank", "--out", str(out), "--rows", str(args.rows), "--width", str(args.width),
               "--gathers", str(args.gathers)]
        with Clock() as clock:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "THP_MEM_ALLOC_ENABLE": thp})
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        times = json.loads(out.read_text())
    return {"gather_s": times, "process_wall_s": clock.wall, "process_cpu_s": clock.cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=152064)
    ap.add_argument("--width", type=int, default=3584)
    ap.add_argument("--gathers", type=int, default=4, help="timed forwards per process, after one untimed one")
    ap.add_argument("--rounds", type=int, default=2, help="processes per setting, the settings alternating")
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        return rank_main(args)

    gib = args.rows * args.width * 4 / 2**30
    runs = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, thp in SETTINGS.items():
            runs[name].append(run(args, thp))
    summary = {}
    for name, results in runs.items():
        gathers = [t for r in results for t in r["gather_s"]]
        summary[name] = {"median_gather_s": statistics.median(gathers), "min_gather_s": min(gathers),
                         "max_gather_s": max(gathers), "gib_per_s": gib / statistics.median(gathers)}
        print(f"{name}: {gib:.2f} GiB gathered per forward, median {summary[name]['median_gather_s']:.2f} s "
              f"(min {summary[name]['min_gather_s']:.2f}, max {summary[name]['max_gather_s']:.2f}) over "
              f"{len(gathers)} forwards in {len(results)} processes")
    ratio = summary["4 KB pages"]["median_gather_s"] / summary["huge pages"]["median_gather_s"]
    save_result("cpu_allgather", {"rows": args.rows, "width": args.width, "gib": gib, "gathers": args.gathers,
                                  "rounds": args.rounds, "runs": runs, "summary": summary,
                                  "ratio_4k_over_huge": ratio})
    print(ratio_line("all-gather time, 4 KB pages / huge pages", ratio, "report", True))


if __name__ == "__main__":
    main()
