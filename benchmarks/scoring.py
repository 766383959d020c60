"""Scoring: `lift score` videos/s in `logits` mode (batches of 8 videos x 3 questions, each video's vision features
computed once for its 3 questions, decoding in 2 prefetching DataLoader workers) vs naive loops with the same model
(the tiny Qwen2.5-VL critic of the zoo), and the scaling of the stage with ranks (1, 2) under torchrun.

    .venv/bin/python benchmarks/scoring.py          # ~2-3 min on 2 cores
    .venv/bin/python benchmarks/scoring.py --videos 48 --naive 8

Baselines, each decoding in the loop, one video after the other, no prefetch:
  naive per video     decode, then one forward with the video's 3 questions (vision tower run per question)
  naive per question  decode, then 3 forwards of one question each
  naive generate      decode, then per question a greedy answer of up to 64 tokens, label parsed from the text
                      (the shape of LiFT's released scorer, which samples up to 3 x 512 tokens per video)
Target (issue 9): batched >= 5x the naive per-video loop on CPU. Clips: the toy world's 16 frames at 32x32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "one red circle moves left on a blue background"


def write_rollouts(folder: str, clips: list[str]) -> str:
    """A rollouts folder (manifest.jsonl + videos/) as `lift generate` leaves it."""
    import shutil

    os.makedirs(f"{folder}/videos", exist_ok=True)
    lines = []
    for i, src in enumerate(clips):
        shutil.copyfile(src, f"{folder}/videos/v{i:04d}.mp4")
        lines.append(json.dumps({"id": f"v{i:04d}", "video": f"videos/v{i:04d}.mp4", "prompt": PROMPT}))
    Path(f"{folder}/manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def naive(scorer, items, how: str):
    """Wall and CPU seconds of a naive loop over `items`: "video", "question" or "generate" (module docstring)."""
    import torch
    from _common import Clock

    from lift.data import hra
    from lift.io import video

    with torch.inference_mode(), Clock() as clock:
        for it in items:
            frames = video.read_video(it.url, scorer.frames).permute(0, 3, 1, 2)
            texts = scorer._prompts([it])
            if how == "video":
                scorer._label_probs(texts, [frames] * len(hra.DIMENSIONS))  # no feature sharing
            for text in texts if how != "video" else ():
                if how == "question":
                    scorer._label_probs([text], [frames])
                else:
                    scorer._generate([text], [frames], scorer.max_new_tokens)
    return clock


def worker(args) -> None:
    """Under torchrun: `lift score` (score.run) on the rollouts; rank 0 writes its wall time."""
    import torch

    from lift import stages
    from lift.core import dist
    from lift.stages import score

    torch.set_num_threads(1)
    runtime = dist.init()
    cfg = stages.load("score", None, [f"rollouts={args.rollouts}", f"critic={args.critic}", f"out={args.out}",
                                      "mode=logits", "batch_size=8"])
    dist.barrier()
    t0 = time.perf_counter()
    stats = score.run(cfg)
    dist.barrier()
    if runtime.is_main:
        Path(args.result).write_text(json.dumps({"seconds": time.perf_counter() - t0, "stats": stats}))
    dist.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=96)
    ap.add_argument("--naive", type=int, default=16, help="videos timed in each naive loop")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("rollouts", "critic", "out", "result"):
        ap.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import torch
    from _common import Clock, cpu_seconds, ratio_line, save_result
    from video_loading import make_clips

    from lift.core import dist
    from lift.models import scoring
    from lift.toy import zoo

    with tempfile.TemporaryDirectory(prefix="lift-bench-score-") as tmp:
        critic_dir = f"{tmp}/critic"
        zoo.build_critic(critic_dir, seed=0)
        rollouts = write_rollouts(f"{tmp}/rollouts", make_clips(args.videos, 16, 32, 32))
        items = scoring.read_items(f"{rollouts}/manifest.jsonl")
        scorer = scoring.Scorer(critic_dir, torch.device("cpu"))
        runtime = dist.init()
        # One intra-op thread, as torchrun gives each rank: on 2 shared cores, 2 OpenMP threads beside the decode
        # workers made every path 3-5x slower (measured), which would only blur the comparison.
        torch.set_num_threads(1)
        threads = torch.get_num_threads()
        naive(scorer, items[:2], "video")  # warm-up: first calls allocate and compile kernels
        generate_n = max(2, args.naive // 4)
        clocks = {"naive_generate": (generate_n, naive(scorer, items[:generate_n], "generate")),
                  "naive_per_question": (args.naive, naive(scorer, items[:args.naive], "question")),
                  "naive_per_video": (args.naive, naive(scorer, items[:args.naive], "video"))}
        with Clock() as clock:  # decode workers are reaped at the end of the shard: their CPU is counted
            records = scoring.score_sharded(items, scorer, f"{tmp}/scores-inproc", "logits", 8, 1, runtime,
                                          lambda it, r: {"id": it.id, **r})
        assert len(records) == len(items)
        clocks["batched"] = (len(items), clock)
        scorer._precomputed_video = False  # A/B: the vision tower once per question, as before
        with Clock() as clock:
            scoring.score_sharded(items, scorer, f"{tmp}/scores-ab", "logits", 8, 1, runtime, lambda it, r: {})
        clocks["batched_vision_per_question"] = (len(items), clock)
        scorer._precomputed_video = True
        rates = {k: n / c.wall for k, (n, c) in clocks.items()}
        cpu_rates = {k: n / c.cpu for k, (n, c) in clocks.items()}
        print(f"tiny critic, {len(items)} toy clips (16x32x32), logits mode, torch threads {threads}, in one process:")
        for k in rates:
            print(f"  {k:<20} {rates[k]:7.2f} videos/s   {cpu_rates[k]:7.2f} videos/CPU-s")

        scaling = {}
        for nproc in (1, 2):
            cpu0 = cpu_seconds()
            result = f"{tmp}/rank-result-{nproc}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                   __file__, "--worker", "--rollouts", rollouts, "--critic", critic_dir,
                   "--out", f"{tmp}/scores-{nproc}", "--result", result]
            proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                                  timeout=900)
            if proc.returncode != 0:
                sys.exit(f"torchrun --nproc-per-node {nproc} failed:\n{proc.stderr[-4000:]}")
            seconds = json.loads(Path(result).read_text())["seconds"]
            cpu = cpu_seconds() - cpu0  # every process of the run, start-up and imports included
            scaling[nproc] = {"seconds": seconds, "videos_per_s": len(items) / seconds, "cpu_s_whole_run": cpu}
            print(f"  lift score, torchrun --nproc-per-node {nproc} (1 thread per rank, critic load included): "
                  f"{len(items) / seconds:6.2f} videos/s; whole run {cpu:.1f} CPU-s")
        efficiency = scaling[2]["videos_per_s"] / (2 * scaling[1]["videos_per_s"])
        print(f"  2-rank scaling efficiency {efficiency:.2f} ({os.cpu_count()} cores shared by 2 ranks x (1 main + 2 "
              f"decode workers))")

    vs_video, vs_question = rates["batched"] / rates["naive_per_video"], rates["batched"] / rates["naive_per_question"]
    vs_generate = rates["batched"] / rates["naive_generate"]
    cpu_vs_video = cpu_rates["batched"] / cpu_rates["naive_per_video"]
    save_result("scoring", {"args": vars(args), "videos_per_s": rates, "videos_per_cpu_s": cpu_rates,
                            "torch_threads": threads,
                            "ranks": scaling, "ratios": {"batched_vs_naive_per_video": vs_video,
                                                         "batched_vs_naive_per_question": vs_question,
                                                         "batched_vs_naive_generate": vs_generate,
                                                         "batched_vs_naive_per_video_cpu": cpu_vs_video,
                                                         "two_rank_efficiency": efficiency}})
    print(ratio_line("2 ranks vs 2 x 1 rank (scaling efficiency)", efficiency, "report", True))
    print(ratio_line("batched vs naive generate loop (LiFT release shape)", vs_generate, ">= 5", vs_generate >= 5))
    print(ratio_line("batched vs naive per-question loop (videos/s)", vs_question, ">= 5", vs_question >= 5))
    print(ratio_line("batched vs naive per-video loop (videos per CPU-second)", cpu_vs_video, ">= 5",
                     cpu_vs_video >= 5))
    print(ratio_line("batched vs naive per-video loop (videos/s)", vs_video, ">= 5", vs_video >= 5))


if __name__ == "__main__":
    main()
