"""Crash hooks for the reliability tests: SIGKILL one rank at a chosen point, as a preempted node dies.

    LIFT_FAULT_KILL_AT_STEP=N        training (lift critic, lift align): after optimizer step N, before the
                                     checkpoint of step N is taken
    LIFT_FAULT_KILL_AFTER_BATCHES=N  sharded stages (generate, score, critic-eval, evaluate): after this process
                                     rendered or scored its N-th batch, before the part holding it is committed
    LIFT_FAULT_KILL_AFTER_PARTS=N    sharded stages: after this process committed its N-th part file
    LIFT_FAULT_RANK=R                the rank that dies (default 0)

A hook fires only in the first attempt of a torchrun job (TORCHELASTIC_RESTART_COUNT unset or 0), so under
`torchrun --max-restarts 1` (as the PyTorchJob and TorchX runs use) the restarted workers run to completion by
themselves. Unset, the hooks cost one environment lookup. docs/RELIABILITY.md lists what each stage survives.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

KILL_AT_STEP = "LIFT_FAULT_KILL_AT_STEP"
KILL_AFTER_BATCHES = "LIFT_FAULT_KILL_AFTER_BATCHES"
KILL_AFTER_PARTS = "LIFT_FAULT_KILL_AFTER_PARTS"
RANK = "LIFT_FAULT_RANK"
_reached: dict[str, int] = {}  # hook variable -> how often this process passed that point


def kill_point(variable: str, count: int) -> None:
    """SIGKILL this process if `variable` is set to `count`, this is LIFT_FAULT_RANK and the first attempt."""
    at = os.environ.get(variable)
    if at is None or count != int(at):
        return
    rank = int(os.environ.get("RANK", "0"))
    if rank != int(os.environ.get(RANK, "0")) or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")):
        return
    log.warning("fault injection: SIGKILL on rank %d at %s=%d", rank, variable, count)
    for handler in logging.getLogger().handlers:  # SIGKILL runs no exit handlers: flush the line above now
        try:
            handler.flush()
        except (OSError, ValueError):
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def _count(variable: str) -> None:
    _reached[variable] = _reached.get(variable, 0) + 1
    kill_point(variable, _reached[variable])


def batch_done() -> None:
    """A batch of a sharded stage rendered or scored; the hook of LIFT_FAULT_KILL_AFTER_BATCHES."""
    _count(KILL_AFTER_BATCHES)


def part_committed() -> None:
    """A part of a sharded output committed; the hook of LIFT_FAULT_KILL_AFTER_PARTS."""
    _count(KILL_AFTER_PARTS)
