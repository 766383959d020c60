"""`lift pipeline`: every stage in order with one config, each skipped when its `_SUCCESS` marker matches.

For the toy world (the embedded default) two preparatory steps come first: the tiny model zoo and the toy-pretrained
models shipped with lift are written to RUN/models, and `lift base` puts the toy base text-to-video model into
RUN/base (the shipped one by default; `base.start=${run}/models/cogvideox base.train=true` trains one from the
random zoo, ~30 minutes on 2 cores). Pointed at real model ids and an imported LiFT-HRA release, neither runs: the
pipeline is then data, critic, critic-eval, generate, score, align, evaluate and the report.

    lift pipeline                                  # ./runs/default, CPU, tiny models
    lift pipeline s3://bucket/runs/exp1 --config configs/cluster/pipeline-cogvideox-2b.yaml
    lift pipeline rounds=3                         # LiFT in rounds (below)

LiFT in rounds (`rounds=N`): round 1 is the pass above, its outputs where they always are (RUN/rollouts, scores,
align, eval), so a finished single pass is round 1 of a longer run. Round k >= 2 generates fresh rollouts with
round k-1's aligned model (the same prompts and seeds, so rounds differ only by the model), scores them with the
same critic, aligns again starting from round k-1's weights, and evaluates the result against the same base on
the same held-out prompts and seeds; its outputs are RUN/rounds/k/{rollouts,scores,align,eval}. Data kept: each
round trains on its own rollouts only (plus the real set, as round 1): earlier rounds' videos came from an older
model and were already learned from, and keeping them would weight the first rounds' mistakes ever more. Every
round's stages are ordinary stages, each sealed by its `_SUCCESS` marker, so a stopped run resumes inside the round
it was in (a training stage from its last checkpoint, a sharded one from its last committed part).
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from lift import stages
from lift.core import logs
from lift.io import storage
from lift.report import report
from lift.stages import STAGES, round_folder, runner
from lift.toy import zoo

log = logging.getLogger(__name__)
ROUND_STAGES = ("generate", "score", "align", "evaluate")  # what a round after the first runs again


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
    for k in range(2, cfg.rounds + 1):
        for name, section in round_sections(cfg.run, sections, k).items():
            runner.run_stage(name, section, force=force)
        done.append(f"round {k}")
    url = report.write_report(cfg.run)
    logs.event(log, "pipeline: report written", report=url)
    return [*done, "report"]


def aligned_model(run: str, sections: dict[str, DictConfig], k: int) -> str:
    """The model round k's alignment exported."""
    if k == 1:
        return storage.join(sections["align"].out, "model")
    return storage.join(round_folder(run, k), STAGES["align"].output, "model")


def round_sections(run: str, sections: dict[str, DictConfig], k: int) -> dict[str, DictConfig]:
    """Round k's (k >= 2) generate, score, align and evaluate configs: round 1's, with the model taken from round
    k-1's alignment and every input and output in round k's folder."""
    if k < 2:
        raise ValueError(f"round {k}: rounds after the first are numbered from 2")
    here = round_folder(run, k)
    previous = aligned_model(run, sections, k - 1)
    out = {name: storage.join(here, STAGES[name].output) for name in ROUND_STAGES}
    changes = {
        "generate": {"model": {"name_or_path": previous}, "out": out["generate"]},
        "score": {"rollouts": out["generate"], "out": out["score"]},
        "align": {"model": {"name_or_path": previous}, "rollouts": out["generate"], "scores": out["score"],
                  "out": out["align"]},
        "evaluate": {"aligned": {"name_or_path": storage.join(out["align"], "model")}, "out": out["evaluate"]},
    }
    return {name: OmegaConf.merge(sections[name], change) for name, change in changes.items()}


def _uses_zoo(run: str, sections: dict[str, DictConfig]) -> bool:
    """The critic or the base starts from the tiny zoo under RUN/models (the toy default)."""
    zoo_url = storage.join(run, "models")
    return any(str(p).startswith(zoo_url + "/") for p in (sections["critic"].model.name_or_path,
                                                          sections["base"].start))


def _needs_base(sections: dict[str, DictConfig]) -> bool:
    """The toy world's base model is made only when the rollouts sample it (a real run names its base model)."""
    return sections["data"].source == "toy" and sections["generate"].model.name_or_path == sections["base"].out
