"""`lift serve`'s batching gain: videos/s and request latency (p50, p99) of one live server on the tiny critic (CPU)
under 16 concurrent clients vs the same number of videos sent one request at a time by one client.

    .venv/bin/python benchmarks/serve.py [--videos 64] [--clients 16] [--batch-size 16]

Every request carries one video (inline, as a remote trainer sends it) with a prompt no earlier request used, so
nothing comes from the result cache: the difference is the micro-batcher putting concurrent requests into one
critic forward. Both phases run against the same server process in one run; the concurrent phase runs first and
last (its mean is used), so a change in the neighbours' load hits both alike. The ratio (concurrent videos/s over
sequential videos/s) is printed last.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from _common import _free_port, ratio_line, save_result  # noqa: E402

from lift import stages  # noqa: E402
from lift.io import storage  # noqa: E402
from lift.models import scoring  # noqa: E402
from lift.stages import runner  # noqa: E402
from lift.toy import zoo  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def batches(url: str) -> tuple[float, float]:
    """(videos, batches) the server's critic has rated so far, from its metrics."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    value = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("lift_serve_batch_size_")}
    return value["lift_serve_batch_size_sum"], value["lift_serve_batch_size_count"]


def phase(url: str, videos: list[str], prompts: list[str], clients: int) -> dict:
    """Send each (video, prompt) as its own request from `clients` threads; videos/s, latencies and the mean
    batch the critic ran."""
    def one(i: int) -> float:
        start = time.perf_counter()
        httpx.post(f"{url}/v1/score", json={"items": [{"video_b64": videos[i], "prompt": prompts[i]}]},
                   timeout=600).raise_for_status()
        return time.perf_counter() - start

    rated = batches(url)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(len(videos))))
    wall = time.perf_counter() - start
    done, runs = (after - before for after, before in zip(batches(url), rated))
    return {"clients": clients, "videos": len(videos), "wall_s": round(wall, 3), "mean_batch": round(done / runs, 2),
            "videos_per_s": round(len(videos) / wall, 3), "p50_s": round(percentile(latencies, 0.5), 4),
            "p99_s": round(percentile(latencies, 0.99), 4), "mean_s": round(statistics.mean(latencies), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=64, help="videos per phase (default 64)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--batch-size", type=int, default=16, help="the server's batch_size (default 16)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's max_wait_ms (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lift-bench-serve-") as tmp:
        zoo.write_tiny(f"{tmp}/zoo")
        runner.run_stage("data", stages.load("data", None, [f"out={tmp}/data", "toy.num_clips=24",
                                                            "toy.num_prompts=4", "toy.num_real=4"]))
        items = scoring.read_items(f"{tmp}/data/manifest.jsonl")
        inline = [base64.b64encode(storage.read_bytes(it.url)).decode() for it in items]
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "lift", "serve", f"critic={tmp}/zoo/critic", f"port={port}", "anonymous=true",
             f"batch_size={args.batch_size}", f"max_wait_ms={args.max_wait_ms}", f"max_queue={4 * args.videos}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 300
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            else:
                raise RuntimeError("lift serve did not become ready")

            def batch(tag: str) -> tuple[list[str], list[str]]:  # new prompts: nothing from the cache
                return ([inline[i % len(items)] for i in range(args.videos)],
                        [f"{items[i % len(items)].prompt} ({tag} {i})" for i in range(args.videos)])

            before = phase(url, *batch("concurrent-1"), args.clients)
            sequential = phase(url, *batch("sequential"), 1)
            after = phase(url, *batch("concurrent-2"), args.clients)
        finally:
            server.terminate()
            server.wait(60)
    concurrent = {k: round((before[k] + after[k]) / 2, 4)
                  for k in ("videos_per_s", "p50_s", "p99_s", "mean_s", "mean_batch")}
    gain = concurrent["videos_per_s"] / sequential["videos_per_s"]
    result = {"config": vars(args), "sequential": sequential, "concurrent_runs": [before, after],
              "concurrent": concurrent, "batching_gain": round(gain, 3)}
    path = save_result("serve", result)
    print(f"one client, one video per request: {sequential['videos_per_s']:.2f} videos/s, p50 "
          f"{sequential['p50_s'] * 1000:.0f} ms, p99 {sequential['p99_s'] * 1000:.0f} ms")
    print(f"{args.clients} concurrent clients: {concurrent['videos_per_s']:.2f} videos/s, p50 "
          f"{concurrent['p50_s'] * 1000:.0f} ms, p99 {concurrent['p99_s'] * 1000:.0f} ms, mean batch "
          f"{concurrent['mean_batch']:.1f} videos (runs: {before['videos_per_s']:.2f}, "
          f"{after['videos_per_s']:.2f} videos/s)")
    print(f"result: {path}")
    print(ratio_line(f"videos/s with {args.clients} concurrent clients / one at a time", gain, "> 1", gain > 1))


if __name__ == "__main__":
    main()
