"""Running one stage: skip it when sealed, check its inputs, discard output of another config, run it on every rank,
then seal it.

The marker contract of docs/RELIABILITY.md in one place: an output folder is complete only when its `_SUCCESS` marker
exists, written last by rank 0 after every rank is done, with the config hash and the identities of the sealed
inputs it read; `_STARTED` says which config is writing a folder, so parts of another config are never reused.
Nothing of an output is discarded before the stage's input check (`Stage.check`, and for a training the
checkpoints it would resume from) has passed: a rerun that fails on a bad input leaves the sealed output as it was.
"""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig, OmegaConf

from lift import config
from lift.core import dist, logs
from lift.io import storage
from lift.stages import STAGES, resolve

log = logging.getLogger(__name__)


def sealed_inputs(cfg) -> dict[str, str]:
    """Config key -> identity (config hash @ time) of each sealed folder the stage reads: the folder a path or URL
    value names, or the folder of a file it names. A stage whose inputs were rebuilt since it ran is rerun,
    as one whose own config changed (new rollouts need new scores)."""
    inputs = {}
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
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


def check_inputs(stage: str, cfg: DictConfig, force: bool = False) -> None:
    """Every problem a stage can find by reading, raised before anything is written or discarded: its own check
    (`Stage.check`: manifests line by line, prompts, model folders, settings) and, for a training that would resume
    (no `--force`), the newest checkpoint under OUT/checkpoints, which a changed setting makes unusable (its
    `trainer` section; base's trainings check theirs when they run). Every rank runs it: all fail alike."""
    from lift.train import checkpoint

    resolve(STAGES[stage].check)(cfg)
    if STAGES[stage].trained and "trainer" in cfg and not force:
        checkpoint.Checkpointer(storage.join(cfg.out, "checkpoints"), {}, trainer=cfg.trainer).check_settings()


def run_stage(stage: str, cfg: DictConfig, force: bool = False, target: str | None = None) -> dict | None:
    """Skip-if-sealed, check, run, then seal: the marker contract of every stage in one place.

    The stage's input check (`check_inputs`) runs first; only when it passed are the committed part files of
    another config (or of `--force`) dropped, with the old marker; `--force` also drops checkpoints, which a
    training resumes from only at the settings that wrote them (lift/train/checkpoint.py). Parts of a rerun of the
    same config are kept, so it finishes only the rest. The stage function does the work (on every rank); rank 0
    saves the resolved config and writes `_SUCCESS` last, after all ranks are done. `target` runs another function
    in the stage's place, without its check (tests).
    """
    fn = resolve(target or STAGES[stage].run)
    digest, inputs = config.config_hash(cfg), sealed_inputs(cfg)
    marker = storage.read_marker(cfg.out)
    if marker and marker.get("config_hash") == digest and marker.get("inputs", {}) == inputs and not force:
        logs.event(log, f"{stage}: already complete, skipping (use --force to rerun)", out=cfg.out, config_hash=digest)
        return marker.get("counts")
    started_url = storage.join(cfg.out, storage.STARTED)
    started = storage.read_json(started_url) if storage.exists(started_url) else None
    stale = force or bool(marker) or (started is not None and (started.get("config_hash"), started.get("inputs", {}))
                                      != (digest, inputs))
    # Imported here, as the stage's module (`fn`) imports it anyway: it is heavy for `lift` itself.
    from lift.train import checkpoint

    if target is None:
        with checkpoint.stage(cfg, inputs, restart=started is not None and not stale):
            check_inputs(stage, cfg, force)
    runtime = dist.init()
    if runtime.is_main:
        if stale:
            logs.event(log, f"{stage}: discarding earlier output of {'--force' if force else 'another config'}",
                       out=cfg.out, new=digest)
            storage.unseal(cfg.out, drop=("checkpoints",) if force else ())
        storage.write_json(started_url, {"stage": stage, "config_hash": digest, "inputs": inputs})
    dist.barrier()
    start = time.time()
    # Checkpoints of a training inside record this config and its inputs, and refuse a resume at another one. A
    # restart is as rank 0 saw it: another rank may have read the _STARTED that rank 0 had just written.
    restart = dist.all_gather_objects(started is not None and not stale)[0]
    with checkpoint.stage(cfg, inputs, restart=restart):
        counts = fn(cfg) or {}
    dist.barrier()
    if runtime.is_main:
        config.save(cfg, storage.join(cfg.out, "config.yaml"))
        storage.write_marker(cfg.out, stage, digest, counts, seconds=round(time.time() - start, 1), inputs=inputs)
    dist.barrier()
    logs.event(log, f"{stage}: done", out=cfg.out, seconds=round(time.time() - start, 1), **counts)
    return counts


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
