#!/usr/bin/env python
"""Make the toy-pretrained models shipped in lift/pretrained/ (`lift models toy` copies them into a run):

    critic-toy      the start of the toy world's critic, as a pretrained VLM is the start of LiFT's: the tiny zoo
                    critic pretrained on toy clips and their captions (lift.zoo.pretrain_critic), then taught to
                    rate by `lift critic` on a toy world of its own (seed 1000, never a run's)
    cogvideox-toy   the toy base text-to-video pipeline: the tiny zoo CogVideoX with its VAE and transformer
                    trained on the whole rated toy set, defects included (`lift base`)

    .venv/bin/python scripts/make-toy-pretrained.py                 # ~1 hour on 2 cores; rewrites lift/pretrained/
    .venv/bin/python scripts/make-toy-pretrained.py --work runs/toy-pretrained --out /tmp/pretrained

Rerun it whenever the zoo's SPEC changes (`lift models toy` refuses models made from another zoo). Finished steps
in --work are skipped on a rerun, as every stage's are. Each output folder gets `pretrained.json`: the zoo it
came from, these arguments, and the training counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lift import cli, logs, models, storage, zoo  # noqa: E402

SEED = 0  # the zoo seed: `lift models toy` checks it against the zoo it writes beside
SCORER_KEYS = ("answer_format", "frames", "sample_fps")  # how `lift score` prompts the critic: kept in its marker
RATINGS_SEED = 1000  # the toy world the critic start is rated on, apart from the runs' (seeds 0, 1, 2, ...)


def ship(src_url: str, dest: str, provenance: dict) -> None:
    """Copy a model folder to `dest` without our markers and saved configs, then write its provenance."""
    local = models.local_dir(src_url)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dest))) as tmp:
        staged = os.path.join(tmp, "model")
        shutil.copytree(local, staged, ignore=shutil.ignore_patterns(storage.MARKER, "config.yaml", cli.STARTED))
        with open(os.path.join(staged, zoo.PROVENANCE), "w") as f:
            json.dump(provenance, f, indent=1, sort_keys=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(staged, dest)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/toy-pretrained", help="working run folder (default: %(default)s)")
    ap.add_argument("--out", default=zoo.PRETRAINED, help="where the two folders go (default: lift/pretrained)")
    ap.add_argument("--clips", type=int, default=2000,
                    help="rated clips of each toy world, the base's and the critic's (default: 2000)")
    ap.add_argument("--scene-steps", type=int, default=1000, help="critic: vision-probe steps (default: 1000)")
    ap.add_argument("--caption-steps", type=int, default=500, help="critic: caption steps (default: 500)")
    ap.add_argument("--critic-steps", type=int, default=1200,
                    help="critic: `lift critic` steps of 16 rated examples (default: 1200)")
    ap.add_argument("--vae-steps", type=int, default=600, help="base: VAE steps of 4 clips (default: 600)")
    ap.add_argument("--transformer-steps", type=int, default=3200,
                    help="base: transformer steps of 8 clips (default: 3200)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (default: 1)")
    args = ap.parse_args()
    logs.setup()
    work = args.work
    zoo.write_tiny(storage.join(work, "models"), seed=SEED)
    if cli.main(["data", "toy", storage.join(work, "data"), f"toy.num_clips={args.clips}", f"seed={SEED}"]):
        return 1
    captions = storage.join(work, "critic-captions")
    critic_counts = zoo.pretrain_critic(storage.join(work, "models", "critic"), captions,
                                        scene_steps=args.scene_steps, caption_steps=args.caption_steps,
                                        num_workers=args.workers, seed=SEED)
    ratings = storage.join(work, "critic-data")  # a toy world of its own: no run's clips are in it
    if cli.main(["data", "toy", ratings, f"toy.num_clips={args.clips}", f"seed={RATINGS_SEED}"]):
        return 1
    if cli.main(["critic", f"run={work}", f"data={ratings}", f"model.name_or_path={captions}",
                 f"trainer.max_steps={args.critic_steps}", f"trainer.num_workers={args.workers}"]):
        return 1
    critic_counts = {"captions": critic_counts, "ratings": storage.read_marker(storage.join(work, "critic"))["counts"]}
    if cli.main(["base", f"run={work}", "train=true", f"vae.max_steps={args.vae_steps}",
                 f"transformer.max_steps={args.transformer_steps}", f"vae.num_workers={args.workers}",
                 f"transformer.num_workers={args.workers}"]):
        return 1
    made = {"zoo_seed": SEED, "zoo_spec_hash": zoo.spec_hash(SEED), "script": "scripts/make-toy-pretrained.py",
            "args": {k: v for k, v in vars(args).items() if k not in ("work", "out", "workers")}}
    os.makedirs(args.out, exist_ok=True)
    exported = storage.read_marker(storage.join(work, "critic", "model"))
    ship(storage.join(work, "critic", "model"), os.path.join(args.out, "critic-toy"),
         {**made, "counts": critic_counts, "marker": {k: exported[k] for k in SCORER_KEYS}})
    base_counts = storage.read_marker(storage.join(work, "base"))["counts"]
    ship(storage.join(work, "base"), os.path.join(args.out, "cogvideox-toy"), {**made, "counts": base_counts})
    print(json.dumps({"out": args.out, "critic": critic_counts, "base": base_counts}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
