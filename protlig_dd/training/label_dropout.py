"""Label dropout of training: one model learns p(x | labels) and p(x) (classifier-free guidance).

Each labelled segment of a micro-batch loses its whole label set with probability ``p_uncond``
(``labels.p_uncond``): the model then sees "no label" and learns the unconditional distribution
that guidance contrasts with. With ``random_subsets`` (``labels.random_subsets``) every other set is
thinned to a random subset: a keep rate r is drawn uniformly in (0, 1] per segment, each label is
kept with probability r, and one label survives when none did. A Swiss-Prot protein carries tens
of GO terms (more with ancestors), while a user asks for one or two; training on subsets of every
size keeps such requests in distribution.

The draws come from a generator seeded by the micro-batch's seed, so a resumed run drops the same
labels as an uninterrupted one.
"""

from __future__ import annotations

import torch

from protlig_dd.data.batch import Batch
from protlig_dd.data.labels import EMPTY_LABEL

# Keeps the label-dropout stream apart from the noise and dropout streams seeded by the same number.
_LABEL_STREAM = 0x1ABE15


class LabelDropout:
    """Callable ``(host-side batch, micro-batch seed) -> batch with dropped / thinned label sets``."""

    def __init__(self, p_uncond: float, random_subsets: bool) -> None:
        if not 0.0 <= p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
        self.p_uncond = p_uncond
        self.random_subsets = random_subsets

    def __call__(self, batch: Batch, seed: int) -> Batch:
        if batch.labels is None or (self.p_uncond == 0.0 and not self.random_subsets):
            return batch
        generator = torch.Generator().manual_seed((seed ^ _LABEL_STREAM) & 0x7FFF_FFFF_FFFF_FFFF)
        labels = batch.labels
        present = labels != EMPTY_LABEL  # (B, S + 1, K)
        keep = present
        if self.random_subsets:
            rate = 1.0 - torch.rand(labels.shape[:2], generator=generator)  # (B, S + 1) in (0, 1]
            keep = present & (torch.rand(labels.shape, generator=generator) < rate[..., None])
            # A set that lost every label keeps one, chosen uniformly among its labels.
            lost = present.any(dim=-1) & ~keep.any(dim=-1)  # (B, S + 1)
            pick = torch.rand(labels.shape, generator=generator).masked_fill(~present, -1.0).argmax(dim=-1)
            rescue = torch.nn.functional.one_hot(pick, labels.shape[-1]).bool() & lost[..., None]
            keep = keep | rescue
        dropped = torch.rand(labels.shape[:2], generator=generator) < self.p_uncond  # (B, S + 1)
        keep = keep & ~dropped[..., None]
        return batch.with_labels(torch.where(keep, labels, torch.zeros_like(labels)))
