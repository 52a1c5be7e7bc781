"""The one path from a batch to its likelihood bound: bind the model to the batch layout (a ScoreFn),
then estimate the bound.

Diffusion code sees ``score_fn(x_t, sigma_bar) -> log_score``; the segment ids and positions of
the batch, and the autocast precision, are bound here once per batch. The training loop, periodic
validation, scoring, generation and the benchmark all build their score function here.
"""

from __future__ import annotations

import torch

from protlig_dd.data.batch import Batch
from protlig_dd.diffusion.cached_score import CachedCleanScore, CountedScore
from protlig_dd.diffusion.graphs import Graph, ScoreFn
from protlig_dd.diffusion.likelihood import SequenceBounds, likelihood_bound, use_antithetic
from protlig_dd.diffusion.noise import NoiseSchedule
from protlig_dd.model.precision import autocast_context


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
    """The model as a ScoreFn over a fixed layout (``batch_layout``), run under the autocast of ``precision``."""

    def score(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        with autocast_context(precision, device):
            return model(x_t, sigma_bar, segment_ids, positions)

    return score


def make_sampling_score_fn(
    model: torch.nn.Module,
    segment_ids: torch.Tensor | None,
    positions: torch.Tensor | None,
    precision: str,
    device: torch.device,
    num_rows: int,
    use_cache: bool = True,
) -> CountedScore | CachedCleanScore:
    """The score function a sampler calls, counting network passes per row (``.passes``).

    A time-agnostic model (``model.time_conditioning`` false) gets the caching score function: a
    row's network output is reused while the row does not change (``diffusion.cached_score``); a
    time-conditioned model is run at every step (``make_score_fn``).
    """
    if getattr(model, "time_conditioning", True):
        return CountedScore(make_score_fn(model, segment_ids, positions, precision, device), num_rows)

    def clean(x_rows: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        layout = [None if t is None else t[rows] for t in (segment_ids, positions)]
        with autocast_context(precision, device):
            return model.clean_log_probs(x_rows, *layout)

    def to_score(log_p: torch.Tensor, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        return model.log_score_from_clean(log_p, x_t, sigma_bar, segment_ids)

    return CachedCleanScore(clean, to_score, mask_id=model.num_residues, use_cache=use_cache)


def bind_batch(
    model: torch.nn.Module, batch: Batch, precision: str, device: torch.device, non_blocking: bool = False
) -> tuple[Batch, ScoreFn]:
    """Move a host-side ``batch`` to ``device`` and bind ``model`` to its layout.

    Returns (the batch on the device, its score function). The layout is decided on the host-side
    batch, so it costs no device sync; the model gets the moved segment ids and positions.
    """
    segment_ids, _ = batch_layout(batch)
    moved = batch.to(device, non_blocking=non_blocking)
    if segment_ids is None:
        return moved, make_score_fn(model, None, None, precision, device)
    return moved, make_score_fn(model, moved.segment_ids, moved.positions, precision, device)


def bound_batch(
    model: torch.nn.Module,
    graph: Graph,
    noise: NoiseSchedule,
    batch: Batch,
    num_samples: int,
    precision: str,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> SequenceBounds:
    """The likelihood bound of every sequence of a host-side ``batch`` with ``num_samples`` draws,
    antithetic by the one rule (``use_antithetic``). Validation, scoring and the benchmark call this."""
    moved, score = bind_batch(model, batch, precision, device)
    return likelihood_bound(
        score, graph, noise, moved, num_samples, generator=generator, antithetic=use_antithetic(num_samples)
    )
