"""Function labels per sequence id (Gene Ontology terms, taxa, ...) read from the sequence source itself.

A label source is named by a config string (``parse_label_source``):
  header:KEY    a field ``KEY=value`` of the FASTA headers of the sequence source (UniRef style)
  column:NAME   a column of a tabular/JSONL/Parquet/HF sequence source
  PATH          a separate label table keyed by sequence id (simple TSV/CSV or a UniProt download),
                read by label_tables.py
This module reads the first two (``read_header_labels``, ``read_column_labels``). Each reader returns
``id -> labels`` (unique, first-seen order; ids without labels are absent). Ids follow the sequence
readers exactly (readers.py), because they are joined against the ids the readers put in the cache:
FASTA id = first word of the header; tabular/JSONL/Parquet/HF id = the ``id_column`` value, or the
1-based record number when ``id_column`` is empty.

Every error is a ``LabelSourceError`` (defined in label_io.py, importable from here) of one line
naming the file and the line, record or column. The GO term graph is read by term_graph.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protlig_dd.data.label_io import LabelSourceError, _open_table, _OrderedLabels, _reading, _split_labels
from protlig_dd.data.readers import (  # the readers' id rule for non-CSV cells
    _text_value,
    complete_parts,
    json_objects,
    load_hf_dataset,
)
from protlig_dd.data.sources import SourceSpec, open_binary

LABEL_SOURCE_KINDS = ("header", "column", "table")
_FASTA_BLOCK_BYTES = 8 << 20  # decompressed bytes scanned for headers at a time
_HF_BATCH_ROWS = 4096


@dataclass(frozen=True)
class LabelSource:
    """Where a sequence's labels come from: a FASTA header key, a source column, or a label table."""

    kind: str  # "header", "column" or "table"
    name: str  # header key, column name, or table path

    def __post_init__(self) -> None:
        if self.kind not in LABEL_SOURCE_KINDS:
            raise LabelSourceError(f"unknown label source kind {self.kind!r}; expected one of {LABEL_SOURCE_KINDS}")
        if not self.name:
            raise LabelSourceError(f"label source of kind {self.kind!r} without a name")


def parse_label_source(text: str) -> LabelSource:
    """Config string -> LabelSource: "header:TaxID" (FASTA header field TaxID=...), "column:go_terms" (a
    column of the sequence source), anything else is a path to a label table. Empty text or
    "header:"/"column:" with no name -> LabelSourceError."""
    text = text.strip()
    if not text:
        raise LabelSourceError("empty label source; expected header:KEY, column:NAME or a label table path")
    for kind in ("header", "column"):
        prefix = f"{kind}:"
        if text.startswith(prefix):
            name = text[len(prefix) :].strip()
            if not name:
                raise LabelSourceError(f"label source {text!r} names no {'key' if kind == 'header' else 'column'}")
            return LabelSource(kind, name)
    return LabelSource("table", text)


# ------------------------------------------------------------------------------------ FASTA headers


def read_header_labels(path: str, key: str) -> dict[str, list[str]]:
    """FASTA(.gz): id -> labels from the header field KEY=value. UniProt/UniRef style headers have values
    with spaces (">UniRef50_Q6GZX4 Putative transcription factor 001R n=2 Tax=Frog virus 3 TaxID=654924
    RepID=001R_FRG3G"): the value runs until the next " word=" or the end of the line. A value may hold
    several labels separated by ';' (strip spaces). A header without the key gives no entry. Duplicate
    ids: labels merged (union, first-seen order).

    A file in which no header has the key is an error (a mistyped key would otherwise give no labels).
    """
    if not key or any(c.isspace() for c in key) or "=" in key:
        raise LabelSourceError(f"{path}: invalid header key {key!r} (non-empty, no spaces, no '=')")
    field = re.compile(rb"(?:^|\s)" + re.escape(key.encode()) + rb"=(.*?)(?=\s+[^\s=]+=|\s*$)")
    labels = _OrderedLabels()
    num_headers = 0
    first_header = b""
    with _reading(path):
        for line, header in _fasta_headers(path):
            words = header.split(None, 1)
            if not words:  # the readers refuse it too, so no cache can hold such a record
                raise LabelSourceError(f"{path} line {line}: FASTA header without an id")
            num_headers += 1
            if num_headers == 1:
                first_header = header
            if len(words) == 2:
                rid = words[0].decode("utf-8", "replace")  # as readers.iter_records / the cache decode ids
                for match in field.finditer(words[1]):
                    labels.add(rid, _split_labels(match.group(1).decode("utf-8", "replace")))
    if num_headers == 0:
        raise LabelSourceError(f"{path}: no FASTA header ('>' line) found")
    result = labels.result()
    if not result:
        keys = re.findall(rb"(?:^|\s)([^\s=]+)=", first_header)
        raise LabelSourceError(
            f"{path}: no header has a non-empty field {key}=...; the first header has the keys "
            f"{[k.decode('utf-8', 'replace') for k in keys]}"
        )
    return result


