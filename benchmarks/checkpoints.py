"""Checkpoints: DCP save and load of an FSDP2 model plus AdamW state to s3:// (moto on loopback) through
`lift.train.checkpoint.Checkpointer` vs raw s3fs put/get of the same bytes; and the training stall an asynchronous
checkpoint leaves in `lift.train.fit` vs a synchronous one.

    .venv/bin/python benchmarks/checkpoints.py            # starts moto, then torchrun --nproc-per-node 2 (gloo)
    .venv/bin/python benchmarks/checkpoints.py --params-m 8 --nproc 1

Part 1 (throughput): each rank holds a shard of a block-structured MLP (`fully_shard` per block and on the root)
and of its AdamW state (fp32 weights + 2 moments = 12 bytes per parameter). A save is `Checkpointer.save(...,
block=True)`: DCP planning, each rank's shard objects written through fsspec, `.metadata`, `_SUCCESS`, pruning.
The baseline moves the very bytes of each rank's shard objects, as one object per rank, with `s3fs.pipe_file` /
`cat_file`, on all ranks at once. Ratio = raw seconds / DCP seconds (>= 0.70 wanted).

Part 2 (stall): `loop.fit` on the same model with `checkpoint_every=4`, once with `async_checkpoint=false` and
once with `true`. Stall of a checkpoint = time the training loop is blocked in `Checkpointer.save` and
`Checkpointer.wait`, plus how much longer the step that overlaps the upload took than the median step.
Ratios (<= 0.10 wanted): async / sync blocked time, and async / sync step time lost. On a GPU node the upload
thread's CPU work runs beside GPU compute; here 2 shared cores run both ranks' compute, their upload threads and
the moto server, so an overlapped step also slows down by CPU contention (the moto CPU is printed).
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model(params_m: float, width: int = 1024):
    import torch

    blocks = max(1, round(params_m * 1e6 / (width * width + width)))
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU())
                                 for _ in range(blocks)])


class _Rows:
    def __init__(self, n: int, width: int):
        import torch

        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, width, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "id": i}


def _collate(items):
    import torch

    return {"x": torch.stack([i["x"] for i in items]), "ids": [i["id"] for i in items]}


def worker(args) -> None:
    import torch
    import torch.distributed as torch_dist
    from _common import cpu_seconds, process_cpu_seconds

    from lift.config.schema import TrainerConfig
    from lift.core import dist
    from lift.io import storage
    from lift.train import checkpoint, loop, optim, parallel

    torch.set_num_threads(1)
    runtime = dist.init()
    world = runtime.world_size

    def timed_max(fn) -> float:
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dist.barrier()
        t = torch.tensor(time.perf_counter() - t0)
        if torch_dist.is_initialized():
            torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return float(t)

    # ---- part 1: DCP vs raw bytes --------------------------------------------------------------------------
    cfg = TrainerConfig(lr=1e-4, batch_size=8, mixed_precision="fp32", checkpoint_every=0)
    model = build_model(args.params_m)
    model = parallel.shard_model(model, list(model), runtime, cfg)
    params = list(model.parameters())
    opt = optim.build_optimizer(params, cfg, runtime.device)
    model(torch.randn(4, 1024)).square().mean().backward()
    opt.step()  # materialise the AdamW moments
    sched = optim.build_scheduler(opt, cfg, 10)
    state = checkpoint.TrainState(model, opt, sched, trainable_only=False)
    ck_url = storage.join(args.url, "part1")
    ckpt = checkpoint.Checkpointer(ck_url, {"bench": 1}, keep=1, async_save=False)
    fs, _ = storage.filesystem(ck_url)
    rows = []
    for rep in range(args.repeats):
        state.step = rep + 1
        save_s = timed_max(lambda: ckpt.save(state, block=True))
        folder = storage.filesystem(ckpt._step_url(state.step))[1]
        fs.invalidate_cache()
        mine = sorted(fs.glob(f"{folder}/__{runtime.rank}_*.distcp"))  # this rank's shard objects
        data = b"".join(fs.cat_file(p) for p in mine)
        size = len(data)
        raw_path = storage.filesystem(storage.join(args.url, "raw", f"rep{rep}-rank{runtime.rank}.bin"))[1]
        put_s = timed_max(lambda: fs.pipe_file(raw_path, data))
        get_s = timed_max(lambda: fs.cat_file(raw_path))
        load_s = timed_max(lambda: ckpt.load(state))
        sizes = dist.all_gather_objects(size)
        rows.append({"save_s": save_s, "load_s": load_s, "raw_put_s": put_s, "raw_get_s": get_s,
                     "bytes": sum(sizes)})
    # ---- part 2: stall in loop.fit ------------------------------------------------------------------------
    stalls = {}
    for mode in ("sync", "async"):
        blocked: list[tuple[str, int, float]] = []
        marks: list[float] = []
        orig_save, orig_wait = checkpoint.Checkpointer.save, checkpoint.Checkpointer.wait

        def save(self, st, block=False, _o=orig_save):
            t0 = time.perf_counter()
            try:
                return _o(self, st, block)
            finally:
                blocked.append(("save_final" if block else "save", st.step, time.perf_counter() - t0))

        def wait(self, _o=orig_wait):
            t0 = time.perf_counter()
            pending = self._pending is not None
            try:
                return _o(self)
            finally:
                if pending:
                    blocked.append(("wait", -1, time.perf_counter() - t0))

        checkpoint.Checkpointer.save, checkpoint.Checkpointer.wait = save, wait
        fit_model = build_model(args.params_m)
        tcfg = TrainerConfig(lr=1e-4, batch_size=args.batch, max_steps=args.steps, checkpoint_every=args.every,
                             keep_checkpoints=1, log_every=1000, num_workers=0, mixed_precision="fp32",
                             async_checkpoint=mode == "async", warmup_steps=0)
        fit_model = parallel.shard_model(fit_model, list(fit_model), runtime, tcfg)

        def loss_fn(m, batch, step):
            marks.append(time.perf_counter())
            x = batch["x"]
            for _ in range(args.passes):
                x = m(x)
            return x.square().mean(), {}

        moto0, cpu0, wall0 = process_cpu_seconds(), cpu_seconds(children=False), time.perf_counter()
        try:
            loop.fit(model=fit_model, dataset=_Rows(args.batch * world * (args.steps + 1), 1024), collate=_collate,
                      loss_fn=loss_fn, cfg=tcfg, out_url=storage.join(args.url, f"fit-{mode}"),
                      fingerprint={"bench": mode}, runtime=runtime)
        finally:
            checkpoint.Checkpointer.save, checkpoint.Checkpointer.wait = orig_save, orig_wait
        usage = {"moto_cpu_s": process_cpu_seconds() - moto0, "rank_cpu_s": cpu_seconds(children=False) - cpu0,
                 "wall_s": time.perf_counter() - wall0}
        # marks[i] = start of step i; a step's duration includes any checkpoint call at its end
        durations = [b - a for a, b in zip(marks, marks[1:])]
        ckpt_steps = [s for s in range(args.every, args.steps, args.every)]  # saved at the end of step s-1 (0-based)
        touched = {s - 1 for s in ckpt_steps} | {s for s in ckpt_steps}
        clean = [d for i, d in enumerate(durations) if i not in touched and i > 0]
        median = statistics.median(clean) if clean else 0.0
        block_s = sum(t for kind, _, t in blocked if kind in ("save", "wait"))
        # the steps that end in a save, or overlap an upload, minus what they would have taken without checkpoints
        extra = sum(durations[i] - median for i in sorted(touched) if i < len(durations))
        per = {"blocked_s": block_s / len(ckpt_steps), "stall_s": extra / len(ckpt_steps), "median_step_s": median,
               "checkpoints": len(ckpt_steps), "calls": [(k, s, round(t, 4)) for k, s, t in blocked], **usage}
        stalls[mode] = dist.all_gather_objects(per)
    if runtime.is_main:
        Path(args.result).write_text(json.dumps({"throughput": rows, "stall": stalls, "world_size": world}))
    dist.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params-m", type=float, default=16.0, help="model parameters, millions")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256, help="rows per rank per step")
    ap.add_argument("--passes", type=int, default=2, help="forward passes per step (sets the step time)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from _common import moto_s3, ratio_line, save_result

    from lift.train.checkpoint import _WRITE_STREAMS

    with moto_s3() as prefix, tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
               __file__, "--worker", "--url", prefix, "--result", result, "--params-m", str(args.params_m),
               "--repeats", str(args.repeats), "--steps", str(args.steps), "--every", str(args.every),
               "--batch", str(args.batch), "--passes", str(args.passes)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            sys.exit(f"worker failed:\n{proc.stderr[-4000:]}")
        out = json.loads(Path(result).read_text())

    rows = out["throughput"][1:] or out["throughput"]  # the first repeat warms clients and connections
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    mib = median["bytes"] / 2**20
    print(f"checkpoint of {args.params_m:g}M parameters + AdamW, {out['world_size']} ranks: {mib:.0f} MiB, "
          f"{_WRITE_STREAMS} objects per rank (raw: 1); medians of {len(rows)} repeats:")
    for k in ("save_s", "raw_put_s", "load_s", "raw_get_s"):
        print(f"  {k:<10} {median[k]:7.3f} s   {mib / median[k]:7.1f} MiB/s")
    # paired: each repeat measures DCP and raw back to back, so a burst of neighbours' load hits both
    save_ratio = statistics.median(r["raw_put_s"] / r["save_s"] for r in rows)
    load_ratio = statistics.median(r["raw_get_s"] / r["load_s"] for r in rows)
    stall = {m: max(r["stall_s"] for r in ranks) for m, ranks in out["stall"].items()}
    blocked = {m: max(r["blocked_s"] for r in ranks) for m, ranks in out["stall"].items()}
    step = statistics.mean(r["median_step_s"] for r in out["stall"]["sync"])
    print(f"loop.fit, checkpoint every {args.every} steps, median step {step:.3f} s:")
    for m in ("sync", "async"):
        print(f"  {m:<6} blocked in checkpoint calls {blocked[m]:.3f} s, stall (step time lost) {stall[m]:.3f} s "
              f"per checkpoint;  calls rank 0: {out['stall'][m][0]['calls']}")
    blocked_ratio = blocked["async"] / max(blocked["sync"], 1e-9)
    lost_ratio = max(stall["async"], blocked["async"]) / max(stall["sync"], blocked["sync"], 1e-9)
    for m in ("sync", "async"):
        r0 = out["stall"][m][0]
        print(f"  {m:<6} whole fit: wall {r0['wall_s']:.1f} s, rank-0 CPU {r0['rank_cpu_s']:.1f} s, "
              f"moto server CPU {r0['moto_cpu_s']:.1f} s (2 cores shared by 2 ranks, their upload threads and moto)")
    print(ratio_line("async / sync step time lost per checkpoint (incl. CPU contention of the upload)", lost_ratio,
                     "<= 0.10", lost_ratio <= 0.10))
    save_result("checkpoints", {"args": vars(args), "throughput": out["throughput"], "median": median,
                                "stall": out["stall"], "ratios": {"save_vs_raw": save_ratio, "load_vs_raw": load_ratio,
                                                                  "async_blocked_vs_sync": blocked_ratio,
                                                                  "async_step_time_lost_vs_sync": lost_ratio}})
    print(ratio_line("DCP load vs raw s3fs get (throughput)", load_ratio, ">= 0.70", load_ratio >= 0.7))
    print(ratio_line("DCP save vs raw s3fs put (throughput)", save_ratio, ">= 0.70", save_ratio >= 0.7))
    print(ratio_line("async / sync time the training loop is blocked per checkpoint", blocked_ratio, "<= 0.10",
                     blocked_ratio <= 0.10))


if __name__ == "__main__":
    main()
