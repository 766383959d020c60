"""The `lift` command: one subcommand per stage of the registry (docs/ARCHITECTURE.md), plus data, models, wait and
config helpers.

    lift data toy OUT_URL [key=value ...]
    lift data import RELEASE_JSON_URL VIDEOS_URL OUT_URL [key=value ...]
    lift data export MANIFEST_URL OUT_JSON_URL [--format llava]
    lift models tiny OUT_URL
    lift models toy OUT_URL
    lift models real NAME OUT_URL [--layers N] [--text-layers N]
    lift STAGE [--config FILE_OR_URL] [--force] [key=value ...]   # each stage of lift/stages/__init__.py
    lift pipeline [RUN_URL] [--config FILE_OR_URL] [--force] [key=value ...]
    lift report RUN_URL
    lift serve [--config FILE_OR_URL] [key=value ...]                # the critic over HTTP (lift/serve/)
    lift wait URL [URL ...]
    lift config show STAGE [--config FILE_OR_URL] [key=value ...]
    lift submit STAGE [launch options] [--dry-run] [-- key=value ...]   # a PyTorchJob (lift/launch/submit.py)
    lift status JOB | lift logs JOB [--follow]

Exit status is 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback

from lift import config, stages
from lift.config import schema
from lift.core import dist, logs
from lift.io import storage
from lift.launch import plan, submit
from lift.stages import STAGES, runner

log = logging.getLogger("lift")


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
                          description="Generate the toy world from a seed: manifest.jsonl, videos/, prompts.jsonl, "
                                      "real/.")
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

    models = sub.add_parser("models", help="the tiny model zoo (tests, local default) and real architectures",
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
    real_t2v = msub.add_parser("real", help="write a real text-to-video pipeline at real width, few blocks",
                               description="Write a diffusers pipeline folder of a published text-to-video model "
                                           "(lift/models/real_configs) with random weights: the transformer at real "
                                           "width with --layers blocks, the published VAE and scheduler, the text "
                                           "encoder at real width with --text-layers layers over a reduced "
                                           "vocabulary. `lift generate|align|evaluate` load it like the hub's.")
    real_t2v.add_argument("name", metavar="NAME", help="cogvideox-2b, cogvideox-5b or wan2.1-1.3b (wan2.1-14b: "
                                                             "its scheduler config is not shipped)")
    real_t2v.add_argument("out", metavar="OUT_URL", help="output folder URL")
    real_t2v.add_argument("--layers", type=int, default=1, help="transformer blocks (default: 1)")
    real_t2v.add_argument("--text-layers", type=int, default=1, help="text-encoder layers (default: 1)")
    real_t2v.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")

    for stage in STAGES.values():
        if stage.name != "data":  # `lift data toy|import|export` takes positional URLs (above)
            _stage_parser(sub, stage.name, stage.help)

    pipe = sub.add_parser("pipeline", help="run every stage in order with one config, skipping finished ones",
                          description=f"Run {', '.join(STAGES)} in order, then the report (base only for the toy "
                                      "world). Stages whose _SUCCESS marker matches their config are skipped.")
    pipe.add_argument("run_url", nargs="?", metavar="RUN_URL", help=f"run folder (default: {schema.DEFAULT_RUN})")
    pipe.add_argument("--config", metavar="FILE_OR_URL", help="YAML pipeline config")
    pipe.add_argument("--force", action="store_true", help="rerun every stage")
    pipe.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of `lift config show pipeline`")

    serve = sub.add_parser("serve", help="the trained critic behind HTTP: POST /v1/score, micro-batched",
                           description="Serve the critic over HTTP (docs/SERVING.md). Keys: lift/config/schema.py "
                                       "ServeConfig, e.g. critic=s3://b/run/critic/model allow=[s3://b/run/] "
                                       "token_file=/var/run/secrets/lift/token.")
    serve.add_argument("--config", metavar="FILE_OR_URL", help="YAML serve config")
    serve.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. port=8000")

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
    names = [*STAGES, "pipeline"]
    show.add_argument("stage", choices=names, metavar="STAGE", help=", ".join(names))
    show.add_argument("--config", metavar="FILE_OR_URL", help="YAML config to merge")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="overrides to merge")

    mem = sub.add_parser("plan", help="per-rank GPU memory of a training stage, computed from the real model",
                         description=plan.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mem.add_argument("stage", choices=plan.PLANNED, metavar="STAGE", help=", ".join(plan.PLANNED))
    mem.add_argument("--config", metavar="FILE_OR_URL", help="the stage's YAML config (e.g. configs/cluster/...)")
    mem.add_argument("--world", type=int, default=8, help="ranks (GPUs) of the job (default: 8)")
    mem.add_argument("--gpu-memory", type=_gib, default="80GB", metavar="SIZE",
                     help="memory of one GPU: 80GB (10^9 bytes) or 80GiB (default: 80GB)")
    mem.add_argument("overrides", nargs="*", metavar="key=value", help="overrides to merge")

    submit.add_parsers(sub)
    return parser


def _gib(text: str) -> float:
    """A GPU memory size in GiB from 80GB, 80GiB or 80 (GiB)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(GB|GiB|G)?\s*", text, re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size like 80GB or 80GiB")
    value, unit = float(m.group(1)), (m.group(2) or "GiB").lower()
    return value * 1e9 / 2 ** 30 if unit == "gb" else value


