"""Write sequences as FASTA: the counterpart of the readers (sample dumps, the sampling CLI, reports)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LINE_WIDTH = 60  # residues per line


def write_fasta(path: Path, sequences: Sequence[str], headers: Sequence[str]) -> None:
    """Write ``sequences`` under ``headers`` (60 residues per line), atomically: a temporary file
    renamed into place, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as handle:
        for header, sequence in zip(headers, sequences, strict=True):
            handle.write(f">{header}\n")
            for start in range(0, len(sequence), LINE_WIDTH):
                handle.write(sequence[start : start + LINE_WIDTH] + "\n")
    tmp.replace(path)
