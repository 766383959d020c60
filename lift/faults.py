"""Crash hooks for the reliability tests: SIGKILL one rank at a chosen point, as a preempted node dies.

    LIFT_FAULT_KILL_AT_STEP=N       training (lift critic, lift align): after optimizer step N
    LIFT_FAULT_KILL_AFTER_PARTS=N   sharded stages (generate, score, critic-eval, evaluate): after this process
                                    committed its N-th part file
    LIFT_FAULT_RANK=R               the rank that dies (default 0)

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
KILL_AFTER_PARTS = "LIFT_FAULT_KILL_AFTER_PARTS"
_parts_committed = 0  # part files this process committed


def kill_point(variable: str, count: int) -> None:
    """SIGKILL this process if `variable` is set to `count`, this is LIFT_FAULT_RANK and the first attempt."""
    at = os.environ.get(variable)
    if at is None or count != int(at):
        return
    rank = int(os.environ.get("RANK", "0"))
    if rank != int(os.environ.get("LIFT_FAULT_RANK", "0")) or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")):
        return
    log.warning("fault injection: SIGKILL on rank %d at %s=%d", rank, variable, count)
    for handler in logging.getLogger().handlers:  # SIGKILL runs no exit handlers: flush the line above now
        try:
            handler.flush()
        except (OSError, ValueError):
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def part_committed() -> None:
    """Count a committed part of a sharded output; the hook of LIFT_FAULT_KILL_AFTER_PARTS."""
    global _parts_committed
    _parts_committed += 1
    kill_point(KILL_AFTER_PARTS, _parts_committed)
