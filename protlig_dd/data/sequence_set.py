"""A read-only view of tokenized sequences: the interface between the cache and the batchers.

A ``TokenStore`` holds every sequence of a prepared source back to back in one flat uint8 token
array with an offsets array (sequence i is ``tokens[offsets[i]:offsets[i+1]]``). The on-disk cache
memory-maps these arrays; ``InMemoryTokenStore`` builds the same layout from arrays for tests and
small inputs. A ``SequenceSet`` selects a subset (a split) of a store by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from protlig_dd.data.labels import LabelSets


class TokenStore(Protocol):
    """Flat token storage: ``tokens`` (uint8, all sequences concatenated) and ``offsets`` (n+1,)."""

    tokens: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int: ...

    def sequence_id(self, index: int) -> str: ...


@dataclass
class InMemoryTokenStore:
    """A TokenStore held in memory (tests, small inputs); same layout as the on-disk cache."""

    tokens: np.ndarray  # (total_residues,) uint8
    offsets: np.ndarray  # (n + 1,) int64
    ids: list[str]

    @classmethod
    def from_arrays(cls, sequences: Sequence[np.ndarray], ids: Sequence[str] | None = None) -> InMemoryTokenStore:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = (
            np.concatenate([np.asarray(s, dtype=np.uint8) for s in sequences]) if sequences else np.zeros(0, np.uint8)
        )
        names = list(ids) if ids is not None else [str(i) for i in range(len(sequences))]
        if len(names) != len(sequences):
            raise ValueError(f"{len(names)} ids for {len(sequences)} sequences")
        return cls(tokens=flat, offsets=offsets, ids=names)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sequence_id(self, index: int) -> str:
        return self.ids[index]


@dataclass
class SequenceSet:
    """The sequences of ``store`` selected by ``indices`` (a split), addressed 0..len-1, with their
    label sets when the data is labelled."""

    store: TokenStore
    indices: np.ndarray  # (n,) int64 indices into the store
    labels: LabelSets | None = None  # label ids aligned with the store (not the selection); None = unlabelled

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.store):
            raise ValueError(f"label sets cover {len(self.labels)} sequences but the store holds {len(self.store)}")
        starts = self.store.offsets[self.indices]
        # (n,) lengths of the selected sequences, computed once (vectorised, no Python loop).
        self.lengths = (self.store.offsets[self.indices + 1] - starts).astype(np.int64)
        self.starts = starts.astype(np.int64)

    @classmethod
    def whole(cls, store: TokenStore, labels: LabelSets | None = None) -> SequenceSet:
        return cls(store, np.arange(len(store), dtype=np.int64), labels)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_residues(self) -> int:
        return int(self.lengths.sum())

    def tokens(self, k: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Token ids of the k-th sequence of the set, optionally the window [start, start+length)."""
        n = int(self.lengths[k])
        if length is None:
            length = n - start
        if start < 0 or length < 0 or start + length > n:
            raise IndexError(f"window [{start}, {start + length}) outside sequence {k} of length {n}")
        begin = int(self.starts[k]) + start
        return np.asarray(self.store.tokens[begin : begin + length])

    def sequence_id(self, k: int) -> str:
        return self.store.sequence_id(int(self.indices[k]))

    def label_ids(self, k: int) -> list[int]:
        """Label ids of the k-th sequence of the set ([] when unlabelled or the data has no labels)."""
        return [] if self.labels is None else self.labels.ids(int(self.indices[k])).tolist()
