"""Scoring modes: videos/s of `lift score` in `logits` mode (one batched forward per video's three questions,
label probabilities read where the answer states its label) vs `generate` mode (greedy decoding of the whole
answer, label parsed), on the same critic, the same videos and the same decoded frames, in one run; and how often
the two modes give the same label where the generated answer states one.

    .venv/bin/python benchmarks/score_modes.py --critic RUN/critic/model --data RUN/data [--critic OTHER ...]

Each --critic is measured in turn (e.g. a label-first critic, LiFT's format, and a reason-first one). The modes
alternate batch by batch, so a change in the neighbours' load hits both alike; frames are decoded once, before
timing (decoding is the same work in both modes: benchmarks/video_loading.py measures it). Per-core figures come
from CPU time, wall figures are reported beside them. Target (issue 4): logits >= 10x generate in videos/s, with
>= 99% label agreement where the generated label parses. The ratio of the last critic is printed last.

A reason-first critic says its reason before its label, so its `logits` mode decodes that reason greedily before
it reads the label probabilities: it cannot be many times faster than `generate`, and the numbers show by how much
it is not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import Clock, ratio_line, save_result  # noqa: E402

from lift.data import hra
from lift.io import storage, video
from lift.models import scoring


def measure(critic_url: str, items: list[scoring.Item], truth: list[dict], frames_per_video: int | None,
            batch_size: int, max_new_tokens: int, answer_tokens: int | None = None) -> dict:
    scorer = scoring.Scorer(critic_url, torch.device("cpu"), answer_tokens or max_new_tokens)
    if answer_tokens:  # every generated answer exactly this long: the label still opens it, the rest is filler
        scorer.model.generation_config.min_new_tokens = answer_tokens
    frames_n = frames_per_video or scorer.frames
    scorer.frames = frames_n
    frames = [video.read_video(it.url, frames_n).permute(0, 3, 1, 2) for it in items]
    batches = [(items[i:i + batch_size], frames[i:i + batch_size]) for i in range(0, len(items), batch_size)]
    scorer.rate(*batches[0], "logits"), scorer.rate(*batches[0], "generate")  # warm-up, not timed
    wall, cpu = {"logits": 0.0, "generate": 0.0}, {"logits": 0.0, "generate": 0.0}
    rated = {"logits": [], "generate": []}
    for batch_items, batch_frames in batches:
        for mode in ("logits", "generate"):
            with Clock() as c:
                rated[mode] += scorer.rate(batch_items, batch_frames, mode)
            wall[mode] += c.wall
            cpu[mode] += c.cpu
    n = len(items)
    both = parsed = agree = 0
    per_dim = {}
    for d in hra.DIMENSIONS:
        pairs = [(lo["labels"][d], ge["labels"][d]) for lo, ge in zip(rated["logits"], rated["generate"])]
        ok = [(a, b) for a, b in pairs if b is not None]
        per_dim[d] = {"parsed": len(ok), "agree": sum(a == b for a, b in ok)}
        both += len(pairs)
        parsed += len(ok)
        agree += per_dim[d]["agree"]
    result = {
        "critic": critic_url, "answer_format": scorer.answer_format, "answer_tokens": answer_tokens,
        "videos": n, "frames": frames_n,
        "batch_size": batch_size, "max_new_tokens": max_new_tokens, "threads": torch.get_num_threads(),
        "videos_per_s": {m: round(n / wall[m], 3) for m in wall},
        "videos_per_cpu_s": {m: round(n / cpu[m], 3) for m in cpu},
        "wall_s": {m: round(v, 2) for m, v in wall.items()}, "cpu_s": {m: round(v, 2) for m, v in cpu.items()},
        "speedup_wall": round(wall["generate"] / wall["logits"], 2),
        "speedup_cpu": round(cpu["generate"] / cpu["logits"], 2),
        "answers": both, "parsed": parsed, "agreement_pct": round(100.0 * agree / max(parsed, 1), 2),
        "per_dimension": per_dim,
        "accuracy_pct": {m: round(100.0 * sum(r["labels"][d] == t[d] for r, t in zip(rated[m], truth)
                                              for d in hra.DIMENSIONS) / (3 * n), 2) for m in rated},
        "example_answer": rated["generate"][0]["reasons"],
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--critic", action="append", required=True, help="trained critic folder/URL (repeatable)")
    ap.add_argument("--data", required=True, help="folder with manifest.jsonl (e.g. a toy world's data/)")
    ap.add_argument("--split", default="test", help="manifest split whose videos are scored (default: test)")
    ap.add_argument("--videos", type=int, default=48, help="videos scored per critic and mode (default: 48)")
    ap.add_argument("--batch-size", type=int, default=8, help="videos per forward, as `lift score` (default: 8)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="longest generated answer (default: 64)")
    ap.add_argument("--frames", type=int, default=None, help="frames per video (default: the critic's own)")
    ap.add_argument("--answer-tokens", type=int, action="append", default=[],
                    help="also measure label-first critics with every generated answer forced to this many tokens "
                         "(repeatable): LiFT-HRA's reasons are longer than the toy's ~25 tokens and the original "
                         "release generated up to 512")
    args = ap.parse_args()
    manifest = storage.join(args.data, "manifest.jsonl")
    records = [r for r in hra.load_manifest(manifest) if r.split == args.split][:args.videos]
    items = [scoring.Item(r.id, r.video, hra.video_url(manifest, r), r.prompt) for r in records]
    results = []
    for url in args.critic:
        runs = [measure(url, items, [rec.labels for rec in records], args.frames, args.batch_size,
                        args.max_new_tokens)]
        if runs[0]["answer_format"] == "label_first":
            runs += [measure(url, items, [rec.labels for rec in records], args.frames, args.batch_size,
                             args.max_new_tokens, n) for n in args.answer_tokens]
        for r in runs:
            report(url, r)
        results += runs
    path = save_result("score_modes", {"results": results, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    print(f"results: {path}")
    for r in results:
        print(f"agreement {_name(r)}: {r['agreement_pct']:.2f}% of {r['parsed']} parsed "
              f"(target >= 99%: {'met' if r['agreement_pct'] >= 99 else 'NOT met'})")
    # the emulated long answers first; the critics' own answers last, the label-first one (LiFT's format) last
    for r in sorted(results, key=lambda r: (r["answer_tokens"] is None, r["answer_format"] == "label_first")):
        print(ratio_line(f"logits/generate videos/s, {_name(r)} (wall; CPU {r['speedup_cpu']:.1f}x)",
                         r["speedup_wall"], ">= 10x", r["speedup_wall"] >= 10))


def _name(r: dict) -> str:
    forced = f", answers forced to {r['answer_tokens']} tokens" if r["answer_tokens"] else ""
    return f"{r['answer_format']} critic{forced}"


def report(url: str, r: dict) -> None:
    print(f"{url} ({_name(r)}, {r['videos']} videos x 3 questions, {r['frames']} frames, "
          f"batch {r['batch_size']}, {r['threads']} thread(s)):")
    for m in ("logits", "generate"):
        print(f"  {m:8s}  {r['videos_per_s'][m]:8.2f} videos/s wall  {r['videos_per_cpu_s'][m]:8.2f} videos/CPU-s"
              f"  ({r['wall_s'][m]:.1f} s wall, {r['cpu_s'][m]:.1f} s CPU)")
    print(f"  label agreement where the generated label parses: {r['agreement_pct']:.2f}% "
          f"({r['parsed']} of {r['answers']} answers parse); accuracy vs the ratings: "
          f"logits {r['accuracy_pct']['logits']:.1f}%, generate {r['accuracy_pct']['generate']:.1f}%")


if __name__ == "__main__":
    main()
