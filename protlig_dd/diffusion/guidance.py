"""Classifier-free guidance for label-conditioned sampling (Ho & Salimans 2022; for discrete
diffusion, Schiff et al. 2024, arXiv 2412.10193).

One network, trained with label dropout, gives both the conditional prediction (the requested
labels) and the unconditional one ("no label"). Guidance with weight W moves the prediction away
from the unconditional one:

    guided = conditional + W * (conditional - unconditional)

on the clean-residue log-probabilities of a time-agnostic model (then renormalised over residues,
so the analytic score stays a proper Tweedie score), or on the log-scores of a time-conditioned
model. W = 0 is plain conditional sampling, W > 0 sharpens toward the labels.

``late`` scales the weight by the fraction of positions already decided, exp(-sigma_bar) (the
chance that a position is not corrupted at that noise level): no guidance at the start, when
everything is masked, the full W at the end. arXiv 2507.08965 finds early guidance hurts and late
guidance helps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GUIDANCE_SCHEDULES = ("constant", "late")


@dataclass(frozen=True)
class Guidance:
    """The guidance weight W and how it varies over the reverse process."""

    weight: float = 0.0
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance schedule must be one of {GUIDANCE_SCHEDULES}, got {self.schedule!r}")
        if not self.weight >= 0.0:
            raise ValueError(f"guidance weight must be >= 0, got {self.weight}")

    @property
    def active(self) -> bool:
        """False for W = 0: sampling is then plain conditional, with no unconditional pass."""
        return self.weight != 0.0

    def weight_at(self, sigma_bar: torch.Tensor) -> torch.Tensor:
        """(B,) float32 weight of each row at total noise ``sigma_bar`` (B,)."""
        weight = torch.full_like(sigma_bar, self.weight, dtype=torch.float32)
        if self.schedule == "late":
            weight = weight * torch.exp(-sigma_bar.float())
        return weight

    def describe(self) -> str:
        return f"guidance={self.weight:g} guidance_schedule={self.schedule}"


def guided_log_probs(conditional: torch.Tensor, unconditional: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """log softmax(c + w (c - u)) over the last axis; c, u (B, L, N) log-probabilities, w (B,)."""
    w = weight.to(conditional.dtype)[:, None, None]
    return torch.log_softmax(conditional + w * (conditional - unconditional), dim=-1)


def guided_log_scores(conditional: torch.Tensor, unconditional: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """c + w (c - u) for log-scores c, u (B, L, D) and w (B,): entries both set to 0 stay 0."""
    w = weight.to(conditional.dtype)[:, None, None]
    return conditional + w * (conditional - unconditional)
