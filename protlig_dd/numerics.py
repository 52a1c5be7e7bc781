"""Small numerically stable functions shared by the model and the diffusion math."""

from __future__ import annotations

import torch


def log_expm1(x: torch.Tensor) -> torch.Tensor:
    """log(exp(x) - 1) for x > 0, finite for every positive float.

    Written as x + log(1 - exp(-x)): expm1 keeps it exact for tiny x (where exp(x) - 1 cancels),
    and nothing overflows for large x (the direct form log(expm1(x)) is inf beyond x = 88.7 in
    float32, which turned a geometric schedule with sigma_max = 100 into a NaN loss).
    """
    return x + torch.log(-torch.expm1(-x))
