"""Monte-Carlo estimate of the SEDD likelihood bound (the evaluation metric), per sequence.

For a clean sequence x0 the negative log-likelihood is bounded by

    -log p(x0 | length) <= integral_eps^1 sigma_bar'(t) E_{x_t}[ sum_i l_i ] dt  (+ O(eps) terms)
                         = E_{t ~ U[eps, 1]} [ (1 - eps) sigma_bar'(t) sum_i l_i ].

Like SEDD and MDLM, the reported bound leaves out the O(eps) prior term (t = 1 is not exactly the
limit) and the reconstruction term (t = eps is not exactly clean). Each draw picks one t per row
(sequences packed in a row share it), so the draws of one sequence are independent across draws.
Antithetic pairs (u, 1 - u) reduce the variance; the standard error is then computed from the pair
means, which are independent. Sequences packed in one row share t, so their estimates are correlated:
the summary's standard error is computed from per-draw totals over the batch, which accounts for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from protlig_dd.data.batch import Batch
from protlig_dd.diffusion.graphs import Graph, ScoreFn
from protlig_dd.diffusion.noise import NoiseSchedule

BOUND_NOTE = "ELBO without the O(eps) prior and reconstruction terms, as in SEDD and MDLM"


@dataclass
class SequenceBounds:
    """Per-sequence bounds for every (row, segment) of a batch, in (row, segment) order."""

    row: torch.Tensor  # (S,) int64 batch row of each sequence
    segment: torch.Tensor  # (S,) int64 segment id (1..k) within the row
    bound: torch.Tensor  # (S,) float64 bound on -log p(x | length) in nats (sum over residues)
    stderr: torch.Tensor  # (S,) float64 Monte-Carlo standard error of ``bound`` (nan if one unit)
    num_residues: torch.Tensor  # (S,) int64
    samples: torch.Tensor  # (S, num_samples) float64 the individual draws (antithetic pairs adjacent)
    antithetic: bool  # whether draws 2k and 2k+1 are an antithetic pair

    def units(self) -> torch.Tensor:
        """(S, U) the independent Monte-Carlo units: antithetic pair means, or the plain draws."""
        if self.antithetic:
            return self.samples.reshape(self.samples.shape[0], -1, 2).mean(dim=-1)
        return self.samples


@dataclass
class BoundSummary:
    """The bound over a collection of sequences, per residue."""

    nll_per_residue: float  # sum of bounds / sum of residues, nats
    nll_stderr: float  # Monte-Carlo standard error of nll_per_residue
    ppl_bound: float  # exp(nll_per_residue): an upper bound on the perplexity
    ppl_stderr: float  # delta-method standard error of ppl_bound
    num_sequences: int
    num_residues: int

    def describe(self) -> str:
        """One line for logs, naming what the number leaves out."""
        return (
            f"nll/residue {self.nll_per_residue:.4f} +- {self.nll_stderr:.4f} nats, "
            f"ppl bound {self.ppl_bound:.3f} +- {self.ppl_stderr:.3f} over {self.num_sequences} sequences "
            f"({self.num_residues} residues; {BOUND_NOTE})"
        )


def _uniform_draws(
    batch_size: int,
    num_samples: int,
    antithetic: bool,
    device: torch.device,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """(num_samples, B) u in [0, 1]; with antithetic, draws 2k and 2k+1 are u and 1 - u."""
    if not antithetic:
        return torch.rand(num_samples, batch_size, generator=generator, device=device)
    u = torch.rand(num_samples // 2, 1, batch_size, generator=generator, device=device)
    return torch.cat([u, 1.0 - u], dim=1).reshape(num_samples, batch_size)


@torch.inference_mode()
def likelihood_bound(
    score_fn: ScoreFn,
    graph: Graph,
    noise: NoiseSchedule,
    batch: Batch,
    num_samples: int,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
) -> SequenceBounds:
    """Estimate the bound of every sequence in ``batch`` with ``num_samples`` draws of (t, x_t).

    Packed batches are supported: each (row, segment) is one sequence. With ``antithetic`` the
    number of samples must be even (pairs u, 1 - u); the standard error needs at least two
    independent units (two pairs, or two plain draws), else it is nan.
    """
    if num_samples < 1:
        raise ValueError(f"likelihood_bound: num_samples must be >= 1, got {num_samples}")
    if antithetic and num_samples % 2:
        raise ValueError(f"likelihood_bound: antithetic pairs need an even num_samples, got {num_samples}")
    tokens = batch.tokens  # (B, L)
    real = batch.real_mask  # (B, L)
    segment_ids = batch.segment_ids.long()  # (B, L)
    num_columns = int(segment_ids.max()) + 1  # segment 0 (padding) plus the k sequences
    eps = noise.eps

    u = _uniform_draws(batch.batch_size, num_samples, antithetic, tokens.device, generator)
    draws = []
    for k in range(num_samples):
        t = (eps + (1.0 - eps) * u[k]).float()  # (B,)
        sigma_bar = noise.total(t)
        x_t = graph.sample_transition(tokens, sigma_bar, real, generator)
        log_score = score_fn(x_t, sigma_bar).float()  # (B, L, dim)
        per_position = graph.score_entropy(log_score, sigma_bar, x_t, tokens).double()  # (B, L)
        per_position = torch.where(real, per_position, torch.zeros_like(per_position))
        weight = ((1.0 - eps) * noise.rate(t)).double().unsqueeze(-1)  # (B, 1)
        per_segment = torch.zeros(batch.batch_size, num_columns, dtype=torch.float64, device=tokens.device)
        per_segment.scatter_add_(1, segment_ids, weight * per_position)  # (B, 1 + k)
        draws.append(per_segment[:, 1:])
    estimates = torch.stack(draws, dim=-1)  # (B, k, num_samples)

    counts = torch.zeros(batch.batch_size, num_columns, dtype=torch.int64, device=tokens.device)
    counts.scatter_add_(1, segment_ids, real.long())
    counts = counts[:, 1:]  # (B, k)
    present = counts > 0
    rows, segments = present.nonzero(as_tuple=True)
    empty = torch.zeros(0, dtype=torch.float64, device=tokens.device)
    result = SequenceBounds(
        row=rows,
        segment=segments + 1,
        bound=empty,
        stderr=empty,
        num_residues=counts[rows, segments],
        samples=estimates[rows, segments],  # (S, num_samples)
        antithetic=antithetic,
    )
    units = result.units()  # (S, U)
    result.bound = units.mean(dim=-1)
    result.stderr = _standard_error(units)
    return result


def _standard_error(units: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean over the last axis of independent units; nan with a single unit."""
    num_units = units.shape[-1]
    if num_units < 2:
        return torch.full(units.shape[:-1], math.nan, dtype=torch.float64, device=units.device)
    return units.std(dim=-1, correction=1) / math.sqrt(num_units)


