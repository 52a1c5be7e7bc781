"""Tokenizing source records for the prepared cache, and the counts that preparation reports.

A ``RecordBatch`` is tokenized at once: its sequences are joined and mapped through a 256-entry
lookup table with one numpy indexing. Bytes outside the alphabet are rare, so the unknown-residue
policy (``error``, ``map_to_x``, ``drop``; see cache.py) and the non-letter check look only at
them. ``Stats`` keeps the running counts and the length histogram; ``length_summary`` turns the
histogram into the min/median/mean/max and nearest-rank quantiles stored in the cache metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.readers import RecordBatch, SourceError

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_INVALID = 255


def lookup_table(alphabet: Alphabet) -> np.ndarray:
    """(256,) uint8 byte -> token id (upper and lower case), 255 for bytes outside the alphabet."""
    table = np.full(256, _INVALID, dtype=np.uint8)
    for token_id, letter in enumerate(alphabet.residues):
        table[ord(letter)] = token_id
        table[ord(letter.lower())] = token_id
    return table


def _describe_byte(value: int) -> str:
    return repr(chr(value)) if value < 128 else f"non-ASCII byte 0x{value:02x}"


class Stats:
    """Running counts of one preparation."""

    def __init__(self, num_residues: int) -> None:
        self.read = 0
        self.kept = 0
        self.too_short = 0
        self.unknown = 0
        self.mapped_to_x: dict[str, int] = {}
        self.residues = 0
        self.residue_counts = np.zeros(num_residues, dtype=np.int64)
        self.length_counts = np.zeros(1, dtype=np.int64)  # index = length

    def add_lengths(self, lengths: np.ndarray) -> None:
        counts = np.bincount(lengths)
        if len(counts) > len(self.length_counts):
            counts[: len(self.length_counts)] += self.length_counts
            self.length_counts = counts
        else:
            self.length_counts[: len(counts)] += counts


class Encoder:
    """Tokenizes a RecordBatch at once and applies the unknown-residue and min-length policies."""

    def __init__(self, alphabet: Alphabet, unknown_residues: str, min_length: int, stats: Stats) -> None:
        if unknown_residues == "map_to_x" and "X" not in alphabet.residues:
            raise ValueError(f"unknown_residues=map_to_x needs an X in the alphabet {alphabet.residues!r}")
        self.table = lookup_table(alphabet)
        self.residues = alphabet.residues
        self.policy = unknown_residues
        self.min_length = min_length
        self.stats = stats

    def __call__(self, batch: RecordBatch) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """Kept tokens (flat uint8), kept lengths (int64) and kept ids of ``batch``."""
        lengths = np.fromiter(map(len, batch.sequences), dtype=np.int64, count=len(batch))  # (b,)
        raw = np.frombuffer(b"".join(batch.sequences), dtype=np.uint8)  # (residues,)
        tokens = self.table[raw]  # (residues,) one LUT lookup for the whole batch
        keep = lengths >= self.min_length  # (b,)
        too_short = ~keep
        bad = np.flatnonzero(tokens == _INVALID)
        if bad.size:
            keep &= self._unknown(batch, lengths, raw, tokens, bad)
        self.stats.read += len(batch)
        self.stats.unknown += int((~keep & ~too_short).sum())
        self.stats.too_short += int((too_short).sum())
        if not keep.all():
            tokens = tokens[np.repeat(keep, lengths)]
            lengths = lengths[keep]
            ids = [rid for rid, k in zip(batch.ids, keep.tolist(), strict=True) if k]
        else:
            ids = batch.ids
        return tokens, lengths, ids

    def _unknown(
        self, batch: RecordBatch, lengths: np.ndarray, raw: np.ndarray, tokens: np.ndarray, bad: np.ndarray
    ) -> np.ndarray:
        """Apply the policy to bytes outside the alphabet (rare); returns the (b,) keep mask."""
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (b,)
        owner = np.searchsorted(starts, bad, side="right") - 1  # (k,) sequence of each bad byte
        values = raw[bad]
        folded = values | 0x20  # lowercase for the ASCII letter test
        is_letter = (folded >= ord("a")) & (folded <= ord("z"))
        keep = np.ones(len(lengths), dtype=bool)
        if not is_letter.all() or self.policy == "error":
            k = int(np.flatnonzero(~is_letter)[0]) if not is_letter.all() else 0
            seq = int(owner[k])
            kind = "is not a residue letter" if not is_letter[k] else "is not in the alphabet"
            raise SourceError(
                f"{batch.location(seq)}: character {_describe_byte(int(values[k]))} at position "
                f"{int(bad[k] - starts[seq]) + 1} of {batch.ids[seq].decode('utf-8', 'replace')!r} {kind} "
                f"{self.residues!r} (unknown_residues={self.policy})"
            )
        if self.policy == "map_to_x":
            tokens[bad] = self.residues.index("X")
            kept_bad = (lengths >= self.min_length)[owner]
            letters, counts = np.unique(values[kept_bad] & 0xDF, return_counts=True)  # uppercase
            for letter, count in zip(letters.tolist(), counts.tolist(), strict=True):
                key = chr(letter)
                self.stats.mapped_to_x[key] = self.stats.mapped_to_x.get(key, 0) + int(count)
        else:  # drop
            keep[np.unique(owner)] = False
        return keep


def length_summary(length_counts: np.ndarray) -> dict[str, Any]:
    """min/median/mean/max and nearest-rank quantiles from a histogram indexed by length."""
    counts = np.asarray(length_counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return {"count": 0}
    values = np.flatnonzero(counts)
    cumulative = np.cumsum(counts[values])

    def quantile(q: float) -> int:
        rank = max(1, int(np.ceil(q * total)))  # nearest rank, 1-based
        return int(values[np.searchsorted(cumulative, rank)])

    return {
        "count": total,
        "min": int(values[0]),
        "median": quantile(0.5),
        "mean": float((values * counts[values]).sum() / total),
        "max": int(values[-1]),
        "quantiles": {f"p{round(q * 100)}": quantile(q) for q in QUANTILES},
    }
