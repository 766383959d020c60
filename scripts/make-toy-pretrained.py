#!/usr/bin/env python
"""Make the toy-pretrained models shipped in lift/toy/pretrained/ (`lift models toy` copies them into a run):

    critic-toy      the start of the toy world's critic, as a pretrained VLM is the start of LiFT's: the tiny zoo
                    critic pretrained on toy clips and their captions (lift.toy.zoo.pretrain_critic), then taught to
                    rate by `lift critic` on a toy world of its own (seed 1000, never a run's)
    cogvideox-toy   the toy base text-to-video pipeline: the tiny zoo CogVideoX with its VAE and transformer
                    trained on the whole rated toy set, defects included (`lift base`)

    .venv/bin/python scripts/make-toy-pretrained.py        # ~1.5 hours on 2 cores; rewrites lift/toy/pretrained/
    .venv/bin/python scripts/make-toy-pretrained.py --models cogvideox-toy    # the base alone
    .venv/bin/python scripts/make-toy-pretrained.py --work runs/toy-pretrained --out /tmp/pretrained

Rerun it for a model whenever its part of the zoo's SPEC changes (`lift models toy` refuses a model made from
another). Finished steps in --work are skipped on a rerun, as every stage's are. Each output folder gets
`pretrained.json`: the zoo part it came from, these arguments, and the training counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lift import cli, models
from lift.core import logs
from lift.io import storage
from lift.stages import base
from lift.toy import zoo

SEED = 0  # the zoo seed: `lift models toy` checks it against the zoo it writes beside
SCORER_KEYS = ("answer_format", "frames", "sample_fps")  # how `lift score` prompts the critic: kept in its marker
RATINGS_SEED = 1000  # the toy world the critic start is rated on, apart from the runs' (seeds 0, 1, 2, ...)


CRITIC_ARGS = ("critic_clips", "scene_steps", "caption_steps", "critic_steps")
BASE_ARGS = ("clips", "vae_steps", "transformer_steps")


def provenance(args: argparse.Namespace, name: str, keys: tuple[str, ...]) -> dict:
    return {"zoo_seed": SEED, "zoo_spec_hash": zoo.spec_hash(SEED, zoo.TOY_MODELS[name]),
            "script": "scripts/make-toy-pretrained.py", "args": {k: getattr(args, k) for k in keys}}


def drop_build_paths(folder: str) -> None:
    """Remove `_name_or_path` (the folder it was saved from, on the machine that made it) from every JSON config."""
    for root, _, names in os.walk(folder):
        for name in names:
            if name.endswith(".json"):
                path = os.path.join(root, name)
                with open(path) as f:
                    data = json.load(f)
                if isinstance(data, dict) and data.pop("_name_or_path", None) is not None:
                    with open(path, "w") as f:
                        json.dump(data, f, indent=2, sort_keys=True)
                        f.write("\n")


def shard_large_weights(folder: str, limit: str = "5MB") -> None:
    """Split every safetensors file over `limit` into shards with an index, as `save_pretrained(max_shard_size=...)`
    writes them (from_pretrained reads either form): the repository takes no file over 6 MB."""
    for root, _, names in os.walk(folder):
        for name in [n for n in names if n.endswith(".safetensors")]:
            path = os.path.join(root, name)
            weights = load_file(path)
            split = split_torch_state_dict_into_shards(
                weights, filename_pattern=name.replace(".safetensors", "{suffix}.safetensors"), max_shard_size=limit)
            if not split.is_sharded:
                continue
            for shard, tensor_names in split.filename_to_tensors.items():
                save_file({t: weights[t] for t in tensor_names}, os.path.join(root, shard), metadata={"format": "pt"})
            with open(f"{path}.index.json", "w") as f:
                json.dump({"metadata": split.metadata, "weight_map": split.tensor_to_filename}, f, indent=2)
            os.remove(path)


def ship(src_url: str, dest: str, provenance: dict) -> dict:
    """Copy a model folder to `dest` without our markers, saved configs and build paths; write its provenance."""
    local = models.local_dir(src_url)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dest))) as tmp:
        staged = os.path.join(tmp, "model")
        shutil.copytree(local, staged, ignore=shutil.ignore_patterns(*base.OURS))
        drop_build_paths(staged)
        shard_large_weights(staged)
        with open(os.path.join(staged, zoo.PROVENANCE), "w") as f:
            json.dump(provenance, f, indent=1, sort_keys=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(staged, dest)
    return provenance["counts"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/toy-pretrained", help="working run folder (default: %(default)s)")
    ap.add_argument("--out", default=zoo.PRETRAINED, help="where the two folders go (default: lift/toy/pretrained)")
    ap.add_argument("--clips", type=int, default=2000, help="base: rated toy clips it is trained on (default: 2000)")
    ap.add_argument("--vae-steps", type=int, default=1500, help="base: VAE steps of 4 clips (default: 1500)")
    ap.add_argument("--transformer-steps", type=int, default=10000,
                    help="base: transformer steps of 8 clips (default: 10000)")
    ap.add_argument("--critic-clips", type=int, default=4000,
                    help="critic: rated clips of its own toy world (default: 4000)")
    ap.add_argument("--scene-steps", type=int, default=6000, help="critic: vision-probe steps (default: 6000)")
    ap.add_argument("--caption-steps", type=int, default=500, help="critic: caption steps (default: 500)")
    ap.add_argument("--critic-steps", type=int, default=2400,
                    help="critic: `lift critic` steps of 16 rated examples (default: 2400)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (default: 1)")
    ap.add_argument("--models", nargs="+", choices=list(zoo.TOY_MODELS), default=list(zoo.TOY_MODELS),
                    help="which to make (default: both)")
    args = ap.parse_args()
    logs.setup()
    work = args.work
    zoo.write_tiny(storage.join(work, "models"), seed=SEED)
    os.makedirs(args.out, exist_ok=True)
    made = {}
    if "critic-toy" in args.models:
        captions = storage.join(work, "critic-captions")
        caption_counts = zoo.pretrain_critic(storage.join(work, "models", "critic"), captions,
                                             scene_steps=args.scene_steps, caption_steps=args.caption_steps,
                                             num_workers=args.workers, seed=SEED)
        ratings = storage.join(work, "critic-data")  # a toy world of its own: no run's clips are in it
        if cli.main(["data", "toy", ratings, f"toy.num_clips={args.critic_clips}", f"seed={RATINGS_SEED}"]):
            return 1
        if cli.main(["critic", "--config", str(ROOT / "configs" / "local" / "critic-accuracy.yaml"), f"run={work}",
                     f"data={ratings}", f"model.name_or_path={captions}",
                     f"trainer.max_steps={args.critic_steps}", f"trainer.num_workers={args.workers}"]):
            return 1
        counts = {"captions": caption_counts, "ratings": storage.read_marker(storage.join(work, "critic"))["counts"]}
        exported = storage.read_marker(storage.join(work, "critic", "model"))
        made["critic-toy"] = ship(storage.join(work, "critic", "model"), os.path.join(args.out, "critic-toy"),
                                  {**provenance(args, "critic-toy", CRITIC_ARGS), "counts": counts,
                                   "marker": {k: exported[k] for k in SCORER_KEYS}})
    if "cogvideox-toy" in args.models:
        if cli.main(["data", "toy", storage.join(work, "data"), f"toy.num_clips={args.clips}", f"seed={SEED}"]):
            return 1
        if cli.main(["base", f"run={work}", f"start={work}/models/cogvideox", "train=true",
                     f"vae.max_steps={args.vae_steps}",
                     f"transformer.max_steps={args.transformer_steps}", f"vae.num_workers={args.workers}",
                     f"transformer.num_workers={args.workers}"]):
            return 1
        counts = storage.read_marker(storage.join(work, "base"))["counts"]
        made["cogvideox-toy"] = ship(storage.join(work, "base"), os.path.join(args.out, "cogvideox-toy"),
                                     {**provenance(args, "cogvideox-toy", BASE_ARGS), "counts": counts})
    print(json.dumps({"out": args.out, **made}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
