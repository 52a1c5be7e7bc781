"""The speed tricks of the model, each beside the plain form it must equal.

Each fast function here has a reference function next to it and a parity test
(tests/test_fast_path.py) that checks one against the other:

- ``dropout`` (a cheaper random mask on the CPU) against ``dropout_reference`` (``F.dropout``):
  same keep probability and scaling, so the same expectation;
- ``apply_rotary_rolled`` (one roll and one multiply-add, the sign folded into the sine table by
  ``signed_sin``) against ``apply_rotary`` (the textbook rotate-half form).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# CPU dropout draws one 16-bit random integer per element: the drop probability is p rounded to a
# multiple of 1 / DROPOUT_LEVELS.
DROPOUT_LEVELS = 1 << 16


def dropout_reference(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Plain inverted dropout (``F.dropout``): the reference ``dropout`` must match in distribution."""
    return F.dropout(x, p, training)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout like ``F.dropout``, with a cheaper random mask on the CPU.

    torch's CPU dropout draws a random double per element from its serial generator (the parallel
    MKL path is taken on Intel CPUs only), which costs about as much as the block's largest matmul
    on small models. Here one 64-bit draw gives four 16-bit integers and an element is kept when its
    integer clears a threshold: the drop probability is p rounded to a multiple of 1/65536 (0.1 ->
    0.100006) and kept values are scaled by the exact 1 / (1 - that probability), so the layer stays
    unbiased. Other devices (CUDA's fused Philox kernel) and torch.compile (inductor's own RNG), and
    a p too small for 16 bits, use ``F.dropout``.
    """
    if not training or p == 0.0:
        return x
    drop_levels = round(p * DROPOUT_LEVELS)
    if x.device.type != "cpu" or torch.compiler.is_compiling() or not 0 < drop_levels < DROPOUT_LEVELS:
        return dropout_reference(x, p, True)
    num = x.numel()
    int64 = torch.iinfo(torch.int64)
    words = torch.randint(int64.min, int64.max, ((num + 3) // 4,), dtype=torch.int64, device=x.device)
    levels = words.view(torch.int16)[:num].view(x.shape)  # uniform on [-32768, 32767]
    keep = levels >= drop_levels - DROPOUT_LEVELS // 2  # P(keep) = 1 - drop_levels / DROPOUT_LEVELS
    return (x * keep).mul_(DROPOUT_LEVELS / (DROPOUT_LEVELS - drop_levels))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dimension (halves, not interleaved pairs)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., head_dim) by angles whose cos/sin broadcast against it (reference form)."""
    return x * cos + rotate_half(x) * sin


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """[-sin1, sin2] of a (..., head_dim) sine table.

    rotate_half(x) * sin == roll(x, d/2) * signed_sin(sin), since roll(x, d/2) = [x2, x1].
    """
    first, second = sin.chunk(2, dim=-1)
    return torch.cat((-first, second), dim=-1)


def apply_rotary_rolled(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """``apply_rotary`` with the sign folded into ``sin_signed``: x * cos + roll(x, d/2) * sin_signed."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin_signed)
