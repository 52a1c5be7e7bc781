"""The SEDD training objective: diffusion-weighted score entropy on a Batch.

One t per row (all sequences packed in a row share t, so the model's adaLN conditioning stays per
row): t = (1 - eps) u + eps with u uniform, drawn independently, stratified across the rows, or
importance-sampled with exact weights (``TimeSampling``). Each real position is corrupted
independently, the score function sees x_t and sigma_bar(t), and the row's loss is
sigma_bar'(t) * sum over its real positions of l_i.
Padding is never corrupted and never counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from protlig_dd.data.batch import Batch
from protlig_dd.diffusion.graphs import Graph, ScoreFn
from protlig_dd.diffusion.noise import NoiseSchedule


@dataclass
class LossOutput:
    """Score-entropy loss of one batch."""

    loss: torch.Tensor  # scalar: sum of row_loss divided by num_tokens (the value to backpropagate)
    total: torch.Tensor  # scalar: sum of row_loss (to renormalise over several micro-batches)
    row_loss: torch.Tensor  # (B,) sigma_bar'(t_b) * sum of l_i over the real positions of row b
    num_tokens: int  # real (non-pad) tokens in the batch
    t: torch.Tensor  # (B,) the diffusion time of each row


@dataclass(frozen=True)
class TimeSampling:
    """How training draws the noise level of each row (``training.time_sampling`` and
    ``training.time_importance_power``).

    v in [0, 1) is drawn per row, independently or stratified (row b of B in [b/B, (b+1)/B): MDLM's
    low-discrepancy sampler, same marginal, lower variance of the batch loss). Then u = v ** power
    (power > 1 puts more rows at low mask rates, where context matters) and t = (1 - eps) u + eps.
    Each row's loss is weighted by du/dv = power * v ** (power - 1), the ratio of the uniform
    density to the proposal, so the weighted loss is an unbiased estimate of the same bound.
    """

    stratified: bool = False
    power: float = 1.0

    def draw(
        self, batch_size: int, eps: float, device: torch.device | str, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """((B,) float32 times, (B,) float32 importance weights or None when power is 1)."""
        v = torch.rand(batch_size, generator=generator, device=device)
        if self.stratified:
            v = (torch.arange(batch_size, device=device, dtype=v.dtype) + v) / batch_size
        if self.power == 1.0:
            return (1.0 - eps) * v + eps, None
        u = v.pow(self.power)
        weight = self.power * v.pow(self.power - 1.0)
        return (1.0 - eps) * u + eps, weight


def sample_times(
    batch_size: int, eps: float, device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) float32 times t = (1 - eps) u + eps, u ~ U[0, 1) independently: one per row."""
    return TimeSampling().draw(batch_size, eps, device, generator)[0]


def score_entropy_loss(
    score_fn: ScoreFn,
    graph: Graph,
    noise: NoiseSchedule,
    batch: Batch,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    time_sampling: TimeSampling | None = None,
) -> LossOutput:
    """SEDD loss of ``batch``: sum over rows of sigma_bar'(t) * sum_i l_i, divided by the real token count.

    The normalisation is per real token of this batch (``batch.num_real_tokens`` when the data
    pipeline filled it, else counted), so the value does not depend on padding. ``t`` (B,) fixes the
    times (tests, evaluation); by default they are drawn with ``generator``. The score may come
    from a bf16 model: the loss is computed in fp32.
    ``time_sampling`` chooses how the times are drawn (default: independent
    uniform draws); its importance weights, if any, multiply each row's loss.
    """
    tokens = batch.tokens  # (B, L)
    real = batch.real_mask  # (B, L)
    num_tokens = batch.num_real_tokens if batch.num_real_tokens is not None else int(real.sum())
    if num_tokens <= 0:
        raise ValueError("score_entropy_loss: the batch holds no real tokens")
    weight = None
    if t is None:
        t, weight = (time_sampling or TimeSampling()).draw(batch.batch_size, noise.eps, tokens.device, generator)
    elif tuple(t.shape) != (batch.batch_size,):
        raise ValueError(f"score_entropy_loss: t must have shape ({batch.batch_size},), got {tuple(t.shape)}")
    t = t.to(device=tokens.device, dtype=torch.float32)
    sigma_bar = noise.total(t)  # (B,)
    sigma_rate = noise.rate(t)  # (B,)

    x_t = graph.sample_transition(tokens, sigma_bar, real, generator)  # (B, L), pads stay PAD
    log_score = score_fn(x_t, sigma_bar).float()  # (B, L, dim)
    if log_score.shape != (*tokens.shape, graph.dim):
        raise ValueError(
            f"score_fn returned shape {tuple(log_score.shape)}, expected {(*tokens.shape, graph.dim)}"
        )
    per_position = graph.score_entropy(log_score, sigma_bar, x_t, tokens)  # (B, L)
    per_position = torch.where(real, per_position, torch.zeros_like(per_position))
    row_loss = sigma_rate * per_position.sum(dim=-1)  # (B,)
    if weight is not None:
        row_loss = row_loss * weight
    total = row_loss.sum()
    return LossOutput(loss=total / num_tokens, total=total, row_loss=row_loss, num_tokens=num_tokens, t=t)
