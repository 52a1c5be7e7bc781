"""The Batch contract shared by the data pipeline, the model, the loss and the samplers.

A batch is a (B, L) grid of tokens. Each row holds one sequence (unpacked) or several
sequences packed one after another (packed). ``segment_ids`` tells them apart: 0 marks padding,
1..k the k sequences of a row. ``positions`` restart at 0 in every segment, so rotary positions
and attention behave for a packed sequence exactly as for the same sequence alone.

A labelled batch also carries ``labels``: the label ids of each segment (data/labels.py), so that
packing keeps every sequence's labels with it and the model conditions each segment on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from protlig_dd.data.labels import label_grid


@dataclass
class Batch:
    """Token grid plus the segment layout that drives attention and loss masks."""

    tokens: torch.Tensor  # (B, L) int64, PAD where empty
    segment_ids: torch.Tensor  # (B, L) int32, 0 = padding, 1..k = sequences in the row
    positions: torch.Tensor  # (B, L) int64, 0.. within each segment, 0 on padding
    # Host-side count of real tokens, filled by the data pipeline so logging needs no device sync.
    num_real_tokens: int | None = None
    # (B, S + 1, K) int64 label ids of segment s of each row at [b, s] (0 = empty slot; [b, 0] is
    # padding's, always empty; an all-empty set means "no label"). None: the data has no labels.
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2:
            raise ValueError(f"Batch.tokens must be (B, L), got shape {tuple(self.tokens.shape)}")
        if self.segment_ids.shape != self.tokens.shape or self.positions.shape != self.tokens.shape:
            raise ValueError(
                "Batch tensors disagree in shape: tokens "
                f"{tuple(self.tokens.shape)}, segment_ids {tuple(self.segment_ids.shape)}, "
                f"positions {tuple(self.positions.shape)}"
            )
        if self.labels is not None and (self.labels.dim() != 3 or self.labels.shape[0] != self.tokens.shape[0]):
            raise ValueError(
                f"Batch.labels must be (B, S + 1, K) with B = {self.tokens.shape[0]}, got {tuple(self.labels.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def real_mask(self) -> torch.Tensor:
        """(B, L) bool, True at real residues (not padding)."""
        return self.segment_ids > 0

    def has_padding_or_packing(self) -> bool:
        """True unless every row is one sequence filling the whole row (then no mask is needed).

        This synchronises with the device; call it once per batch, not per layer.
        """
        return bool((self.segment_ids != 1).any())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            tokens=self.tokens.to(device, non_blocking=non_blocking),
            segment_ids=self.segment_ids.to(device, non_blocking=non_blocking),
            positions=self.positions.to(device, non_blocking=non_blocking),
            num_real_tokens=self.num_real_tokens,
            labels=None if self.labels is None else self.labels.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        return Batch(
            self.tokens.pin_memory(),
            self.segment_ids.pin_memory(),
            self.positions.pin_memory(),
            num_real_tokens=self.num_real_tokens,
            labels=None if self.labels is None else self.labels.pin_memory(),
        )

    def with_labels(self, labels: torch.Tensor | None) -> Batch:
        """The same batch with other per-segment labels (label dropout, guidance, conditional scoring)."""
        return Batch(self.tokens, self.segment_ids, self.positions, self.num_real_tokens, labels)

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[np.ndarray | Sequence[int]],
        pad_id: int,
        length: int | None = None,
        label_sets: Sequence[Sequence[int]] | None = None,
    ) -> Batch:
        """One sequence per row, right-padded to ``length`` (default: the longest); ``label_sets``
        gives each sequence's label ids (None: an unlabelled batch).

        A sequence longer than ``length`` is an error: cropping is the data pipeline's decision.
        """
        rows = [[seq] for seq in sequences]
        labels = None if label_sets is None else [[s] for s in label_sets]
        return cls.from_packed_rows(rows, pad_id=pad_id, length=length, label_sets=labels)

    @classmethod
    def from_packed_rows(
        cls,
        rows: Sequence[Sequence[np.ndarray | Sequence[int]]],
        pad_id: int,
        length: int | None = None,
        label_sets: Sequence[Sequence[Sequence[int]]] | None = None,
    ) -> Batch:
        """Several sequences per row, placed one after another, then padding; ``label_sets[r][k]``
        are the label ids of the k-th sequence of row r (None: an unlabelled batch)."""
        row_lengths = [sum(len(seq) for seq in row) for row in rows]
        if not rows:
            raise ValueError("cannot build a batch from zero rows")
        width = max(row_lengths) if length is None else length
        if max(row_lengths) > width:
            raise ValueError(f"a row holds {max(row_lengths)} tokens, more than the batch length {width}")
        tokens = np.full((len(rows), width), pad_id, dtype=np.int64)
        segment_ids = np.zeros((len(rows), width), dtype=np.int32)
        positions = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            start = 0
            for s, seq in enumerate(row, start=1):
                n = len(seq)
                tokens[r, start : start + n] = np.asarray(seq, dtype=np.int64)
                segment_ids[r, start : start + n] = s
                positions[r, start : start + n] = np.arange(n)
                start += n
        return cls(
            torch.from_numpy(tokens),
            torch.from_numpy(segment_ids),
            torch.from_numpy(positions),
            num_real_tokens=int(sum(row_lengths)),
            labels=None if label_sets is None else torch.from_numpy(label_grid(label_sets, len(rows)).astype(np.int64)),
        )
