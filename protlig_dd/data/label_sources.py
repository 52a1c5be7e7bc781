"""Function labels per sequence id (Gene Ontology terms, taxa, ...), read from three kinds of source.

A label source is named by a config string (``parse_label_source``):
  header:KEY    a field ``KEY=value`` of the FASTA headers of the sequence source (UniRef style)
  column:NAME   a column of a tabular/JSONL/Parquet/HF sequence source
  PATH          a separate label table keyed by sequence id (simple TSV/CSV or a UniProt download)
Each reader returns ``id -> labels`` (unique, first-seen order; ids without labels are absent).
Ids follow the sequence readers exactly (readers.py), because they are joined against the ids the
readers put in the cache: FASTA id = first word of the header; tabular/JSONL/Parquet/HF id = the
``id_column`` value, or the 1-based record number when ``id_column`` is empty.

A GO term graph (``read_term_parents``) gives each term its ancestors (``ancestor_closure``), so
label sets can be closed upwards (``add_ancestors``) and terms assigned to an ontology
(``term_namespaces_from_graph``). Vocabularies and caches are built elsewhere.

Every error is a ``LabelSourceError`` of one line naming the file and the line, record or column.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protlig_dd.data.readers import _text_value  # the readers' id rule for non-CSV cells
from protlig_dd.data.sources import SourceError, SourceSpec, open_binary

logger = logging.getLogger(__name__)

LABEL_SOURCE_KINDS = ("header", "column", "table")
ONTOLOGIES = ("molecular_function", "biological_process", "cellular_component")
GO_ROOTS = {"GO:0003674": "molecular_function", "GO:0008150": "biological_process", "GO:0005575": "cellular_component"}
# Columns of a UniProtKB "Download TSV": all terms as ids, or one ontology as "name [GO:id]" items.
_UNIPROT_ID_COLUMN = "entry"
_UNIPROT_ALL_TERMS = "gene ontology ids"
_UNIPROT_ONTOLOGY_COLUMNS = {
    "gene ontology (molecular function)": "molecular_function",
    "gene ontology (biological process)": "biological_process",
    "gene ontology (cellular component)": "cellular_component",
}
_BRACKETED_TERM = re.compile(r"\[(GO:\d+)\]")
_FASTA_BLOCK_BYTES = 8 << 20  # decompressed bytes scanned for headers at a time
_HF_BATCH_ROWS = 4096


class LabelSourceError(ValueError):
    """A label source is missing, malformed or unusable; the message is one line naming the file and the
    line/record/column."""


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


# ---------------------------------------------------------------------------------------- helpers


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn the errors of opening and decoding ``path`` into one-line LabelSourceErrors."""
    try:
        yield
    except SourceError as err:  # open_binary / readers already name the file (and byte or record)
        raise LabelSourceError(str(err)) from None
    except UnicodeDecodeError as err:
        raise LabelSourceError(f"{path}: not UTF-8 text: {err}") from None
    except csv.Error as err:  # e.g. a field larger than the csv module's limit
        raise LabelSourceError(f"{path}: malformed table: {err}") from None
    except OSError as err:
        raise LabelSourceError(f"{path}: cannot read: {err}") from None


class _OrderedLabels:
    """id -> labels accumulated over rows/records: unique per id, first-seen order, ids without labels absent."""

    def __init__(self) -> None:
        # Plain lists, deduplicated once at the end: several times faster than a set per id on 354k rows.
        self._labels: dict[str, list[str]] = {}

    def add(self, rid: str, labels: list[str]) -> None:
        if labels:
            known = self._labels.get(rid)
            if known is None:
                self._labels[rid] = labels
            else:
                known.extend(labels)

    def result(self) -> dict[str, list[str]]:
        return {rid: list(dict.fromkeys(labels)) for rid, labels in self._labels.items()}


def _split_labels(text: str) -> list[str]:
    """'a; b;;c ' -> ['a', 'b', 'c'] (a fresh list the caller may keep)."""
    return [part for part in map(str.strip, text.split(";")) if part]


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


