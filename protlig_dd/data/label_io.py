"""Shared plumbing of the label readers (label_sources.py, label_tables.py, term_graph.py).

The one error type, ``LabelSourceError``: every error of a label reader is one line naming the file
and the line, record or column. And the helpers every reader needs: turning open/decode errors into
that error (``_reading``), opening a delimited table with a header row (``_open_table``, with the
record numbering of readers.py), case-insensitive header lookup, splitting ';'-lists of labels and
collecting ``id -> labels`` (unique, first-seen order). Knows nothing of label source kinds, GO or
term graphs.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from protlig_dd.data.readers import delimited_rows
from protlig_dd.data.sources import SourceError, open_binary


class LabelSourceError(ValueError):
    """A label source is missing, malformed or unusable; the message is one line naming the file and the
    line/record/column."""


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

        yield header, delimited_rows(reader, path, len(header))


def _find_columns(header: list[str]) -> dict[str, int]:
    """Lower-cased column name -> index (first occurrence), for case-insensitive header matching."""
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(name.lower(), i)
    return index
