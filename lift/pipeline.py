"""`lift pipeline`: every stage in order with one config, each skipped when its `_SUCCESS` marker matches.

For the toy world (the embedded default) two preparatory steps come first: the tiny model zoo and the toy-pretrained
models shipped with lift are written to RUN/models, and `lift base` puts the toy base text-to-video model into
RUN/base (the shipped one by default; `base.start=${run}/models/cogvideox base.train=true` trains one from the
random zoo, ~30 minutes on 2 cores). Pointed at real model ids and an imported LiFT-HRA release, neither runs: the
pipeline is then data, critic, critic-eval, generate, score, align, evaluate and the report.

    lift pipeline                                  # ./runs/default, CPU, tiny models
    lift pipeline s3://bucket/runs/exp1 --config configs/cluster/pipeline-cogvideox-2b.yaml
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from lift import config, logs, storage

log = logging.getLogger(__name__)


def run(cfg: DictConfig, force: bool = False) -> list[str]:
    """Returns the stages that ran or were found complete; stops early, with a warning, at one not built yet."""
    from lift import cli

    storage.write_text(storage.join(cfg.run, "config.yaml"), config.OmegaConf.to_yaml(cfg, resolve=True))
    sections = {stage: config.section(cfg, stage) for stage in ["base", *cli.PIPELINE_ORDER]}
    done = []
    data = sections["data"]
    cli.run_stage("data", cli.DATA_COMMANDS[data.source], data, force=force)
    done.append("data")
    zoo = storage.join(cfg.run, "models")
    if any(str(p).startswith(zoo + "/") for p in (sections["critic"].model.name_or_path, sections["base"].start)):
        from lift import zoo as tiny

        tiny.write_tiny(zoo)
        tiny.write_toy(zoo)
        done.append("models")
    uses_base = sections["generate"].model.name_or_path == sections["base"].out
    if data.source == "toy" and uses_base:
        cli.run_stage("base", cli.STAGES["base"], sections["base"], force=force)
        done.append("base")
    for stage in cli.PIPELINE_ORDER[1:]:
        if cli.STAGES[stage] is None:
            log.warning("pipeline: stopping before '%s': not built yet", stage)
            return done
        cli.run_stage(stage, cli.STAGES[stage], sections[stage], force=force)
        done.append(stage)
    if cli.REPORT is not None:
        url = cli._resolve(cli.REPORT, "lift report")(cfg.run)
        logs.event(log, "pipeline: report written", report=url)
        done.append("report")
    return done
