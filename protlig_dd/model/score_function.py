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
from protlig_dd.diffusion.guidance import Guidance, guided_log_probs, guided_log_scores
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
    labels: torch.Tensor | None = None,
) -> ScoreFn:
    """The model as a ScoreFn over a fixed layout (``batch_layout``) and label sets (``Batch.labels``,
    None = unlabelled), run under the autocast of ``precision``."""

    def score(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        with autocast_context(precision, device):
            return model(x_t, sigma_bar, segment_ids, positions, labels)

    return score


def make_sampling_score_fn(
    model: torch.nn.Module,
    segment_ids: torch.Tensor | None,
    positions: torch.Tensor | None,
    precision: str,
    device: torch.device,
    num_rows: int,
    use_cache: bool = True,
    labels: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> CountedScore | CachedCleanScore:
    """The score function a sampler calls, counting network passes per row (``.passes``).

    A time-agnostic model (``model.time_conditioning`` false) gets the caching score function: a
    row's network output is reused while the row does not change (``diffusion.cached_score``); a
    time-conditioned model is run at every step (``make_score_fn``). ``labels`` (B, S + 1, K)
    condition each row; an active ``guidance`` also runs the unconditional branch ("no label"),
    batched with the conditional one into one pass of 2B rows, and combines them
    (``diffusion.guidance``).
    """
    guided = guidance is not None and guidance.active
    if guided and labels is None:
        raise ValueError("guidance needs labels: give --label (W = 0 without labels is unconditional sampling)")
    if getattr(model, "time_conditioning", True):
        if not guided:
            return CountedScore(make_score_fn(model, segment_ids, positions, precision, device, labels), num_rows)
        assert guidance is not None and labels is not None
        twice_segments, twice_positions, pair_labels = _doubled(segment_ids, positions, labels)
        both = make_score_fn(model, twice_segments, twice_positions, precision, device, pair_labels)

        def guided_score(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
            conditional, unconditional = both(torch.cat((x_t, x_t)), torch.cat((sigma_bar, sigma_bar))).chunk(2)
            return guided_log_scores(conditional, unconditional, guidance.weight_at(sigma_bar))

        return CountedScore(guided_score, num_rows)

    def clean(x_rows: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        layout = [None if t is None else t[rows] for t in (segment_ids, positions)]
        row_labels = None if labels is None else labels[rows]
        with autocast_context(precision, device):
            if not guided:
                return model.clean_log_probs(x_rows, *layout, row_labels)
            # Conditional and unconditional log-probs side by side: the cache keeps both, so a
            # noise-dependent (late) weight can combine them at every step.
            pair = model.clean_log_probs(torch.cat((x_rows, x_rows)), *_doubled(*layout, row_labels))
            return torch.cat(pair.chunk(2), dim=-1)

    def to_score(log_p: torch.Tensor, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        if guided:
            assert guidance is not None
            conditional, unconditional = log_p.chunk(2, dim=-1)
            log_p = guided_log_probs(conditional, unconditional, guidance.weight_at(sigma_bar))
        return model.log_score_from_clean(log_p, x_t, sigma_bar, segment_ids)

    return CachedCleanScore(clean, to_score, mask_id=model.num_residues, use_cache=use_cache)


def _doubled(
    segment_ids: torch.Tensor | None, positions: torch.Tensor | None, labels: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Layout and labels of a batch stacked on itself: the first half conditional, the second "no label"."""
    twice = [None if t is None else torch.cat((t, t)) for t in (segment_ids, positions)]
    return twice[0], twice[1], torch.cat((labels, torch.zeros_like(labels)))


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
        return moved, make_score_fn(model, None, None, precision, device, moved.labels)
    return moved, make_score_fn(model, moved.segment_ids, moved.positions, precision, device, moved.labels)


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
