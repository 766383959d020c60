"""`lift data toy|import`: the HRA manifest a run trains and evaluates on, from the toy world or the LiFT-HRA release.

    lift data toy ./runs/default/data toy.num_clips=200
    lift data import s3://b/LiFT-HRA/release.json s3://b/LiFT-HRA/videos s3://b/run/data
"""

from __future__ import annotations

from omegaconf import DictConfig


def check(cfg: DictConfig) -> None:
    """The toy world's settings, or everything an import would stop on (lift/data/release.py `check_import`)."""
    if cfg.source == "toy":
        from lift.toy import world

        world.check(cfg)
    else:
        from lift.data import release

        release.check_import(cfg)


def run(cfg: DictConfig) -> dict:
    if cfg.source == "toy":
        from lift.toy import world

        return world.generate(cfg)
    from lift.data import release

    return release.import_release(cfg)
