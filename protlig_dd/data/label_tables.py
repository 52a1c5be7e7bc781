"""Label tables: a separate file of GO terms keyed by sequence id (the ``PATH`` label source).

``read_label_table`` reads two formats, detected from the header row: a simple TSV/CSV
(``accession, ontology, go_terms`` as the shared sp50_go.tsv.gz, or ``id`` + ``labels``) and a
UniProtKB "Download TSV" (``Entry`` plus ``Gene Ontology IDs`` / ``Gene Ontology (...)`` columns).
Terms can be kept for some ``ONTOLOGIES`` only, by the file's own ontology columns or by term
namespaces from the term graph (term_graph.py). Errors are one-line ``LabelSourceError``s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from protlig_dd.data.label_io import LabelSourceError, _find_columns, _open_table, _OrderedLabels, _split_labels

ONTOLOGIES = ("molecular_function", "biological_process", "cellular_component")
# Columns of a UniProtKB "Download TSV": all terms as ids, or one ontology as "name [GO:id]" items.
_UNIPROT_ID_COLUMN = "entry"
_UNIPROT_ALL_TERMS = "gene ontology ids"
_UNIPROT_ONTOLOGY_COLUMNS = {
    "gene ontology (molecular function)": "molecular_function",
    "gene ontology (biological process)": "biological_process",
    "gene ontology (cellular component)": "cellular_component",
}
_BRACKETED_TERM = re.compile(r"\[(GO:\d+)\]")


def _keep_all(terms: list[str]) -> list[str]:
    return terms


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
