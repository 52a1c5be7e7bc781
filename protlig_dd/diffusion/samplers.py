"""Reverse-diffusion samplers: Euler tau-leaping and analytic (Tweedie) tau-leaping, plus denoising.

A template (B, L) says what to do with each position: a residue id is FIXED (written back before
every step and at the end: prefix, suffix, motif infilling), MASK (= N) marks a position to
generate and PAD (= N + 1) marks padding (stays PAD, so rows may have different lengths).

Generated positions start from the graph's t = 1 limit (MASK, or uniform residues). The time grid
is t_k = linspace(1, eps, steps + 1); at step k the score function sees sigma_bar(t_k), never t
(SEED_LESSONS item 10). With the absorbing graph an unmasked position is never re-sampled. The
optional final denoising step goes from sigma_bar(eps) to 0 over residue states only, so no MASK
survives. Draws use the Gumbel-max trick on log-probabilities, so the same generator seed gives the
same tokens.
"""

from __future__ import annotations

import torch

from protlig_dd.diffusion.graphs import Graph, ScoreFn
from protlig_dd.diffusion.noise import NoiseSchedule

PREDICTORS = ("analytic", "euler")


def sample_categorical(log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one index per row of unnormalised log-probabilities (..., K) by Gumbel-max, in float64.

    float32 Gumbel noise is truncated (u never gets closer to 1 than 2^-24, so the noise never
    exceeds about 16.6): rare tokens are drawn too seldom, which lowers the effective temperature
    (Zheng et al. 2024, arXiv 2409.02908). float64 draws make the truncation negligible.
    """
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
    return (log_probs.double() + gumbel).argmax(dim=-1)


def _validate_template(template: torch.Tensor, num_residues: int) -> None:
    if template.dim() != 2 or template.dtype != torch.int64:
        raise ValueError(
            f"sampler template must be a (B, L) int64 tensor, got {template.dtype} {tuple(template.shape)}"
        )
    bad = (template < 0) | (template > num_residues + 1)
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"sampler template row {row} position {col} holds id {int(template[row, col])}; expected a "
            f"residue 0..{num_residues - 1}, MASK {num_residues} or PAD {num_residues + 1}"
        )


def _checked_score(score_fn: ScoreFn, x: torch.Tensor, sigma_bar: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Call the score function and reject outputs that would make the draw meaningless."""
    log_score = score_fn(x, sigma_bar)
    expected = (*x.shape, graph.dim)
    if tuple(log_score.shape) != expected:
        raise ValueError(f"score_fn returned shape {tuple(log_score.shape)}, expected {expected}")
    # -inf is a legitimate zero ratio; NaN or +inf is a broken model and would pick arbitrary tokens.
    if bool((torch.isnan(log_score) | torch.isposinf(log_score)).any()):
        raise FloatingPointError(
            f"score_fn returned NaN or +inf log-scores at sigma_bar {float(sigma_bar[0]):.6g}"
        )
    return log_score.float()


@torch.inference_mode()
def sample(
    score_fn: ScoreFn,
    graph: Graph,
    noise: NoiseSchedule,
    template: torch.Tensor,
    steps: int,
    predictor: str = "analytic",
    denoise: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate tokens (B, L) int64 for ``template`` with ``steps`` reverse steps of ``predictor``.

    ``score_fn`` is called with the current tokens (PAD at padding) and sigma_bar (B,) float32.
    Fixed template residues are kept exactly and padding stays PAD.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"sampler predictor must be one of {PREDICTORS}, got {predictor!r}")
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    num_residues = graph.num_residues
    _validate_template(template, num_residues)
    device = template.device
    batch_size = template.shape[0]
    pad = template == num_residues + 1  # (B, L)
    fixed = template < num_residues  # (B, L)
    generate = template == num_residues  # (B, L)

    limit = graph.sample_limit(tuple(template.shape), device, generator)
    x = torch.where(generate, limit, template)  # (B, L)
    times = torch.linspace(1.0, noise.eps, steps + 1, dtype=torch.float64)
    sigmas = noise.total(times)  # (steps + 1,) float64

    def per_row(value: torch.Tensor) -> torch.Tensor:
        return torch.full((batch_size,), float(value), dtype=torch.float32, device=device)

    for k in range(steps):
        x = torch.where(fixed, template, x)
        log_score = _checked_score(score_fn, x, per_row(sigmas[k]), graph)  # (B, L, dim)
        state = x.masked_fill(pad, 0)  # graph math needs a state everywhere; padding is restored below
        if predictor == "euler":
            step = (times[k] - times[k + 1]) * noise.rate(times[k])  # dt * sigma_bar'(t_k)
            log_probs = graph.euler_log_probs(log_score, state, per_row(step))
        else:
            log_probs = graph.analytic_log_probs(log_score, state, per_row(sigmas[k] - sigmas[k + 1]))
        x = torch.where(pad, template, sample_categorical(log_probs, generator))

    x = torch.where(fixed, template, x)
    if denoise:
        sigma_eps = per_row(sigmas[-1])
        log_score = _checked_score(score_fn, x, sigma_eps, graph)
        state = x.masked_fill(pad, 0)
        log_probs = graph.denoise_log_probs(log_score, state, sigma_eps)  # (B, L, N): no MASK column
        x = torch.where(pad, template, sample_categorical(log_probs, generator))
        x = torch.where(fixed, template, x)
    return x
