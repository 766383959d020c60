"""The stage registry: every stage of a LiFT run, in pipeline order, written once.

Everything that lists stages is derived from `STAGES`: the `lift STAGE` subcommands and their help, `lift config
show`, `lift pipeline`'s order, the TorchX components (`components/STAGE.py`), `lift submit`, the report's sections,
and the Helm chart's stage list and input waits (`charts/files/stages.json`, written by
scripts/render-manifests.py). Adding a stage is one module `lift/stages/NAME.py` with `check(cfg)` and
`run(cfg) -> counts`, its config schema in `lift/config/schema.py`, and one `Stage(...)` entry below
(docs/ARCHITECTURE.md).

Stage modules are imported only when a stage runs (`Stage.function`): diffusers and transformers take seconds to
import, and `lift --help` or the chart's renderer should not pay for them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, make_dataclass
from typing import Callable

from omegaconf import DictConfig

from lift import config
from lift.config import schema


@dataclass(frozen=True)
class Stage:
    """One stage: `lift NAME` runs `run` on a config of `schema` and seals `RUN/output` with `_SUCCESS`."""

    name: str
    """The command and section name (`lift critic-eval`, section `critic_eval` of a pipeline config)."""
    schema: type
    """The dataclass of its config (`lift config show NAME`)."""
    run: str
    """"module:function" taking the resolved config and returning the counts of its `_SUCCESS` marker."""
    check: str
    """"module:function" taking the resolved config and raising on any problem found by reading its inputs and
    config (manifests, model folders, settings); the runner calls it before it discards anything of the output."""
    help: str
    """One line: the subcommand's help, the component's summary and the report's description."""
    output: str
    """Its output folder under the run folder (the default of its `out` key)."""
    inputs: tuple[tuple[str, str], ...] = ()
    """(config key, output folder under RUN of the stage that writes it): what it waits for on Kubernetes."""
    sharded: bool = False
    """Inference sharded over ranks: part files committed one by one, a rerun finishes only the missing ones."""
    trained: bool = False
    """A training stage (FSDP2, DCP checkpoints under `out/checkpoints`, TensorBoard under `out/tensorboard`)."""
    cluster: bool = True
    """Launched on clusters (a TorchX component, a PyTorchJob of the chart, `lift submit`); false for the toy
    world's local `base`."""

    @property
    def section(self) -> str:
        """Its key in a pipeline config (and its TorchX component's function name)."""
        return self.name.replace("-", "_")

    def function(self) -> Callable:
        return resolve(self.run)


def resolve(target: str) -> Callable:
    """The function a "module:function" string names, imported now."""
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage at the end of the pipeline order; a name registered twice is an error."""
    if stage.name in STAGES:
        raise ValueError(f"stage '{stage.name}' is registered twice")
    STAGES[stage.name] = stage
    return stage


register(Stage("data", schema.DataConfig, "lift.stages.data:run", "lift.stages.data:check",
               "build the HRA manifest: the toy world, or an import of the LiFT-HRA release", "data"))
register(Stage("base", schema.BaseConfig, "lift.stages.base:run", "lift.stages.base:check",
               "toy world: train the tiny zoo's VAE and transformer into a base model worth aligning", "base",
               inputs=(("data", "data"),), trained=True, cluster=False))
register(Stage("critic", schema.CriticConfig, "lift.stages.critic:run", "lift.stages.critic:check",
               "train the critic VLM on human ratings with reasons (SFT, LoRA or full, FSDP2)", "critic",
               inputs=(("data", "data"),), trained=True))
register(Stage("critic-eval", schema.CriticEvalConfig, "lift.stages.critic_eval:run", "lift.stages.critic_eval:check",
               "accuracy table of the critic on the test split", "critic/eval",
               inputs=(("critic", "critic"), ("data", "data")), sharded=True))
register(Stage("generate", schema.GenerateConfig, "lift.stages.generate:run", "lift.stages.generate:check",
               "roll out videos from the base text-to-video model", "rollouts",
               inputs=(("prompts", "data"),), sharded=True))
register(Stage("score", schema.ScoreConfig, "lift.stages.score:run", "lift.stages.score:check",
               "rate rollouts with the critic and compute rewards", "scores",
               inputs=(("rollouts", "rollouts"), ("critic", "critic")), sharded=True))
register(Stage("align", schema.AlignConfig, "lift.stages.align:run", "lift.stages.align:check",
               "reward-weighted fine-tuning of the text-to-video model (FSDP2)", "align",
               inputs=(("rollouts", "rollouts"), ("scores", "scores"), ("real", "data")), trained=True))
register(Stage("evaluate", schema.EvaluateConfig, "lift.stages.evaluate:run", "lift.stages.evaluate:check",
               "compare base and aligned models with the critic", "eval",
               inputs=(("aligned.name_or_path", "align"), ("critic", "critic"), ("prompts", "data")), sharded=True))


def cluster_stages() -> list[Stage]:
    """The stages a cluster runs, in order: the chart's PyTorchJobs, the TorchX components, `lift submit`."""
    return [s for s in STAGES.values() if s.cluster]


def _pipeline_schema() -> type:
    """`lift pipeline`'s schema, composed from the registry: `run`, then one section per stage with that stage's
    own schema and defaults (only its `run` follows the pipeline's), so a key has one default whether the stage
    runs alone or in the pipeline."""
    def section(stage: Stage):
        return field(default_factory=lambda: stage.schema(run="${run}"), metadata={"doc": stage.help})

    run = ("run", str, field(default=schema.DEFAULT_RUN, metadata={"doc": "Run folder URL; every stage's paths hang "
                                                                          "off it."}))
    rounds = ("rounds", int, field(default=1, metadata={"doc": "LiFT in rounds: round k >= 2 generates, scores, "
                                                               "aligns and evaluates again from round k-1's aligned "
                                                               "model, under RUN/rounds/k (lift/pipeline.py).",
                                                        **schema.AT_LEAST_1}))
    return make_dataclass("PipelineConfig", [run, rounds, *((s.section, s.schema, section(s))
                                                            for s in STAGES.values())],
                          namespace={"__doc__": "`lift pipeline`: every stage in order with one config; each "
                                                "section is that stage's config."})


PipelineConfig = _pipeline_schema()


ROUNDS = "rounds"
"""RUN/rounds/k holds round k's outputs for k >= 2 (`lift pipeline rounds=N`; round 1 is the run folder itself)."""


def round_folder(run: str, k: int) -> str:
    """Where round k's outputs are: the run folder itself for round 1, RUN/rounds/k after it."""
    return run if k == 1 else f"{run.rstrip('/')}/{ROUNDS}/{k}"


def schema_of(name: str) -> type:
    """The config schema of a stage, or of `pipeline`."""
    if name == "pipeline":
        return PipelineConfig
    if name not in STAGES:
        raise config.ConfigError(f"unknown stage '{name}'; stages: {', '.join([*STAGES, 'pipeline'])}")
    return STAGES[name].schema


def load(name: str, config_url: str | None = None, overrides: list[str] | None = None) -> DictConfig:
    """The resolved config of a stage (or `pipeline`): its schema's defaults < `config_url` < `overrides`."""
    return config.load(schema_of(name), config_url, overrides)


def section(cfg: DictConfig, name: str) -> DictConfig:
    """Stage `name`'s own config out of a resolved pipeline config."""
    stage = STAGES[name]
    return config.section(cfg, stage.section, stage.schema)
