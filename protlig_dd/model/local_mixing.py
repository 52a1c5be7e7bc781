"""Segment-aware depthwise convolution: each position mixes in its neighbours, channel by channel.

Attention can learn to look at the next residue, but a small model learns that slowly: for the first
millions of tokens it pools the whole sequence (composition) and barely uses order. A depthwise
convolution over a few neighbours hands every block local order directly, the inductive bias of
convolutional protein language models (ByteNet-style CARP, Yang et al. 2022). It is zero-initialised,
so a block starts exactly as without it, and it never mixes across packed sequences or into padding:
a neighbour counts only when it lies in the same segment.

Cost: ``kernel`` multiply-adds per element of the (B, L, D) stream, small beside the block's matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def neighbour_masks(
    segment_ids: torch.Tensor | None, batch: int, length: int, radius: int, device: torch.device
) -> torch.Tensor:
    """(2r + 1, B, L, 1) float masks: 1 where the neighbour at offset o (-r..r) is in the same segment.

    ``segment_ids`` (B, L) with 0 = padding, or None (every row one full sequence): then only the row
    ends cut the window. Padding positions get no neighbours (their output is never read).
    """
    if segment_ids is None:
        segment_ids = torch.ones(batch, length, dtype=torch.int32, device=device)
    padded = F.pad(segment_ids, (radius, radius), value=-1)  # (B, L + 2r); -1 matches no segment
    masks = [
        (padded[:, radius + o : radius + o + length] == segment_ids) & (segment_ids > 0)
        for o in range(-radius, radius + 1)
    ]
    return torch.stack(masks).unsqueeze(-1).float()  # (2r + 1, B, L, 1)


class LocalMixing(nn.Module):
    """y[b, i] = sum_o w[o] * x[b, i + o] * same_segment(i, i + o), per channel (depthwise)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"local mixing kernel must be odd and >= 1, got {kernel}")
        self.radius = kernel // 2
        self.weight = nn.Parameter(torch.zeros(kernel, dim))  # zero-init: the block starts unchanged

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), masks from ``neighbour_masks`` -> (B, L, D) in x's dtype."""
        length = x.shape[1]
        padded = F.pad(x, (0, 0, self.radius, self.radius))  # (B, L + 2r, D)
        weight = self.weight.to(x.dtype)
        out = torch.zeros_like(x)
        for k in range(2 * self.radius + 1):
            out = torch.addcmul(out, padded[:, k : k + length] * masks[k].to(x.dtype), weight[k])
        return out
