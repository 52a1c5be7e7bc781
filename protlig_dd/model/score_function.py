"""Bind a model and a batch layout into the ScoreFn the diffusion math calls.

Diffusion code sees ``score_fn(x_t, sigma_bar) -> log_score``; the segment ids and positions of
the batch, and the autocast precision, are bound here once per batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from protlig_dd.data.batch import Batch
from protlig_dd.model.precision import autocast_context

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batch_layout(batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(segment_ids, positions) to pass to the model, or (None, None) when every row is one full
    sequence: then the model runs without an attention mask (fastest SDPA kernels).

    Call on the host-side batch before moving it to the device, so the check costs no device sync.
    """
    if batch.has_padding_or_packing():
        return batch.segment_ids, batch.positions
    return None, None


def make_score_fn(
    model: torch.nn.Module,
    segment_ids: torch.Tensor | None,
    positions: torch.Tensor | None,
    precision: str,
    device: torch.device,
) -> ScoreFn:
    """The model as a ScoreFn over a fixed layout, run under the autocast of ``precision``."""

    def score(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        with autocast_context(precision, device):
            return model(x_t, sigma_bar, segment_ids, positions)

    return score