def use_antithetic(num_samples: int) -> bool:
    """The antithetic rule: pairs (u, 1 - u) when ``num_samples`` is even and at least 4.

    A standard error needs two independent units; with antithetic pairs a unit is a pair, so two
    draws would give one unit and no standard error: below 4 the draws stay plain.
    """
    return num_samples % 2 == 0 and num_samples >= 4


# Columns of ``bound_totals``: additive over batches (and ranks), turned into a summary at the end.
_BOUND, _RESIDUES, _VARIANCE, _SEQUENCES = range(4)


def bound_totals(bounds: SequenceBounds) -> torch.Tensor:
    """(4,) float64 on the bounds' device: sum of bounds, residues, Monte-Carlo variance of the sum,
    number of sequences. Totals of separate batches add (they are independent), so they can be
    summed over batches and all-reduced over ranks before ``summary_from_totals``.

    The variance adds up over rows: each row draws its own t and masks, so rows are independent,
    while sequences packed in one row share t and are not. A row's units are therefore the totals
    over its sequences; with one sequence per row this is the sum of the per-sequence variances
    (nan with a single unit).
    """
    units = bounds.units()  # (S, U)
    num_rows = int(bounds.row.max()) + 1 if bounds.row.numel() else 0
    per_row = torch.zeros(num_rows, units.shape[-1], dtype=units.dtype, device=units.device)
    per_row.index_add_(0, bounds.row, units)  # (rows, U) unit totals of each row
    variance = (_standard_error(per_row) ** 2).sum()
    return torch.stack(
        [
            bounds.bound.double().sum(),
            bounds.num_residues.sum().double(),
            variance.double(),
            torch.tensor(float(bounds.bound.numel()), dtype=torch.float64, device=bounds.bound.device),
        ]
    )


def summary_from_totals(totals: torch.Tensor) -> BoundSummary:
    """The residue-weighted summary of summed ``bound_totals`` (one host read)."""
    bound, residues, variance, count = (float(v) for v in totals.cpu())
    if residues <= 0:
        raise ValueError("summarize_bounds: the sequences hold no residues")
    nll = bound / residues
    nll_stderr = math.sqrt(variance) / residues
    ppl = math.exp(nll)
    return BoundSummary(
        nll_per_residue=nll,
        nll_stderr=nll_stderr,
        ppl_bound=ppl,
        ppl_stderr=ppl * nll_stderr,
        num_sequences=int(count),
        num_residues=int(residues),
    )


def summarize_bounds(bounds: SequenceBounds | Sequence[SequenceBounds]) -> BoundSummary:
    """Residue-weighted bound over all sequences: nll_per_residue, ppl_bound and standard errors.

    Rows (and batches) are independent, so their variances add; sequences packed in one row share
    t, so a row's estimate is taken as a whole (see ``bound_totals``).
    """
    parts = [bounds] if isinstance(bounds, SequenceBounds) else list(bounds)
    if not parts:
        raise ValueError("summarize_bounds: no sequence bounds given")
    return summary_from_totals(sum(bound_totals(p).cpu() for p in parts))
