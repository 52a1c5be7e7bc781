"""Skip optimizer steps whose loss or gradient norm is not finite, and count them.

A NaN/inf loss or gradient norm skips its optimizer update (``apply_if_finite``). Deciding that on
the host needs a device-to-host copy every step, which stalls a GPU's queue. So where that copy
costs something (``skips_nonfinite_on_device``) the skip happens on the device: the fused AdamW
takes a ``found_inf`` flag and the EMA a masked update, and each step records its finite flag into
device counters (a few tiny kernels, no sync). ``settle`` reads the counters once, at the logging
cadence and before a checkpoint: it updates the run's counters, logs the skipped steps and returns
the longest streak, which the trainer compares with ``training.max_consecutive_nonfinite``.
"""

from __future__ import annotations

import logging

import torch

from protlig_dd.model.ema import EMA
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


def skips_nonfinite_on_device(
    optimizer: torch.optim.Optimizer, device: torch.device, uses_scaler: bool, strategy: str
) -> bool:
    """Whether a non-finite step is skipped on the device (no host sync) rather than on the host.

    Only on CUDA, where a host sync drains the GPU's queue (on the CPU it is free, and the device
    path's extra small kernels are not; MPS keeps the host check until its fused kernel's
    ``found_inf`` is verified there), and only with the fused AdamW, which takes ``found_inf``.
    fp16 has the GradScaler's own skip, and FSDP's DTensor parameters keep the host check.
    """
    fused = bool(optimizer.defaults.get("fused"))
    return device.type == "cuda" and fused and not uses_scaler and strategy != "fsdp"


def apply_if_finite(
    finite: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema: EMA | None,
    tracker: NonfiniteTracker,
    on_device: bool,
) -> None:
    """Take the optimizer step and the EMA update only if ``finite`` (a 0-d bool on the device),
    and record the flag in ``tracker``.

    ``on_device`` (see ``skips_nonfinite_on_device``): the fused AdamW skips its update (and its
    step count) where ``found_inf`` is 1 and the EMA keeps its average, without a host sync.
    Otherwise the flag is read on the host (the one sync of this path); with fp16 the scaler's
    step runs anyway, since it skips steps whose gradients overflowed by itself.
    """
    if on_device:
        tracker.record(finite)
        optimizer.found_inf = (~finite).float()  # the protocol of torch's fused AdamW
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
        if ema is not None:
            ema.update(applied=finite)
        return
    finite = finite.cpu()
    tracker.record(finite)
    applied = bool(finite)
    if applied or scaler.is_enabled():
        scaler.step(optimizer)
    if applied and ema is not None:
        ema.update()
