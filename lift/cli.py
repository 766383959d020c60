"""The `lift` command: one subcommand per stage of docs/DESIGN, plus data, models, wait and config helpers.

    lift data toy OUT_URL [key=value ...]
    lift data import RELEASE_JSON_URL VIDEOS_URL OUT_URL [key=value ...]
    lift data export MANIFEST_URL OUT_JSON_URL [--format llava]
    lift models tiny OUT_URL
    lift models toy OUT_URL
    lift STAGE [--config FILE_OR_URL] [--force] [key=value ...]     # critic, critic-eval, generate, score, align, evaluate
    lift pipeline [RUN_URL] [--config FILE_OR_URL] [--force] [key=value ...]
    lift report RUN_URL
    lift wait URL [URL ...]
    lift config show STAGE [--config FILE_OR_URL] [key=value ...]
    lift submit STAGE [launch options] [--dry-run] [-- key=value ...]   # a PyTorchJob (lift/submit.py)
    lift status JOB | lift logs JOB [--follow]

Exit status is 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback

from lift import config, dist, logs, storage, submit

log = logging.getLogger("lift")

# stage -> "module:function" taking the resolved config and returning the counts for its _SUCCESS marker.
# None marks a stage whose implementation has not landed yet.
STAGES: dict[str, str | None] = {
    "base": "lift.base:run",
    "critic": "lift.critic:run",
    "critic-eval": "lift.critic_eval:run",
    "generate": "lift.generate:run",
    "score": "lift.score:run",
    "align": "lift.align:run",
    "evaluate": "lift.evaluate:run",
}
STAGE_HELP = {
    "base": "toy world: train the tiny zoo's VAE and transformer into a base model worth aligning",
    "critic": "train the critic VLM on human ratings with reasons (SFT, LoRA or full, FSDP2)",
    "critic-eval": "accuracy table of the critic on the test split",
    "generate": "roll out videos from the base text-to-video model",
    "score": "rate rollouts with the critic and compute rewards",
    "align": "reward-weighted fine-tuning of the text-to-video model (FSDP2)",
    "evaluate": "compare base and aligned models with the critic",
}
# Commands of `lift data` / `lift models` -> implementation; None until built.
DATA_COMMANDS: dict[str, str | None] = {
    "toy": "lift.toy:generate", "import": "lift.release:import_release", "export": "lift.release:export_release",
}
MODEL_COMMANDS: dict[str, str | None] = {"tiny": "lift.zoo:write_tiny", "toy": "lift.zoo:write_toy"}
REPORT: str | None = "lift.report:write_report"  # "module:function" writing RUN_URL/report/ and returning its index URL
STARTED = "_STARTED"  # which config is writing this output: parts of another config are never reused
PIPELINE_ORDER = ["data", "critic", "critic-eval", "generate", "score", "align", "evaluate"]


class NotBuilt(RuntimeError):
    """A command whose implementation has not landed yet."""


def _resolve(target: str | None, what: str):
    if target is None:
        raise NotBuilt(f"{what} is not built yet")
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)


def sealed_inputs(cfg) -> dict[str, str]:
    """Config key -> identity (config hash @ time) of each sealed folder the stage reads: the folder a path or URL
    value names, or the folder of a file it names. A stage whose inputs were rebuilt since it ran is rerun,
    as one whose own config changed (new rollouts need new scores)."""
    inputs = {}
    for key, value in _leaves(config.OmegaConf.to_container(cfg, resolve=True)):
        if key.split(".")[-1] in ("run", "out", "work") or not isinstance(value, str) or "/" not in value:
            continue
        looks_like_file = "." in value.rstrip("/").rsplit("/", 1)[-1]  # prompts.jsonl, release.json
        seal = storage.seal(storage.parent(value) if looks_like_file else value)
        if seal:
            inputs[key] = seal
    return inputs


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def run_stage(stage: str, target: str | None, cfg, force: bool = False) -> dict | None:
    """Skip-if-sealed, run, then seal: the marker contract of every stage in one place.

    Committed part files are kept for a rerun of the same config (so it finishes only the rest) and dropped when
    the config changed or `--force` is given, together with the old marker; `--force` also drops checkpoints.
    The stage function does the work (on every rank); rank 0 saves the resolved config and writes `_SUCCESS`
    last, after all ranks are done.
    """
    fn = _resolve(target, f"stage '{stage}'")
    digest, inputs = config.config_hash(cfg), sealed_inputs(cfg)
    marker = storage.read_marker(cfg.out)
    if marker and marker.get("config_hash") == digest and marker.get("inputs", {}) == inputs and not force:
        logs.event(log, f"{stage}: already complete, skipping (use --force to rerun)", out=cfg.out, config_hash=digest)
        return marker.get("counts")
    started_url = storage.join(cfg.out, STARTED)
    started = storage.read_json(started_url) if storage.exists(started_url) else None
    stale = force or bool(marker) or (started is not None and (started.get("config_hash"), started.get("inputs", {}))
                                      != (digest, inputs))
    runtime = dist.init()
    if runtime.is_main:
        if stale:
            logs.event(log, f"{stage}: discarding earlier output of {'--force' if force else 'another config'}",
                       out=cfg.out, new=digest)
            storage.unseal(cfg.out, drop=("checkpoints",) if force else ())
        storage.write_json(started_url, {"stage": stage, "config_hash": digest, "inputs": inputs})
    dist.barrier()
    start = time.time()
    counts = fn(cfg) or {}
    dist.barrier()
    if runtime.is_main:
        config.save(cfg, storage.join(cfg.out, "config.yaml"))
        storage.write_marker(cfg.out, stage, digest, counts, seconds=round(time.time() - start, 1), inputs=inputs)
    dist.barrier()
    logs.event(log, f"{stage}: done", out=cfg.out, seconds=round(time.time() - start, 1), **counts)
    return counts


def _stage_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"Every key of `lift config show {name}` can be set as key=value.")
    p.add_argument("--config", metavar="FILE_OR_URL", help="YAML config (local path or any storage URL)")
    p.add_argument("--force", action="store_true", help="rerun even if the output's _SUCCESS marker matches")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. trainer.lr=1e-5")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lift", description="LiFT on Kubernetes: human-feedback alignment of text-to-video models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `lift COMMAND --help` for a command's options; `lift config show STAGE` for its config keys.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="build the HRA manifest: toy world, import or export of LiFT-HRA",
                          description="Build, import or export the human-rating (HRA) manifest.")
    dsub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    toy = dsub.add_parser("toy", help="generate the synthetic toy world (videos, labels with reasons, prompts)",
                          description="Generate the toy world from a seed: manifest.jsonl, videos/, prompts.jsonl, real/.")
    toy.add_argument("out", metavar="OUT_URL", help="output folder URL")
    imp = dsub.add_parser("import", help="convert the public LiFT-HRA release (LLaVA JSON) into a manifest",
                          description="Convert the public LiFT-HRA release into our manifest with a train/test split.")
    imp.add_argument("release", metavar="RELEASE_JSON_URL", help="the release's LLaVA-conversation JSON")
    imp.add_argument("videos", metavar="VIDEOS_URL", help="folder (or zip part) holding the release's videos")
    imp.add_argument("out", metavar="OUT_URL", help="output folder URL")
    exp = dsub.add_parser("export", help="convert a manifest back into the release (LLaVA) form",
                          description="Convert a manifest back into the LiFT-HRA release form.")
    exp.add_argument("manifest", metavar="MANIFEST_URL", help="manifest.jsonl URL")
    exp.add_argument("dest", metavar="OUT_JSON_URL", help="output JSON URL")
    exp.add_argument("--format", choices=["llava"], default="llava", help="release format (default: llava)")
    for p in (toy, imp):
        p.add_argument("--config", metavar="FILE_OR_URL", help="YAML config for the data stage")
        p.add_argument("--force", action="store_true", help="rebuild even if the output's marker matches")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of `lift config show data`")

    models = sub.add_parser("models", help="the tiny model zoo used by tests and the local default",
                            description="Write tiny randomly initialised models in the real checkpoints' layouts.")
    msub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    tiny = msub.add_parser("tiny", help="write OUT_URL/critic, OUT_URL/cogvideox and OUT_URL/wan",
                           description="Write a tiny Qwen2-VL critic and tiny CogVideoX and Wan2.1 pipelines.")
    tiny.add_argument("out", metavar="OUT_URL", help="output folder URL")
    tiny.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    shipped = msub.add_parser("toy", help="write OUT_URL/critic-toy and OUT_URL/cogvideox-toy, shipped with lift",
                              description="Copy the toy-pretrained critic start and toy base text-to-video "
                                          "pipeline shipped with lift (made from the seed-0 tiny zoo by "
                                          "scripts/make-toy-pretrained.py).")
    shipped.add_argument("out", metavar="OUT_URL", help="output folder URL")

    for name, help in STAGE_HELP.items():
        _stage_parser(sub, name, help)

    pipe = sub.add_parser("pipeline", help="run every stage in order with one config, skipping finished ones",
                          description="Run data, critic, critic-eval, generate, score, align and evaluate in order. "
                                      "Stages whose _SUCCESS marker matches their config are skipped.")
    pipe.add_argument("run_url", nargs="?", metavar="RUN_URL", help=f"run folder (default: {config.DEFAULT_RUN})")
    pipe.add_argument("--config", metavar="FILE_OR_URL", help="YAML pipeline config")
    pipe.add_argument("--force", action="store_true", help="rerun every stage")
    pipe.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of `lift config show pipeline`")

    report = sub.add_parser("report", help="write the HTML report of a run", description="Write RUN_URL/report/.")
    report.add_argument("run_url", metavar="RUN_URL")

    wait = sub.add_parser("wait", help="block until every URL's _SUCCESS marker exists",
                          description="Block until each URL (an output folder or a _SUCCESS object) is sealed.")
    wait.add_argument("urls", nargs="+", metavar="URL")
    wait.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (0: never)")
    wait.add_argument("--interval", type=float, default=10, help="seconds between checks (default: 10)")

    cfg = sub.add_parser("config", help="inspect stage configs", description="Inspect stage configs.")
    csub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print a stage's full config with comments",
                           description="Print a stage's config (defaults, or merged with --config and overrides).")
    show.add_argument("stage", choices=list(config.SCHEMAS), metavar="STAGE", help=", ".join(config.SCHEMAS))
    show.add_argument("--config", metavar="FILE_OR_URL", help="YAML config to merge")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="overrides to merge")

    submit.add_parsers(sub)
    return parser


def wait_for(urls: list[str], timeout: float = 0, interval: float = 10) -> None:
    pending = [u.removesuffix("/" + storage.MARKER) for u in urls]
    deadline = time.time() + timeout if timeout > 0 else None
    while pending:
        pending = [u for u in pending if not storage.exists(storage.join(u, storage.MARKER))]
        if not pending:
            break
        if deadline and time.time() > deadline:
            raise TimeoutError(f"still not complete after {timeout:.0f}s: {', '.join(pending)}")
        logs.event(log, "waiting for inputs", pending=",".join(pending))
        time.sleep(interval)
    logs.event(log, "inputs complete", urls=",".join(urls))


def _dispatch(args) -> None:
    if args.command == "config":
        if args.config or args.overrides:
            sys.stdout.write(config.show(args.stage, config.load(args.stage, args.config, args.overrides)))
        else:
            sys.stdout.write(config.show(args.stage))
    elif args.command == "wait":
        wait_for(args.urls, args.timeout, args.interval)
    elif args.command == "data":
        if args.action == "export":
            _resolve(DATA_COMMANDS["export"], "lift data export")(args.manifest, args.dest, args.format)
            return
        overrides = [*args.overrides, f"out={args.out}", f"source={args.action}"]
        if args.action == "import":
            overrides += [f"release.json={args.release}", f"release.videos={args.videos}"]
        cfg = config.load("data", args.config, overrides)
        run_stage("data", DATA_COMMANDS[args.action], cfg, force=args.force)
    elif args.command == "models":
        _resolve(MODEL_COMMANDS[args.action], f"lift models {args.action}")(args.out, seed=getattr(args, "seed", 0))
    elif args.command == "pipeline":
        overrides = ([f"run={args.run_url}"] if args.run_url else []) + args.overrides
        cfg = config.load("pipeline", args.config, overrides)
        from lift import pipeline

        stages = pipeline.run(cfg, force=args.force)
        logs.event(log, "pipeline: finished", run=cfg.run, stages=",".join(stages))
        if "report" in stages:
            print(f"report: {storage.join(cfg.run, 'report', 'index.html')}")
    elif args.command == "report":
        print(_resolve(REPORT, "lift report")(args.run_url))
    elif args.command in submit.COMMANDS:
        submit.dispatch(args)
    else:
        cfg = config.load(args.command, args.config, args.overrides)
        run_stage(args.command, STAGES[args.command], cfg, force=args.force)


def _reason(e: BaseException) -> str:
    """An error's message; for one re-raised from a DataLoader worker (whose message carries the worker's
    traceback), the original error's own message, so the reason stays one line that names the file."""
    text = str(e)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.rstrip().rsplit("\n", 1)[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    args = build_parser().parse_args(argv)
    try:
        _dispatch(args)
    except NotBuilt as e:
        print(f"lift: {e}; see the open issues in the tracker", file=sys.stderr)
        return 3
    except config.ConfigError as e:
        print(f"lift: config error: {logs.redact(str(e))}", file=sys.stderr)
        return 2
    except (OSError, ValueError, FloatingPointError) as e:  # missing files, storage, bad input, diverging loss
        print(f"lift: error: {logs.redact(_reason(e))}", file=sys.stderr)
        return 1
    except Exception as e:  # an unexpected failure: keep the traceback for debugging, end on the one-line reason
        sys.stderr.write(logs.redact(traceback.format_exc()))
        print(f"lift: error: {type(e).__name__}: {logs.redact(_reason(e))}", file=sys.stderr)
        return 1
    finally:
        dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
