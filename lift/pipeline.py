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

from omegaconf import DictConfig, OmegaConf

from lift import stages
from lift.core import logs
from lift.io import storage
from lift.report import report
from lift.stages import STAGES, runner
from lift.toy import zoo

log = logging.getLogger(__name__)


def run(cfg: DictConfig, force: bool = False) -> list[str]:
    """Runs every stage in registry order, then the report; returns the stages that ran or were found complete."""
    storage.write_text(storage.join(cfg.run, "config.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    sections = {name: stages.section(cfg, name) for name in STAGES}
    done = []
    for name in STAGES:
        if name == "base" and not _needs_base(sections):
            continue
        runner.run_stage(name, sections[name], force=force)
        done.append(name)
        if name == "data" and _uses_zoo(cfg.run, sections):
            zoo.write_tiny(storage.join(cfg.run, "models"))
            zoo.write_toy(storage.join(cfg.run, "models"))
            done.append("models")
    url = report.write_report(cfg.run)
    logs.event(log, "pipeline: report written", report=url)
    return [*done, "report"]


def _uses_zoo(run: str, sections: dict[str, DictConfig]) -> bool:
    """The critic or the base starts from the tiny zoo under RUN/models (the toy default)."""
    zoo_url = storage.join(run, "models")
    return any(str(p).startswith(zoo_url + "/") for p in (sections["critic"].model.name_or_path,
                                                          sections["base"].start))


def _needs_base(sections: dict[str, DictConfig]) -> bool:
    """The toy world's base model is made only when the rollouts sample it (a real run names its base model)."""
    return sections["data"].source == "toy" and sections["generate"].model.name_or_path == sections["base"].out
