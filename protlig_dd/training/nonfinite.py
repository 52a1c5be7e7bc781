"""Count skipped (non-finite) optimizer steps on the device, and read the count on the host rarely.

A NaN/inf loss or gradient norm skips its optimizer update. Deciding that on the host needs a
device-to-host copy every step, which stalls a GPU's queue. Instead each step records its finite
flag into device counters (a few tiny kernels, no sync), and ``settle`` reads them once, at the
logging cadence and before a checkpoint: it updates the run's counters, logs the skipped steps
and returns the longest streak, which the trainer compares with
``training.max_consecutive_nonfinite``.
"""

from __future__ import annotations

import logging

import torch

from protlig_dd.training.train_state import TrainState

logger = logging.getLogger(__name__)

_STREAK, _LONGEST, _SKIPPED = 0, 1, 2


class NonfiniteTracker:
    """Counters on the device that holds the finite flags (the GPU, or the host when the trainer
    reads each flag anyway): the current streak of non-finite steps (kept across settles, so a
    streak is counted from its start), the longest streak and the number of skipped steps since
    the last ``settle``."""

    def __init__(self, device: torch.device) -> None:
        self._counts = torch.zeros(3, device=device)  # float32: exact for counts below 2**24

    def resume(self, state: TrainState) -> None:
        """Continue the streak saved in a checkpoint's train state."""
        self._counts.zero_()
        self._counts[_STREAK] = float(state.consecutive_nonfinite)

    def record(self, finite: torch.Tensor) -> None:
        """Fold in one step's finite flag (a 0-d bool tensor on the counters' device); no host sync."""
        bad = (~finite).float()
        streak = self._counts[_STREAK].mul(bad).add_(bad)  # streak + 1 on a bad step, else 0
        self._counts[_STREAK] = streak
        self._counts[_LONGEST] = torch.maximum(self._counts[_LONGEST], streak)
        self._counts[_SKIPPED] += bad

    def settle(self, state: TrainState, step: int) -> int:
        """Read the counters (one sync) into ``state``, warn about skipped steps, and return the
        longest streak of non-finite steps since the last settle (0 when there was none)."""
        streak, longest, skipped = (int(value) for value in self._counts.tolist())
        self._counts[_LONGEST:] = 0
        state.consecutive_nonfinite = streak
        state.total_nonfinite += skipped
        if skipped:
            logger.warning(
                "non-finite loss or gradient in %d step(s) up to step %d: their updates were skipped "
                "(%d in a row now, %d in the whole run)",
                skipped,
                step,
                streak,
                state.total_nonfinite,
            )
        return longest