def _fasta_headers(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, header text without '>' and line end) of every FASTA header, scanning large blocks
    so that sequence lines never become Python objects."""
    headers = re.compile(rb"^>([^\n]*)", re.MULTILINE)
    with open_binary(path) as handle:
        line = 1  # line number of the first byte of the part
        for part in complete_parts(handle, b"\n", _FASTA_BLOCK_BYTES):
            position = 0
            for match in headers.finditer(part):
                line += part.count(b"\n", position, match.start())
                position = match.start()
                yield line, match.group(1).rstrip(b"\r")
            line += part.count(b"\n", position)


# ----------------------------------------------------------------------------- sequence source columns


def read_column_labels(spec: SourceSpec, column: str) -> dict[str, list[str]]:
    """Tabular (csv/tsv, optionally gz), JSONL, Parquet or HF-datasets source: id -> labels from `column`
    (one label, or ';'-separated; in JSONL/Parquet/HF also a list of labels). Missing column ->
    LabelSourceError naming the file, the column and the columns that exist. Empty/None cells give no
    labels. A FASTA spec -> LabelSourceError (use header:KEY)."""
    with _reading(spec.path):
        fmt = spec.resolved_format()
    if fmt == "fasta":
        raise LabelSourceError(f"{spec.path}: a FASTA source has no columns; use header:KEY for header fields")
    readers: dict[str, Callable[[SourceSpec, str], Iterator[tuple[str, list[str]]]]] = {
        "csv": _delimited_labels,
        "tsv": _delimited_labels,
        "jsonl": _jsonl_labels,
        "parquet": _parquet_labels,
        "hf": _hf_labels,
    }
    labels = _OrderedLabels()
    with _reading(spec.path):
        for rid, cell_labels in readers[fmt](spec, column):
            labels.add(rid, cell_labels)
    return labels.result()


def _missing_column(path: str, where: str, column: str, role: str, available: list[str]) -> LabelSourceError:
    return LabelSourceError(f"{path}{where}: {role} column {column!r} not found; available columns: {available}")


def _cell_labels(value: Any, where: str, column: str) -> list[str]:
    """Labels of one JSONL/Parquet/HF cell: text (';'-separated), a number, or a list of those."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [label for item in value for label in _cell_labels(item, where, column)]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return _split_labels(value)
    if isinstance(value, float) and math.isnan(value):  # a missing value of a float column
        return []
    if isinstance(value, (bool, int, float)):
        return [str(value)]
    raise LabelSourceError(f"{where}: label column {column!r} holds {type(value).__name__}, expected text or a list")


def _delimited_labels(spec: SourceSpec, column: str) -> Iterator[tuple[str, list[str]]]:
    """CSV/TSV rows with the csv settings of readers._delimited_batches (same records, same ids)."""
    delimiter = "\t" if spec.resolved_format() == "tsv" else ","
    with _open_table(spec.path, delimiter) as (header, rows):
        for name, role in ((column, "label"), (spec.id_column, "id")):
            if name and name not in header:
                raise _missing_column(spec.path, " line 1", name, role, header)
        label_col = header.index(column)
        id_col = header.index(spec.id_column) if spec.id_column else None
        for line, record, row in rows:
            rid = row[id_col].strip() if id_col is not None else str(record)
            if not rid:
                raise LabelSourceError(
                    f"{spec.path} line {line} (record {record}): empty id in column {spec.id_column!r}"
                )
            yield rid, _split_labels(row[label_col])


