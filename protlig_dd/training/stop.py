"""When a run stops before max_steps: a signal (SIGTERM/SIGINT) or the wall-clock budget.

Both are checked after every optimizer step and agreed by every rank in one host-side sum (the
gloo host group: no device sync), so all ranks stop after the same step.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

from protlig_dd.training.distributed import DistInfo, host_sum

logger = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it after every optimizer step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        # A second signal of the same kind kills at once (the default action).
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        logger.warning("received %s: saving a checkpoint after the current step", signal.Signals(signum).name)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


@dataclass(frozen=True)
class StopRequest:
    """What every rank agreed to after a step."""

    signum: int | None  # a signal arrived on some rank: save, then leave with TrainingInterrupted
    out_of_time: bool  # training.max_minutes is used up: end as at max_steps


def deadline_after(minutes: float) -> float | None:
    """The monotonic-clock time at which a budget of ``minutes`` starting now ends (None: no budget)."""
    return time.monotonic() + 60.0 * minutes if minutes > 0 else None


def poll_stop(flag: StopFlag, deadline: float | None, info: DistInfo) -> StopRequest:
    """Whether to stop after this step: a signal on any rank, or ``deadline`` passed on rank 0's
    clock (rank 0 decides, so ranks whose clocks differ cannot disagree)."""
    signalled = 1.0 if flag.signum is not None else 0.0
    late = 1.0 if info.is_main and deadline is not None and time.monotonic() >= deadline else 0.0
    if info.enabled:
        signalled, late = host_sum([signalled, late], info)  # host-side: no device sync
    if signalled > 0 and flag.signum is None:
        flag.signum = signal.SIGTERM  # another rank was signalled
    return StopRequest(signum=flag.signum if signalled > 0 else None, out_of_time=late > 0)