def _table_delimiter(path: str, first_line: str) -> str:
    """Tab or comma: from the extension (a trailing .gz is looked through), else sniffed from the header line."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in (".tsv", ".tab"):
        return "\t"
    if suffixes and suffixes[-1] == ".csv":
        return ","
    return "\t" if first_line.count("\t") >= first_line.count(",") else ","


@contextmanager
def _open_table(
    path: str, delimiter: str | None = None, quoted_tsv: bool = True
) -> Iterator[tuple[list[str], Iterator[tuple[int, int, list[str]]]]]:
    """Open a delimited text file with a header row: (stripped header, rows as (line, record, fields)).

    Blank lines are skipped and not counted as records, rows of another width than the header are
    errors: the same rules as readers._delimited_batches, so record numbers agree with it.
    ``delimiter=None`` picks it from the extension or the header line. ``quoted_tsv=False`` reads
    tab-separated fields verbatim (UniProt TSV downloads are unquoted and protein names may hold '"').
    """
    with _reading(path), open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")  # -sig: drop a spreadsheet BOM
        first = text.readline()
        if not first.strip():
            raise LabelSourceError(f"{path}: empty file (no header row)")
        if delimiter is None:
            delimiter = _table_delimiter(path, first)
        quoting = csv.QUOTE_NONE if delimiter == "\t" and not quoted_tsv else csv.QUOTE_MINIMAL
        reader = csv.reader(itertools.chain([first], text), delimiter=delimiter, quoting=quoting)
        header = [h.strip() for h in next(reader)]

        def rows() -> Iterator[tuple[int, int, list[str]]]:
            record = 0
            while True:
                line = reader.line_num + 1  # physical line where the next row starts
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise LabelSourceError(f"{path} line {line}: malformed row: {err}") from None
                if not row:
                    continue
                record += 1
                if len(row) != len(header):
                    raise LabelSourceError(
                        f"{path} line {line} (record {record}): {len(row)} fields, the header has {len(header)}"
                    )
                yield line, record, row

        yield header, rows()


def _keep_all(terms: list[str]) -> list[str]:
    return terms


def _find_columns(header: list[str]) -> dict[str, int]:
    """Lower-cased column name -> index (first occurrence), for case-insensitive header matching."""
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(name.lower(), i)
    return index


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
        carry = b""
        line = 1  # line number of the first byte of ``data``
        while True:
            block = handle.read(_FASTA_BLOCK_BYTES)
            data = carry + block if carry else block
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:  # one line longer than a block: keep reading
                    carry = data
                    continue
                part, carry = data[: cut + 1], data[cut + 1 :]
            else:
                part, carry = data, b""
            position = 0
            for match in headers.finditer(part):
                line += part.count(b"\n", position, match.start())
                position = match.start()
                yield line, match.group(1).rstrip(b"\r")
            line += part.count(b"\n", position)
            if not block:
                return


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
        for line, text in enumerate(raw, start=1):
            text = text.strip()
            if not text:
                continue
            if record == 0 and text.startswith(b"["):
                raise LabelSourceError(f"{spec.path} line {line}: a JSON array is not supported; use JSON Lines")
            record += 1
            where = f"{spec.path} line {line} (record {record})"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                raise LabelSourceError(f"{where}: invalid JSON: {err.msg}") from None
            if not isinstance(obj, dict):
                raise LabelSourceError(f"{where}: expected a JSON object, got {type(obj).__name__}")
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
    """A Hugging Face dataset, loaded as readers._hf_batches loads it (saved directory or load_dataset)."""
    import datasets

    path = Path(spec.path)
    saved = path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if spec.hf_split not in loaded:
                    raise LabelSourceError(f"{spec.path}: split {spec.hf_split!r} not found; available: {list(loaded)}")
                loaded = loaded[spec.hf_split]
        else:
            loaded = datasets.load_dataset(spec.path, split=spec.hf_split, streaming=spec.streaming)
    except FileNotFoundError as err:
        raise LabelSourceError(f"{spec.path}: dataset not found: {err}") from None
    columns = list(loaded.column_names or [])
    if not columns:  # a streaming dataset may not know its columns before the first row
        first = next(iter(loaded), None)
        columns = list(first) if first is not None else []

    def batches(wanted: list[str]) -> Iterator[Mapping[str, list[Any]]]:
        yield from loaded.select_columns(wanted).iter(batch_size=_HF_BATCH_ROWS)

    yield from _column_records(spec, column, columns, batches)


# ------------------------------------------------------------------------------------- label tables


def _check_ontologies(path: str, ontologies: Sequence[str]) -> tuple[str, ...]:
    """The requested ontologies (all three when empty); an unknown name is an error."""
    for name in ontologies:
        if name not in ONTOLOGIES:
            raise LabelSourceError(f"{path}: unknown ontology {name!r}; valid ontologies: {list(ONTOLOGIES)}")
    return tuple(dict.fromkeys(ontologies)) or ONTOLOGIES


def read_label_table(
    path: str, ontologies: Sequence[str] = (), term_namespaces: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """A separate table keyed by sequence id, TSV or CSV (optionally gz; delimiter from the extension, or
    sniffed from the header line). Two formats, detected from the header row (case-insensitive):

    1. simple: columns ``accession, ontology, go_terms`` (ontology is molecular_function /
       biological_process / cellular_component; terms ';'-separated; several rows per accession are
       merged), as the shared sp50_go.tsv.gz; or two columns ``id`` (or ``accession``) + ``labels``.
    2. a UniProtKB "Download TSV": an ``Entry`` column and any of ``Gene Ontology IDs`` ("GO:1; GO:2",
       all ontologies) and ``Gene Ontology (molecular function|biological process|cellular component)``
       ("ATP binding [GO:0005524]; ...": the ids in brackets are taken). Other columns are ignored.

    ``ontologies`` (subset of ONTOLOGIES; empty = all) filters terms: format 1 by its ontology column;
    the two-column form and format 2 without the ontology's own column by ``term_namespaces`` (term ->
    ontology, from ``term_namespaces_from_graph``; terms it does not know are dropped), which is then
    required. Labels per id: unique, first-seen order; ids without labels are absent.
    """
    wanted = _check_ontologies(path, ontologies)
    filtering = set(wanted) != set(ONTOLOGIES)
    labels = _OrderedLabels()
    num_rows = 0
    with _open_table(path, quoted_tsv=False) as (header, rows):
        row_terms, id_col = _table_terms(path, header, wanted, filtering, term_namespaces)
        for line, record, row in rows:
            num_rows += 1
            rid = row[id_col].strip()
            if not rid:
                raise LabelSourceError(f"{path} line {line} (record {record}): empty id in column {header[id_col]!r}")
            labels.add(rid, row_terms(row, line))
    if num_rows == 0:
        raise LabelSourceError(f"{path}: no rows after the header")
    return labels.result()


def _table_terms(
    path: str,
    header: list[str],
    wanted: tuple[str, ...],
    filtering: bool,
    term_namespaces: Mapping[str, str] | None,
) -> tuple[Callable[[list[str], int], list[str]], int]:
    """Detect the table format from ``header``: (row, line) -> its kept terms, and the id column index."""
    columns = _find_columns(header)

    def namespace_filter(why: str) -> Callable[[list[str]], list[str]]:
        if not filtering:
            return _keep_all
        if term_namespaces is None:
            raise LabelSourceError(
                f"{path}: filtering by ontology {list(wanted)} needs a term graph (term_namespaces) because {why}"
            )
        namespaces = term_namespaces
        return lambda terms: [t for t in terms if namespaces.get(t) in wanted]

    id_col = columns.get("accession", columns.get("id"))
    if id_col is not None and "ontology" in columns and "go_terms" in columns:
        ontology_col, terms_col = columns["ontology"], columns["go_terms"]

        def simple_terms(row: list[str], line: int) -> list[str]:
            ontology = row[ontology_col].strip()
            if ontology not in ONTOLOGIES:
                raise LabelSourceError(f"{path} line {line}: unknown ontology {ontology!r}; valid: {list(ONTOLOGIES)}")
            return _split_labels(row[terms_col]) if ontology in wanted else []

        return simple_terms, id_col
    if id_col is not None and "labels" in columns:
        labels_col = columns["labels"]
        keep = namespace_filter("its 'labels' column does not say which ontology a term belongs to")
        return (lambda row, line: keep(_split_labels(row[labels_col]))), id_col

    per_ontology = {ont: columns[name] for name, ont in _UNIPROT_ONTOLOGY_COLUMNS.items() if name in columns}
    all_terms_col = columns.get(_UNIPROT_ALL_TERMS)
    if _UNIPROT_ID_COLUMN in columns and (per_ontology or all_terms_col is not None):
        # (column index, parser, filter), read in header order so that the first-seen order of the
        # labels follows the columns of the file.
        extractors: list[tuple[int, Callable[[str], list[str]], Callable[[list[str]], list[str]]]] = [
            (col, _BRACKETED_TERM.findall, _keep_all) for ont, col in per_ontology.items() if ont in wanted
        ]
        unserved = [ont for ont in wanted if ont not in per_ontology]
        if filtering and unserved and all_terms_col is None:
            expected = [name for name, ont in _UNIPROT_ONTOLOGY_COLUMNS.items() if ont in unserved]
            raise LabelSourceError(
                f"{path}: no column for ontology {unserved}; expected one of {expected} or 'Gene Ontology IDs' "
                f"among the columns {header}"
            )
        if all_terms_col is not None and (unserved or not filtering):
            # Without filtering this column is all that is needed; with it, only the ontologies that
            # have no column of their own need it (terms of the others are deduplicated away).
            why = f"the file has no column of its own for {unserved}, only 'Gene Ontology IDs'"
            extractors.append((all_terms_col, _split_labels, namespace_filter(why)))
        extractors.sort(key=lambda extractor: extractor[0])

        def uniprot_terms(row: list[str], line: int) -> list[str]:
            return [term for col, parse, keep in extractors for term in keep(parse(row[col]))]

        return uniprot_terms, columns[_UNIPROT_ID_COLUMN]
    raise LabelSourceError(
        f"{path}: unrecognised label table header {header}; expected columns [accession, ontology, go_terms], "
        "[id, labels], or a UniProt TSV with 'Entry' and 'Gene Ontology IDs' / 'Gene Ontology (molecular "
        "function|biological process|cellular component)'"
    )


# --------------------------------------------------------------------------------------- term graph


def read_term_parents(path: str, relations: Sequence[str] = ("is_a", "part_of")) -> dict[str, list[str]]:
    """A term graph table like the shared go_graph.tsv.gz (columns child, parent, distance, relation;
    relations include is_a, part_of, regulates, positively_regulates, negatively_regulates): child ->
    direct parents over the given relations (empty = all), unique, first-seen order.

    A file without a relation column: all edges. With a distance column only rows of distance 1 (direct
    edges) are kept. The three GO roots have no parents: when they appear only in the child column,
    the file's columns are labelled the wrong way round (the shared go_graph.tsv.gz is: its row
    "GO:0005575 GO:0016020 is_a" says membrane is_a cellular_component), so the columns are read
    swapped and a warning is logged. Bad header, or no edge of the given relations -> LabelSourceError.
    """
    wanted = set(relations)
    edges: list[tuple[str, str, str]] = []  # (child, parent, relation) of the direct edges, as labelled
    with _open_table(path, quoted_tsv=False) as (header, rows):
        columns = _find_columns(header)
        if "child" not in columns or "parent" not in columns:
            raise LabelSourceError(
                f"{path}: unrecognised term graph header {header}; expected columns child, parent "
                "(and optionally distance, relation)"
            )
        child_col, parent_col = columns["child"], columns["parent"]
        relation_col, distance_col = columns.get("relation"), columns.get("distance")
        for line, _, row in rows:
            if distance_col is not None and row[distance_col].strip() != "1":
                continue
            child, parent = row[child_col].strip(), row[parent_col].strip()
            if not child or not parent:
                raise LabelSourceError(f"{path} line {line}: empty child or parent term")
            edges.append((child, parent, row[relation_col].strip() if relation_col is not None else ""))
    # The orientation is judged on all edges, so that a filter without root edges cannot hide a swap.
    swapped = _columns_swapped(path, edges)
    parents = _OrderedLabels()
    for child, parent, relation in edges:
        if wanted and relation_col is not None and relation not in wanted:
            continue
        if swapped:
            child, parent = parent, child
        parents.add(child, [parent])
    result = parents.result()
    if not result and edges:
        present = list(dict.fromkeys(relation for _, _, relation in edges))
        raise LabelSourceError(
            f"{path}: no direct edge of the relations {sorted(wanted)}; relations in the file: {present}"
        )
    return result


def _columns_swapped(path: str, edges: list[tuple[str, str, str]]) -> bool:
    """Whether the child/parent columns are labelled the wrong way round: GO roots in the child column only."""
    roots_as_child = sorted({child for child, _, _ in edges if child in GO_ROOTS})
    if not roots_as_child:
        return False
    roots_as_parent = sorted({parent for _, parent, _ in edges if parent in GO_ROOTS})
    if roots_as_parent:
        raise LabelSourceError(
            f"{path}: the GO roots {roots_as_child} appear as children and {roots_as_parent} as parents; "
            "the child/parent columns are inconsistent"
        )
    example = next((child, parent) for child, parent, _ in edges if child in GO_ROOTS)
    logger.warning(
        "%s: the GO root %s appears in the 'child' column (row %s -> %s), so the columns hold parent, child "
        "despite the header; reading them swapped",
        path,
        example[0],
        *example,
    )
    return True


def ancestor_closure(parents: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """term -> all its ancestors (transitive, excluding itself) for every term of the graph (roots map to
    an empty set), computed once with memoisation by an iterative depth-first walk (no recursion limit).
    A cycle -> LabelSourceError naming the terms on it."""
    closure: dict[str, frozenset[str]] = {}
    terms = dict.fromkeys(itertools.chain(parents, (p for plist in parents.values() for p in plist)))
    for start in terms:
        if start in closure:
            continue
        # The walk's current path: (term, iterator over its parents); on_path gives each term's depth.
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(parents.get(start, ())))]
        on_path = {start: 0}
        while stack:
            term, pending = stack[-1]
            for parent in pending:
                if parent in closure:
                    continue
                if parent in on_path:
                    cycle = [t for t, _ in stack[on_path[parent] :]] + [parent]
                    raise LabelSourceError(f"the term graph has a cycle: {' -> '.join(cycle)}")
                on_path[parent] = len(stack)
                stack.append((parent, iter(parents.get(parent, ()))))
                break
            else:  # every parent is closed: close this term
                stack.pop()
                del on_path[term]
                ancestors: set[str] = set()
                for parent in parents.get(term, ()):
                    ancestors.add(parent)
                    ancestors |= closure[parent]
                closure[term] = frozenset(ancestors)
    return closure


def add_ancestors(labels: Mapping[str, Sequence[str]], ancestors: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    """Each label set plus the ancestors of its terms: the original labels first (deduplicated, in
    order), then the ancestors not among them, sorted. Labels unknown to ``ancestors`` add nothing."""
    result: dict[str, list[str]] = {}
    # Many sequences share a label set (51k distinct sets among the 142k of sp50_go): close each once.
    closed: dict[tuple[str, ...], list[str]] = {}
    for rid, terms in labels.items():
        own = tuple(dict.fromkeys(terms))
        extra = closed.get(own)
        if extra is None:
            union: set[str] = set()
            for term in own:
                term_ancestors = ancestors.get(term)
                if term_ancestors:
                    union.update(term_ancestors)
            union.difference_update(own)
            extra = closed[own] = sorted(union)
        result[rid] = [*own, *extra]
    return result


def term_namespaces_from_graph(ancestors: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """term -> ontology name (molecular_function, ...), from the GO root it descends from (a root maps to
    its own name). Terms under no GO root are absent. A term under several roots (possible only in a
    closure over cross-ontology relations such as regulates) -> LabelSourceError: build the closure used
    here from is_a and part_of edges."""
    namespaces: dict[str, str] = {}
    for term, term_ancestors in ancestors.items():
        roots = [root for root in GO_ROOTS if root == term or root in term_ancestors]
        if len(roots) > 1:
            raise LabelSourceError(
                f"term {term} descends from several GO roots {roots}; compute its namespace from a closure "
                "over is_a and part_of edges only"
            )
        if roots:
            namespaces[term] = GO_ROOTS[roots[0]]
    return namespaces