def _jsonl_labels(spec: SourceSpec, column: str) -> Iterator[tuple[str, list[str]]]:
    """JSON Lines, blank lines skipped and records counted as in readers._jsonl_batches.

    A record without the label key has no labels (JSON writers omit empty fields); a key that no
    record has is a missing column.
    """
    with open_binary(spec.path) as raw:
        record = 0
        first_keys: list[str] = []
        column_seen = False
        for line, record, where, obj in json_objects(raw, spec.path):
            if spec.id_column and spec.id_column not in obj:
                raise _missing_column(spec.path, f" line {line} (record {record})", spec.id_column, "id", sorted(obj))
            if record == 1:
                first_keys = sorted(obj)
            column_seen = column_seen or column in obj
            yield _record_id(spec, obj, record, where), _cell_labels(obj.get(column), where, column)
    if record and not column_seen:
        raise _missing_column(spec.path, f" (all {record} records)", column, "label", first_keys)


def _record_id(spec: SourceSpec, cells: Mapping[str, Any], record: int, where: str) -> str:
    """The id the readers give a JSONL/Parquet/HF record (text or number cell, or the record number)."""
    if not spec.id_column:
        return str(record)
    rid = _text_value(cells[spec.id_column], where, spec.id_column, allow_number=True).strip()
    if not rid:
        raise LabelSourceError(f"{where}: empty id in column {spec.id_column!r}")
    return rid.decode("utf-8", "replace")


def _column_records(
    spec: SourceSpec, column: str, columns: list[str], batches: Callable[[list[str]], Iterator[Mapping[str, list[Any]]]]
) -> Iterator[tuple[str, list[str]]]:
    """Shared by Parquet and HF: column-wise batches -> (id, labels), records numbered from 1."""
    for name, role in ((column, "label"), (spec.id_column, "id")):
        if name and name not in columns:
            raise _missing_column(spec.path, "", name, role, columns)
    wanted = sorted({c for c in (column, spec.id_column) if c})
    record = 0
    for cols in batches(wanted):
        for i, value in enumerate(cols[column]):
            record += 1
            where = f"{spec.path} record {record}"
            cells = {spec.id_column: cols[spec.id_column][i]} if spec.id_column else {}
            yield _record_id(spec, cells, record, where), _cell_labels(value, where, column)


def _parquet_labels(spec: SourceSpec, column: str) -> Iterator[tuple[str, list[str]]]:
    """Parquet, read by pyarrow record batches of the two needed columns."""
    import pyarrow.parquet as pq

    if not Path(spec.path).is_file():
        raise LabelSourceError(f"{spec.path}: file not found")
    try:
        parquet = pq.ParquetFile(spec.path)
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) on bad files
        raise LabelSourceError(f"{spec.path}: not a readable Parquet file: {err}") from None

    def batches(wanted: list[str]) -> Iterator[Mapping[str, list[Any]]]:
        for table in parquet.iter_batches(batch_size=65536, columns=wanted):
            yield {name: table.column(name).to_pylist() for name in wanted}

    with parquet:
        yield from _column_records(spec, column, list(parquet.schema_arrow.names), batches)


def _hf_labels(spec: SourceSpec, column: str) -> Iterator[tuple[str, list[str]]]:
    """A Hugging Face dataset, loaded as the sequence reader loads it (readers.load_hf_dataset)."""
    loaded, columns = load_hf_dataset(spec)

    def batches(wanted: list[str]) -> Iterator[Mapping[str, list[Any]]]:
        yield from loaded.select_columns(wanted).iter(batch_size=_HF_BATCH_ROWS)

    yield from _column_records(spec, column, columns, batches)