def _dispatch(args) -> int | None:
    """Carry out a parsed command; an exit code other than 0 is returned (`lift plan` of a job that does not fit)."""
    if args.command == "config":
        cfg = stages.load(args.stage, args.config, args.overrides) if args.config or args.overrides else None
        sys.stdout.write(config.show(stages.schema_of(args.stage), cfg))
    elif args.command == "wait":
        runner.wait_for(args.urls, args.timeout, args.interval)
    elif args.command == "data":
        if args.action == "export":
            from lift.data import release

            release.export_release(args.manifest, args.dest, args.format)
            return
        overrides = [*args.overrides, f"out={args.out}", f"source={args.action}"]
        if args.action == "import":
            overrides += [f"release.json={args.release}", f"release.videos={args.videos}"]
        runner.run_stage("data", stages.load("data", args.config, overrides), force=args.force)
    elif args.command == "models" and args.action == "real":
        from lift.models import real

        counts = real.write_t2v(args.name, args.out, args.layers, args.text_layers, args.seed)
        logs.event(log, "models real: done", model=args.name, out=args.out, **counts)
    elif args.command == "models":
        from lift.toy import zoo

        (zoo.write_tiny if args.action == "tiny" else zoo.write_toy)(args.out, seed=getattr(args, "seed", 0))
    elif args.command == "pipeline":
        overrides = ([f"run={args.run_url}"] if args.run_url else []) + args.overrides
        cfg = stages.load("pipeline", args.config, overrides)
        from lift import pipeline

        done = pipeline.run(cfg, force=args.force)
        logs.event(log, "pipeline: finished", run=cfg.run, stages=",".join(done))
        print(f"report: {storage.join(cfg.run, 'report', 'index.html')}")
    elif args.command == "plan":
        result = plan.plan(args.stage, stages.load(args.stage, args.config, args.overrides), args.world,
                           args.gpu_memory)
        sys.stdout.write(result.render())
        return 0 if result.fits else 1
    elif args.command == "serve":
        from lift.serve import app

        app.main(config.load(schema.ServeConfig, args.config, args.overrides))
    elif args.command == "report":
        from lift.report import report

        print(report.write_report(args.run_url))
    elif args.command in submit.COMMANDS:
        submit.dispatch(args)
    else:
        runner.run_stage(args.command, stages.load(args.command, args.config, args.overrides), force=args.force)


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
        code = _dispatch(args) or 0
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
    return code


if __name__ == "__main__":
    sys.exit(main())
