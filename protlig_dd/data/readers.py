"""Streaming readers: every supported source becomes batches of (id, sequence, location) records.

Supported sources (format auto-detected from the extension unless given explicitly):
  fasta    .fasta .fa .faa .fas, each optionally .gz. The id is the first word of the header
           (``>UniRef50_A0A007 n=3 Tax=...`` -> ``UniRef50_A0A007``); the rest is ignored.
           Sequences spanning several lines are joined.
  csv/tsv  .csv .tsv (optionally .gz), read line by line with a header row.
  parquet  .parquet, read by pyarrow record batches.
  jsonl    .jsonl .json (optionally .gz): one JSON object per line (a JSON array is refused).
  hf       a Hugging Face ``datasets`` source: a directory written by ``save_to_disk`` (loaded with
           ``load_from_disk``) or anything ``load_dataset`` accepts. Auto-detection picks it only for
           an existing directory; a hub name needs ``format="hf"`` explicitly, so a mistyped path never
           turns into a download.
Tabular and HF sources take the sequence from ``sequence_column`` and the id from ``id_column``;
without an id column the id is the 1-based record number (such ids change when the file is
re-ordered, so hash splits of them are only stable for a fixed file).

Cleaning, the same for every format so that equal sequences give equal token streams: all
whitespace inside a sequence is removed, and one trailing ``*`` (a translation stop symbol) is
dropped. A ``*`` anywhere else is left in place and later rejected as a non-letter by the cache.

Errors are ``SourceError`` (a ValueError) naming the file and the line or record: a missing file,
an empty source, a sequence line before any FASTA header, a header without an id, an empty
sequence, an unknown column; a truncated or corrupt gzip file names the byte (sources.py), and
any other read error (I/O, permission) names the file. The spec, format detection, record batches
and file opening live in sources.py.

Readers yield ``RecordBatch`` objects (lists of bytes, a few MB of residues each) instead of one
object per record, so the cache can tokenize many sequences with one numpy lookup.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protlig_dd.data.sources import Record, RecordBatch, SourceError, SourceSpec, open_binary

logger = logging.getLogger(__name__)

# Whitespace removed from every sequence (bytes.translate deletes them in one C call).
_WHITESPACE = b" \t\r\n\v\f"
# Decompressed bytes read per FASTA block; records are cut at the last '\n>' of each block.
_FASTA_BLOCK_BYTES = 8 << 20
# Residues per batch for the record-at-a-time formats (CSV, JSONL, Parquet, HF).
_BATCH_RESIDUES = 4 << 20
_BATCH_RECORDS = 65536


def iter_batches(spec: SourceSpec) -> Iterator[RecordBatch]:
    """Stream ``spec`` as RecordBatches; raise SourceError if it holds no record at all."""
    fmt = spec.resolved_format()
    readers = {
        "fasta": _fasta_batches,
        "csv": _delimited_batches,
        "tsv": _delimited_batches,
        "parquet": _parquet_batches,
        "jsonl": _jsonl_batches,
        "hf": _hf_batches,
    }
    seen = 0
    try:
        for batch in readers[fmt](spec, fmt):
            seen += len(batch)
            if len(batch):
                yield batch
    except OSError as err:  # reading failed (I/O error, permission): still a one-line source error
        raise SourceError(f"{spec.path}: cannot read after {seen:,} records: {err}") from err
    if seen == 0:
        raise SourceError(f"{spec.path}: empty source (no sequences)")


def iter_records(spec: SourceSpec) -> Iterator[Record]:
    """Stream ``spec`` one record at a time (convenient for small inputs and tests)."""
    for batch in iter_batches(spec):
        for i, (rid, seq) in enumerate(zip(batch.ids, batch.sequences, strict=True)):
            yield Record(rid.decode("utf-8", "replace"), seq.decode("ascii", "replace"), batch.location(i))


def _clean(seq: bytes) -> bytes:
    """Remove whitespace and one trailing '*' stop symbol."""
    seq = seq.translate(None, _WHITESPACE)
    if seq.endswith(b"*"):
        seq = seq[:-1]
    return seq


# ----------------------------------------------------------------------------------------- FASTA


def _fasta_batches(spec: SourceSpec, fmt: str) -> Iterator[RecordBatch]:
    """Read FASTA in large blocks, cutting complete records at the last '\\n>' of each block."""
    with open_binary(spec.path) as handle:
        line = 1  # line number of the first line of the next part
        record = 1
        first = True
        for part in complete_parts(handle, b"\n>", _FASTA_BLOCK_BYTES):
            if first:
                part, line = _skip_leading_blank(part, spec.path, line)
                first = False
            if part:
                batch = _parse_fasta_part(part, spec.path, line, record)
                record += len(batch)
                line += part.count(b"\n")
                yield batch


def complete_parts(handle: Any, separator: bytes, block_bytes: int) -> Iterator[bytes]:
    """The bytes of ``handle`` in large parts, each cut just after the last ``separator`` of its block
    (b"\\n>": whole FASTA records; b"\\n": whole lines), so no record or line spans two parts; the
    last part holds whatever remains. Reading blocks keeps sequence lines from becoming Python objects."""
    carry = b""
    while True:
        block = handle.read(block_bytes)
        data = carry + block if carry else block
        if not block:
            if data:
                yield data
            return
        cut = data.rfind(separator)
        if cut < 0:  # one record (line) larger than a block: keep reading
            carry = data
            continue
        carry = data[cut + 1 :]
        yield data[: cut + 1]


def _skip_leading_blank(part: bytes, path: str, line: int) -> tuple[bytes, int]:
    """Drop blank lines before the first header; anything else there is a sequence without header."""
    stripped = part.lstrip(b" \t\r\n")
    skipped = part[: len(part) - len(stripped)]
    line += skipped.count(b"\n")
    if stripped and not stripped.startswith(b">"):
        raise SourceError(f"{path} line {line}: sequence line before any '>' header")
    return stripped, line


def _parse_fasta_part(part: bytes, path: str, line: int, first_record: int) -> RecordBatch:
    """Parse a run of complete FASTA records (``part`` starts with '>')."""
    ids: list[bytes] = []
    sequences: list[bytes] = []
    lines: list[int] = []
    for rec in part[1:].split(b"\n>"):
        newline = rec.find(b"\n")
        header, body = (rec, b"") if newline < 0 else (rec[:newline], rec[newline + 1 :])
        words = header.split(None, 1)
        if not words:
            raise SourceError(f"{path} line {line}: FASTA header without an id")
        seq = body.translate(None, _WHITESPACE)
        if seq.endswith(b"*"):
            seq = seq[:-1]
        if not seq:
            raise SourceError(
                f"{path} line {line}: empty sequence for {words[0].decode('utf-8', 'replace')!r}"
            )
        ids.append(words[0])
        sequences.append(seq)
        lines.append(line)
        line += rec.count(b"\n") + 1
    return RecordBatch(path, ids, sequences, first_record, lines)


# -------------------------------------------------------------------------------- tabular formats


class _Batcher:
    """Accumulates records of a record-at-a-time reader into RecordBatches."""

    def __init__(self, source: str, with_lines: bool) -> None:
        self.source = source
        self.with_lines = with_lines
        self.next_record = 1
        self._reset()

    def _reset(self) -> None:
        self.ids: list[bytes] = []
        self.sequences: list[bytes] = []
        self.lines: list[int] = []
        self.residues = 0

    def add(self, rid: bytes, raw: bytes, where: str, line: int = 0) -> RecordBatch | None:
        """Clean and store one record; return a full batch when the buffer is large enough."""
        seq = _clean(raw)
        if not seq:
            raise SourceError(f"{where}: empty sequence")
        self.ids.append(rid)
        self.sequences.append(seq)
        self.lines.append(line)
        self.residues += len(seq)
        if self.residues >= _BATCH_RESIDUES or len(self.sequences) >= _BATCH_RECORDS:
            return self.flush()
        return None

    def flush(self) -> RecordBatch:
        batch = RecordBatch(
            self.source, self.ids, self.sequences, self.next_record, self.lines if self.with_lines else None
        )
        self.next_record += len(self.sequences)
        self._reset()
        return batch


def _column_error(path: str, where: str, column: str, role: str, available: list[str]) -> SourceError:
    return SourceError(f"{path}{where}: {role} column {column!r} not found; available columns: {available}")


def _text_value(value: Any, where: str, column: str, allow_number: bool = False) -> bytes:
    """A cell as UTF-8 bytes; numbers are accepted for ids only (e.g. an integer record_id column)."""
    if value is None:
        raise SourceError(f"{where}: missing value in column {column!r}")
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value).encode()
        raise SourceError(f"{where}: column {column!r} holds {type(value).__name__}, expected text")
    return value.encode("utf-8")


def _delimited_batches(spec: SourceSpec, fmt: str) -> Iterator[RecordBatch]:
    """CSV/TSV with a header row, streamed line by line by the csv module."""
    delimiter = "\t" if fmt == "tsv" else ","
    with open_binary(spec.path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise SourceError(f"{spec.path}: empty source (no header row)")
        header = [h.strip() for h in header]
        if spec.sequence_column not in header:
            raise _column_error(spec.path, " line 1", spec.sequence_column, "sequence", header)
        seq_col = header.index(spec.sequence_column)
        id_col = None
        if spec.id_column:
            if spec.id_column not in header:
                raise _column_error(spec.path, " line 1", spec.id_column, "id", header)
            id_col = header.index(spec.id_column)
        width = len(header)
        batcher = _Batcher(spec.path, with_lines=True)
        for line, record, row in delimited_rows(reader, spec.path, width, f"{fmt.upper()} row"):
            where = f"{spec.path} line {line} (record {record})"
            rid = row[id_col].strip().encode("utf-8") if id_col is not None else str(record).encode()
            if not rid:
                raise SourceError(f"{where}: empty id in column {spec.id_column!r}")
            full = batcher.add(rid, row[seq_col].encode("utf-8"), where, line)
            if full is not None:
                yield full
        yield batcher.flush()


def delimited_rows(
    reader: Any, path: str, width: int, what: str = "row"
) -> Iterator[tuple[int, int, list[str]]]:
    """(physical line, record number, fields) of each row of a ``csv.reader`` past its header.

    Blank lines are skipped and not counted as records; a malformed row or one of another width than
    the header is a SourceError naming the line (``what`` names the kind of row in that message).
    The sequence readers and the label readers share it, so their record numbers agree.
    """
    record = 0
    while True:
        line = reader.line_num + 1  # physical line where the next row starts
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise SourceError(f"{path} line {line}: malformed {what}: {err}") from None
        if not row:  # blank line
            continue
        record += 1
        if len(row) != width:
            raise SourceError(f"{path} line {line} (record {record}): {len(row)} fields, the header has {width}")
        yield line, record, row


def json_objects(raw: Any, path: str) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    """(line, record number, where, object) of each non-blank line of a JSON Lines byte stream.

    A JSON array, invalid JSON or a line that is not an object is a SourceError naming the line. The
    sequence readers and the label readers share it, so their record numbers agree.
    """
    record = 0
    for line, text in enumerate(raw, start=1):
        text = text.strip()
        if not text:
            continue
        if record == 0 and text.startswith(b"["):
            raise SourceError(f"{path} line {line}: a JSON array is not supported; use JSON Lines")
        record += 1
        where = f"{path} line {line} (record {record})"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise SourceError(f"{where}: invalid JSON: {err.msg}") from None
        if not isinstance(obj, dict):
            raise SourceError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield line, record, where, obj


def _jsonl_batches(spec: SourceSpec, fmt: str) -> Iterator[RecordBatch]:
    """JSON Lines: one object per line; blank lines are skipped."""
    with open_binary(spec.path) as raw:
        batcher = _Batcher(spec.path, with_lines=True)
        for line, record, where, obj in json_objects(raw, spec.path):
            for column, role in ((spec.sequence_column, "sequence"), (spec.id_column, "id")):
                if column and column not in obj:
                    raise _column_error(
                        spec.path, f" line {line} (record {record})", column, role, sorted(obj)
                    )
            rid = (
                _text_value(obj[spec.id_column], where, spec.id_column, allow_number=True).strip()
                if spec.id_column
                else str(record).encode()
            )
            if not rid:
                raise SourceError(f"{where}: empty id in column {spec.id_column!r}")
            full = batcher.add(
                rid, _text_value(obj[spec.sequence_column], where, spec.sequence_column), where, line
            )
            if full is not None:
                yield full
        yield batcher.flush()


def _columns_batches(
    spec: SourceSpec, columns: list[str], column_batches: Iterator[dict[str, list[Any]]]
) -> Iterator[RecordBatch]:
    """Shared by Parquet and HF: turn column-wise batches into RecordBatches."""
    for column, role in ((spec.sequence_column, "sequence"), (spec.id_column, "id")):
        if column and column not in columns:
            raise _column_error(spec.path, "", column, role, columns)
    batcher = _Batcher(spec.path, with_lines=False)
    record = 0
    for cols in column_batches:
        seqs = cols[spec.sequence_column]
        ids = cols[spec.id_column] if spec.id_column else None
        for i, value in enumerate(seqs):
            record += 1
            where = f"{spec.path} record {record}"
            if ids is not None:
                rid = _text_value(ids[i], where, spec.id_column, allow_number=True).strip()
                if not rid:
                    raise SourceError(f"{where}: empty id in column {spec.id_column!r}")
            else:
                rid = str(record).encode()
            full = batcher.add(rid, _text_value(value, where, spec.sequence_column), where)
            if full is not None:
                yield full
    yield batcher.flush()


def _parquet_batches(spec: SourceSpec, fmt: str) -> Iterator[RecordBatch]:
    """Parquet, read by pyarrow record batches of the needed columns only."""
    import pyarrow.parquet as pq

    if not Path(spec.path).is_file():
        raise SourceError(f"{spec.path}: file not found")
    try:
        parquet = pq.ParquetFile(spec.path)
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) on bad files
        raise SourceError(f"{spec.path}: not a readable Parquet file: {err}") from None
    columns = list(parquet.schema_arrow.names)
    wanted = [c for c in (spec.sequence_column, spec.id_column) if c]

    def batches() -> Iterator[dict[str, list[Any]]]:
        if not all(c in columns for c in wanted):
            return
        for table in parquet.iter_batches(batch_size=_BATCH_RECORDS, columns=sorted(set(wanted))):
            yield {name: table.column(name).to_pylist() for name in wanted}

    with parquet:
        yield from _columns_batches(spec, columns, batches())


def load_hf_dataset(spec: SourceSpec) -> tuple[Any, list[str]]:
    """(dataset, its column names) of a Hugging Face source: a saved directory (load_from_disk, the
    ``hf_split`` of a DatasetDict) or a load_dataset name/path. No columns: an empty streaming source."""
    import datasets

    path = Path(spec.path)
    saved = path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if spec.hf_split not in loaded:
                    raise SourceError(f"{spec.path}: split {spec.hf_split!r} not found; available: {list(loaded)}")
                loaded = loaded[spec.hf_split]
        else:
            loaded = datasets.load_dataset(spec.path, split=spec.hf_split, streaming=spec.streaming)
    except FileNotFoundError as err:
        raise SourceError(f"{spec.path}: dataset not found: {err}") from None
    columns = list(loaded.column_names or [])
    if not columns:  # streaming datasets may not know their columns before the first row
        first = next(iter(loaded), None)
        columns = list(first) if first is not None else []
    return loaded, columns


def _hf_batches(spec: SourceSpec, fmt: str) -> Iterator[RecordBatch]:
    """A Hugging Face dataset: a saved directory (load_from_disk) or a load_dataset name/path."""
    loaded, columns = load_hf_dataset(spec)
    if not columns:
        raise SourceError(f"{spec.path}: empty source (no sequences)")
    wanted = [c for c in (spec.sequence_column, spec.id_column) if c]

    def batches() -> Iterator[dict[str, list[Any]]]:
        if not all(c in columns for c in wanted):
            return
        yield from loaded.select_columns(sorted(set(wanted))).iter(batch_size=_BATCH_RECORDS // 16)

    yield from _columns_batches(spec, columns, batches())
