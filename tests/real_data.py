"""Real UniRef50 sequences for tests: the embedded training sample shipped in the package."""

from __future__ import annotations

import gzip
from pathlib import Path

UNIREF50_SAMPLE = (
    Path(__file__).resolve().parents[1] / "protlig_dd" / "data" / "embedded" / "uniref50_train_filt.fasta.gz"
)


def read_fasta_head(path: Path, count: int) -> list[str]:
    """The first ``count`` sequences of a (gzipped) FASTA file."""
    sequences: list[str] = []
    parts: list[str] = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                if parts:
                    sequences.append("".join(parts))
                    if len(sequences) == count:
                        return sequences
                parts = []
            else:
                parts.append(line.strip())
    if parts:
        sequences.append("".join(parts))
    return sequences


def write_real_fasta_gz(path: Path, count: int) -> Path:
    """A gzipped FASTA of the first ``count`` embedded UniRef50 sequences (real data, small and fast)."""
    body = "".join(f">UniRef50_test{i}\n{seq}\n" for i, seq in enumerate(read_fasta_head(UNIREF50_SAMPLE, count)))
    path.write_bytes(gzip.compress(body.encode(), mtime=0))
    return path


def real_sequence_set(count: int):
    """The first ``count`` embedded UniRef50 sequences, encoded into an in-memory SequenceSet."""
    from protlig_dd.data.alphabet import Alphabet
    from protlig_dd.data.sequence_set import InMemoryTokenStore, SequenceSet

    alphabet = Alphabet()
    encoded = [alphabet.encode(s) for s in read_fasta_head(UNIREF50_SAMPLE, count)]
    return SequenceSet.whole(InMemoryTokenStore.from_arrays(encoded))
