"""Label conditioning of the SEDD network: a label set becomes one vector beside the noise level.

Each segment of a batch (a packed sequence) has its own label set (``Batch.labels``, ids from the
label vocabulary, 0 = empty slot). ``LabelEmbedder`` averages the embeddings of a set's labels
(an embedding bag) and gives an empty set the learned "no label" vector: the unconditional model
of classifier-free guidance is the same network with every set empty. The result, one vector per
(row, segment), is added to the noise-level conditioning (or is the whole conditioning of a
time-agnostic model) and turned into adaLN shift/scale/gate vectors per segment;
``per_token`` then hands each position its own segment's vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from protlig_dd.data.labels import EMPTY_LABEL


class LabelEmbedder(nn.Module):
    """(B, S + 1, K) label ids -> (B, S + 1, cond_dim): mean embedding of each set, or "no label"."""

    def __init__(self, num_labels: int, cond_dim: int) -> None:
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"LabelEmbedder needs at least one label, got {num_labels}")
        self.num_labels = num_labels
        self.no_label_id = num_labels + 1
        # Row 0 is the empty slot (excluded from every mean), 1..V the labels, V + 1 "no label".
        self.bag = nn.EmbeddingBag(num_labels + 2, cond_dim, mode="mean", padding_idx=EMPTY_LABEL)

    def forward(self, labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """Conditioning vectors per (row, segment); ``labels`` None gives every row "no label", (B, 1, C)."""
        device = self.bag.weight.device
        if labels is None:
            labels = torch.full((batch_size, 1, 1), EMPTY_LABEL, dtype=torch.long, device=device)
        if labels.dim() != 3 or labels.shape[0] != batch_size:
            raise ValueError(f"labels must be (B, S + 1, K) with B = {batch_size}, got {tuple(labels.shape)}")
        # Ids come from the vocabulary (0..V); no range check here, which would sync with the device
        # at every forward: an id past the table fails inside the embedding lookup.
        labels = labels.long()
        empty = (labels == EMPTY_LABEL).all(dim=-1, keepdim=True)  # (B, S + 1, 1)
        first = torch.where(empty[..., 0], torch.full_like(labels[..., 0], self.no_label_id), labels[..., 0])
        bags = torch.cat((first[..., None], labels[..., 1:]), dim=-1)  # empty sets hold the no-label id
        rows, segments, width = bags.shape
        return self.bag(bags.reshape(rows * segments, width)).view(rows, segments, -1)


def per_token(mods: torch.Tensor, segment_ids: torch.Tensor | None) -> torch.Tensor:
    """Per-segment vectors (B, S + 1, M) -> what ``modulate`` takes: (B, 1, M) unchanged when every row
    has one conditioning vector, else (B, L, M) picked by each position's segment."""
    segments = mods.shape[1]
    if segments == 1:
        return mods
    if segment_ids is None:
        raise ValueError("several label sets per row need segment_ids to place them")
    batch, length = segment_ids.shape
    # Row b's segment s is row b * (S + 1) + s of the flattened table; an embedding lookup gathers
    # it (its backward is a dense index-add, cheaper on CPUs than gather's scatter).
    flat = segment_ids.long() + torch.arange(batch, device=mods.device)[:, None] * segments  # (B, L)
    return torch.nn.functional.embedding(flat, mods.reshape(batch * segments, -1))  # (B, L, M)
