"""Generate protein sequences with a trained model: lengths or templates in, tokens and strings out.

The model-facing glue around ``diffusion.samplers.sample``: builds the template batch, binds the
layout (segment ids, positions) into the score function, runs in chunks of ``batch_size`` rows
under autocast, and decodes to strings.

Throughput: rows are chunked in order of decreasing length, so each chunk is only as wide as its
longest row (less padding computed) and a chunk of equal lengths needs no attention mask at all;
results come back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.labels import label_grid
from protlig_dd.diffusion.graphs import Graph
from protlig_dd.diffusion.guidance import Guidance
from protlig_dd.diffusion.noise import NoiseSchedule
from protlig_dd.diffusion.samplers import sample
from protlig_dd.diffusion.templates import template_batch, templates_from_lengths
from protlig_dd.model.score_function import batch_layout, make_sampling_score_fn


@dataclass
class GenerationResult:
    """Generated tokens (B, L) int64 with PAD past each row's length, and the decoded strings."""

    tokens: torch.Tensor
    sequences: list[str]
    network_passes: torch.Tensor  # (B,) int64 network evaluations each row needed

    def mean_passes(self) -> float:
        """Network passes per row, averaged over the rows."""
        return float(self.network_passes.double().mean()) if self.network_passes.numel() else 0.0


def draw_lengths(
    histogram: dict[str, list[int]], num: int, max_length: int, generator: torch.Generator | None = None
) -> list[int]:
    """``num`` lengths drawn from a training length histogram, each capped at ``max_length``.

    Training crops longer sequences to ``max_length`` windows, so capping matches what the model saw.
    """
    lengths = torch.tensor(histogram["lengths"], dtype=torch.float64)
    counts = torch.tensor(histogram["counts"], dtype=torch.float64)
    if lengths.numel() == 0 or counts.sum() <= 0:
        raise ValueError("the length histogram is empty: pass explicit lengths")
    draws = torch.multinomial(counts, num, replacement=True, generator=_cpu_generator(generator))
    return [int(min(lengths[i].item(), max_length)) for i in draws]


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    # torch.multinomial on CPU tensors needs a CPU generator; derive one deterministically.
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    cpu = torch.Generator()
    cpu.manual_seed(seed)
    return cpu


def generate(
    model: torch.nn.Module,
    graph: Graph,
    noise: NoiseSchedule,
    alphabet: Alphabet,
    *,
    lengths: Sequence[int] | None = None,
    templates: torch.Tensor | None = None,
    steps: int = 128,
    predictor: str = "analytic",
    denoise: bool = True,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    on_chunk: Callable[[int], None] | None = None,
    cache: bool = True,
    labels: Sequence[Sequence[int]] | None = None,
    guidance: Guidance | None = None,
) -> GenerationResult:
    """Sample sequences for ``lengths`` (all generated) or ``templates`` ((B, L) from diffusion.templates).

    ``labels[b]``: the label ids row b is conditioned on (a model with labels; [] = "no label");
    ``guidance``: classifier-free guidance toward them (diffusion.guidance; needs ``labels``).

    The model must be in eval mode; its device is used. Rows are processed ``batch_size`` at a
    time, longest first; ``on_chunk(num_rows)`` is called after each chunk (progress bars). Row b of
    the result always belongs to lengths[b] / templates[b]. A time-agnostic model reuses a row's
    network output while the row does not change (``cache``; same output either way).
    """
    if (lengths is None) == (templates is None):
        raise ValueError("generate: give exactly one of lengths or templates")
    device = next(model.parameters()).device
    max_length = getattr(getattr(model, "cfg", None), "max_length", None)
    if templates is None:
        templates = templates_from_lengths(list(lengths), alphabet, max_length)
    elif max_length is not None and templates.shape[1] > max_length:
        raise ValueError(f"templates of length {templates.shape[1]} exceed the model's max_length {max_length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels is not None and len(labels) != templates.shape[0]:
        raise ValueError(f"generate: {len(labels)} label sets for {templates.shape[0]} sequences")
    templates = templates.cpu()  # chunks are planned on the host and moved to the device one by one
    row_lengths = (templates != alphabet.pad_id).sum(dim=1)  # (B,)
    # Longest rows first (stable, so equal lengths keep their order): chunks of similar widths.
    order = torch.sort(row_lengths, descending=True, stable=True).indices
    tokens = torch.full(templates.shape, alphabet.pad_id, dtype=torch.int64)
    passes = torch.zeros(templates.shape[0], dtype=torch.int64)
    for start in range(0, templates.shape[0], batch_size):
        rows = order[start : start + batch_size]
        # Trim the padding columns shared by the whole chunk: exact, PAD is never attended to.
        width = int(row_lengths[rows].max())
        layout = template_batch(templates[rows, :width], alphabet.pad_id)
        segment_ids, positions = batch_layout(layout)
        segment_ids, positions = _to(segment_ids, device), _to(positions, device)
        chunk_labels = None
        if labels is not None:
            grid = label_grid([[labels[int(r)]] for r in rows], len(rows))
            chunk_labels = torch.from_numpy(grid).long().to(device)
        score = make_sampling_score_fn(
            model, segment_ids, positions, precision, device, len(rows), cache, chunk_labels, guidance
        )
        chunk = sample(
            score,
            graph,
            noise,
            layout.tokens.to(device),
            steps,
            predictor=predictor,
            denoise=denoise,
            generator=generator,
        )
        tokens[rows, :width] = chunk.cpu()
        if score.passes is not None:
            passes[rows] = score.passes.cpu()
        if on_chunk is not None:
            on_chunk(len(rows))
    return GenerationResult(tokens=tokens, sequences=alphabet.decode_batch(tokens.tolist()), network_passes=passes)
