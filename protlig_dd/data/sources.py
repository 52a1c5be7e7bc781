"""What a sequence source is and how its bytes are opened.

``SourceSpec`` names a file, directory or datasets name plus column choices; ``detect_format``
picks the format from the extension (readers.py parses each format); ``RecordBatch``/``Record``
are what the readers yield; ``SourceError`` is every bad-source error, naming the file and the
line, record or byte.

``open_binary`` decompresses gzip (recognised by its magic number, not by its name). A truncated
gzip file (a copy cut short) or a corrupt one (a flipped bit: CRC or deflate error) raises a
SourceError naming the file and the compressed byte where it broke, instead of the EOFError /
zlib.error of the gzip module in the middle of a preparation.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FORMATS = ("fasta", "csv", "tsv", "parquet", "jsonl", "hf")
_EXTENSIONS = {
    ".fasta": "fasta",
    ".fa": "fasta",
    ".faa": "fasta",
    ".fas": "fasta",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
}
_GZIP_MAGIC = b"\x1f\x8b"
# Read-ahead of the decompressed stream (FASTA blocks bypass it; CSV/JSONL lines come from it).
_READ_BUFFER_BYTES = 1 << 20


class SourceError(ValueError):
    """A data source is missing, empty, malformed or damaged; the message names the file and the
    line, record or byte."""


@dataclass(frozen=True)
class SourceSpec:
    """Where to read sequences and how: one file, directory or datasets name plus column choices."""

    path: str
    format: str = "auto"  # auto or one of FORMATS
    sequence_column: str = "sequence"
    id_column: str = ""  # empty = 1-based record number
    hf_split: str = "train"
    streaming: bool = False

    def resolved_format(self) -> str:
        """The concrete format: the given one, or the one detected from the path."""
        if self.format == "auto":
            return detect_format(self.path)
        if self.format not in FORMATS:
            raise SourceError(
                f"{self.path}: unknown format {self.format!r}; expected auto or one of {FORMATS}"
            )
        return self.format

    def describe(self) -> dict[str, Any]:
        """Plain-data description stored in the cache metadata."""
        return {
            "path": self.path,
            "format": self.resolved_format(),
            "sequence_column": self.sequence_column,
            "id_column": self.id_column,
            "hf_split": self.hf_split,
        }


@dataclass
class RecordBatch:
    """Consecutive records of one source: ids and cleaned sequences as bytes, plus their locations.

    ``lines[i]`` is the 1-based line of record i in the file (None for sources without lines);
    ``first_record + i`` is its 1-based record number.
    """

    source: str
    ids: list[bytes]
    sequences: list[bytes]
    first_record: int
    lines: list[int] | None = None

    def __len__(self) -> int:
        return len(self.sequences)

    def location(self, i: int) -> str:
        """Human-readable position of record i, for error messages."""
        record = self.first_record + i
        if self.lines is not None:
            return f"{self.source} line {self.lines[i]} (record {record})"
        return f"{self.source} record {record}"


@dataclass(frozen=True)
class Record:
    """One sequence with its id and where it came from."""

    id: str
    sequence: str
    location: str


def detect_format(path: str) -> str:
    """Format of ``path`` from its extension (a trailing .gz is looked through).

    An existing directory is a Hugging Face dataset. A path that does not exist is an error.
    """
    p = Path(path)
    if p.is_dir():
        return "hf"
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if not p.exists():
        hint = "" if fmt else "; for a Hugging Face hub dataset set the format to 'hf'"
        raise SourceError(f"{path}: file not found{hint}")
    if fmt is None:
        raise SourceError(
            f"{path}: cannot detect the format from the extension; expected one of "
            f"{sorted(_EXTENSIONS)} (optionally .gz) or set the format explicitly"
        )
    return fmt



def open_binary(path: str) -> IO[bytes]:
    """Open a file for reading bytes, decompressing gzip; errors are SourceErrors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{path}: file not found")
    try:
        raw = open(p, "rb")  # returned (possibly wrapped) to the caller, who closes it
    except OSError as err:
        raise SourceError(f"{path}: cannot open: {err.strerror or err}") from None
    magic = raw.read(2)
    raw.seek(0)
    if magic != _GZIP_MAGIC:
        return raw
    return io.BufferedReader(_GzipStream(path, raw), buffer_size=_READ_BUFFER_BYTES)


class _GzipStream(io.RawIOBase):
    """The decompressed bytes of a gzip file, whose truncation or corruption is a SourceError."""

    def __init__(self, path: str, raw: IO[bytes]) -> None:
        super().__init__()
        self._path = path
        self._raw = raw
        self._size = os.fstat(raw.fileno()).st_size
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._gzip.readinto(buffer)
        except EOFError:  # the deflate stream or the trailer is cut short
            raise SourceError(
                f"{self._path}: truncated gzip file: the compressed data end at byte {self._size:,} "
                f"before the end-of-stream marker, after {self._gzip.tell():,} decompressed bytes; "
                "the file is incomplete (copy or download it again)"
            ) from None
        except (gzip.BadGzipFile, zlib.error) as err:  # CRC or length mismatch, invalid deflate data
            # The compressed position is where the damage was detected (within one read-ahead).
            raise SourceError(
                f"{self._path}: corrupt gzip data detected near compressed byte {self._raw.tell():,} "
                f"of {self._size:,}, after {self._gzip.tell():,} decompressed bytes: {err}"
            ) from None

    def close(self) -> None:
        if not self.closed:
            try:
                self._gzip.close()
            finally:
                self._raw.close()
        super().close()
