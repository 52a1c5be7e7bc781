"""Label sources: FASTA header fields, source columns, label tables and the GO term graph.

All files here are small synthetic ones written by the tests (made-up ids and terms shaped like the
real ones), except the last test, which reads the shared Swiss-Prot 2014 GO files when present.
"""

from __future__ import annotations

import collections
import gzip
import json
import logging
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from protlig_dd.data import label_sources
from protlig_dd.data.label_sources import (
    LabelSource,
    LabelSourceError,
    parse_label_source,
    read_column_labels,
    read_header_labels,
)
from protlig_dd.data.label_tables import read_label_table
from protlig_dd.data.readers import iter_records
from protlig_dd.data.sources import SourceSpec
from protlig_dd.data.term_graph import (
    GO_ROOTS,
    add_ancestors,
    ancestor_closure,
    read_term_parents,
    term_namespaces_from_graph,
)

SHARED_GO = Path(__file__).resolve().parents[2] / "shared" / "data" / "swissprot50_2014"
MF, BP, CC = "molecular_function", "biological_process", "cellular_component"


def _write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, gzip-compressed when the name ends in .gz."""
    data = text.encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


# ------------------------------------------------------------------------------- parse_label_source


def test_parse_label_source_kinds_and_errors() -> None:
    """header:KEY and column:NAME are recognised (spaces trimmed); anything else is a table path; empty
    text and a prefix without a name are errors."""
    assert parse_label_source("header:TaxID") == LabelSource("header", "TaxID")
    assert parse_label_source(" column: go_terms ") == LabelSource("column", "go_terms")
    assert parse_label_source("data/sp50_go.tsv.gz") == LabelSource("table", "data/sp50_go.tsv.gz")
    for bad in ("", "   ", "header:", "column:  "):
        with pytest.raises(LabelSourceError):
            parse_label_source(bad)


# ------------------------------------------------------------------------------------ FASTA headers

# Synthetic UniRef-style headers: values with spaces, a ';'-list, a header without the keys, a
# duplicated id, CRLF line ends and multi-line sequences.
SYNTHETIC_FASTA = (
    ">UniRef50_Q6GZX4 Putative transcription factor 001R n=2 Tax=Frog virus 3 TaxID=654924 RepID=001R_FRG3G\n"
    "MAFSAEDVLK\nEYDRRRRMEA\n"
    ">UniRef50_SYN2 Synthetic protein n=1 Tax=Homo sapiens TaxID=9606 GO=GO:0000001; GO:0000002 ;GO:0000003\r\n"
    "MKV\r\n"
    ">SYN3 no fields at all\n"
    "MKL\n"
    ">UniRef50_SYN2 duplicate id GO=GO:0000004;GO:0000001 TaxID=10090\n"
    "MKW\n"
    ">SYN5\n"
    "MKY\n"
)


@pytest.mark.parametrize("name", ["s.fasta", "s.fa.gz"])
def test_header_labels_values_with_spaces_lists_and_duplicates(tmp_path: Path, name: str) -> None:
    """A value runs to the next ' word=' (spaces kept), ';'-lists are split and stripped, headers without
    the key give no entry, a duplicated id merges labels in first-seen order; plain and gzip alike."""
    path = _write(tmp_path / name, SYNTHETIC_FASTA)
    assert read_header_labels(str(path), "Tax") == {
        "UniRef50_Q6GZX4": ["Frog virus 3"],
        "UniRef50_SYN2": ["Homo sapiens"],
    }
    assert read_header_labels(str(path), "TaxID") == {"UniRef50_Q6GZX4": ["654924"], "UniRef50_SYN2": ["9606", "10090"]}
    assert read_header_labels(str(path), "GO") == {
        "UniRef50_SYN2": ["GO:0000001", "GO:0000002", "GO:0000003", "GO:0000004"]
    }
    assert read_header_labels(str(path), "RepID") == {"UniRef50_Q6GZX4": ["001R_FRG3G"]}
    # The ids are the ones the sequence reader puts in the cache.
    reader_ids = {r.id for r in iter_records(SourceSpec(str(path)))}
    assert set(read_header_labels(str(path), "n")) <= reader_ids


def test_header_labels_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers cut by a read-block boundary are found whole, with the right line numbers."""
    path = _write(tmp_path / "s.fasta", SYNTHETIC_FASTA * 3)
    expected = read_header_labels(str(path), "TaxID")
    for block in (1, 7, 64):
        monkeypatch.setattr(label_sources, "_FASTA_BLOCK_BYTES", block)
        assert read_header_labels(str(path), "TaxID") == expected
        lines = [line for line, _ in label_sources._fasta_headers(str(path))]
        assert lines == [i + 1 for i, text in enumerate((SYNTHETIC_FASTA * 3).split("\n")) if text.startswith(">")]


def test_header_label_errors_name_file_and_line(tmp_path: Path) -> None:
    """A key no header has, a header without an id, a truncated gzip and a missing file are one-line
    LabelSourceErrors naming the file (and line, or the keys that exist)."""
    path = _write(tmp_path / "s.fasta", SYNTHETIC_FASTA)
    with pytest.raises(LabelSourceError, match=r"s\.fasta: no header has .*taxid.*'TaxID'"):
        read_header_labels(str(path), "taxid")
    bad = _write(tmp_path / "bad.fasta", ">A TaxID=1\nMK\n>\nMK\n")
    with pytest.raises(LabelSourceError, match=r"bad\.fasta line 3: FASTA header without an id"):
        read_header_labels(str(bad), "TaxID")
    cut = tmp_path / "cut.fasta.gz"
    cut.write_bytes(gzip.compress(SYNTHETIC_FASTA.encode() * 50)[:-30])
    with pytest.raises(LabelSourceError, match=r"cut\.fasta\.gz: truncated gzip"):
        read_header_labels(str(cut), "TaxID")
    with pytest.raises(LabelSourceError, match="file not found"):
        read_header_labels(str(tmp_path / "absent.fasta"), "TaxID")


# ------------------------------------------------------------------------------- source columns

# (name, sequence, labels cell) of a synthetic sequence source; empty cells give no labels.
ROWS = [
    ("P1", "MKV", "GO:0000001;GO:0000002"),
    ("P2", "MKL", ""),
    ("P3", "MKW", "GO:0000003"),
    ("P1", "MKY", "GO:0000004; GO:0000001"),
]
EXPECTED_BY_NAME = {"P1": ["GO:0000001", "GO:0000002", "GO:0000004"], "P3": ["GO:0000003"]}


def _write_sources(tmp_path: Path) -> dict[str, Path]:
    """The ROWS as CSV (with a blank line), TSV.gz, JSONL (a blank line, an omitted key) and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {}
    for name, delimiter in (("s.csv", ","), ("s.tsv.gz", "\t")):
        lines = [delimiter.join(("name", "sequence", "go"))] + [delimiter.join(row) for row in ROWS]
        lines.insert(2, "")  # a blank line: skipped, not a record, by the reader and by us
        paths[name] = _write(tmp_path / name, "\n".join(lines) + "\n")
    records = [{"name": n, "sequence": s, **({"go": g} if g else {})} for n, s, g in ROWS]
    paths["s.jsonl"] = _write(tmp_path / "s.jsonl", "\n\n".join(json.dumps(r) for r in records) + "\n")
    table = pa.table(
        {
            "name": [r[0] for r in ROWS],
            "sequence": [r[1] for r in ROWS],
            "go": [g.split(";") if g else None for _, _, g in ROWS],  # a list column with a null
        }
    )
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=2)
    paths["s.parquet"] = tmp_path / "s.parquet"
    return paths


def test_column_labels_every_format_with_and_without_id_column(tmp_path: Path) -> None:
    """CSV, TSV.gz, JSONL and Parquet give the same labels; without an id column the ids are the record
    numbers, equal to the ids readers.iter_records yields for the same file (blank lines skipped)."""
    for name, path in _write_sources(tmp_path).items():
        assert read_column_labels(SourceSpec(str(path), id_column="name"), "go") == EXPECTED_BY_NAME, name
        spec = SourceSpec(str(path))
        by_record = read_column_labels(spec, "go")
        reader_ids = [r.id for r in iter_records(spec)]
        assert reader_ids == ["1", "2", "3", "4"], name
        assert by_record == {
            reader_ids[0]: ["GO:0000001", "GO:0000002"],
            reader_ids[2]: ["GO:0000003"],
            reader_ids[3]: ["GO:0000004", "GO:0000001"],
        }, name


def test_column_labels_from_a_saved_hf_dataset(tmp_path: Path) -> None:
    """A datasets directory (save_to_disk) is read like Parquet, ids from the column or record number."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"name": [r[0] for r in ROWS], "sequence": [r[1] for r in ROWS], "go": [r[2] for r in ROWS]}
    )
    ds.save_to_disk(str(tmp_path / "hf"))
    assert read_column_labels(SourceSpec(str(tmp_path / "hf"), id_column="name"), "go") == EXPECTED_BY_NAME
    spec = SourceSpec(str(tmp_path / "hf"))
    assert set(read_column_labels(spec, "go")) == {r.id for r in iter_records(spec)} - {"2"}


def test_column_label_errors(tmp_path: Path) -> None:
    """A missing label column names the file, the column and the columns that exist (CSV, Parquet and a
    JSONL key no record has); a FASTA spec points to header:KEY."""
    paths = _write_sources(tmp_path)
    with pytest.raises(
        LabelSourceError, match=r"s\.csv line 1: label column 'GO' not found; .*\['name', 'sequence', 'go'\]"
    ):
        read_column_labels(SourceSpec(str(paths["s.csv"])), "GO")
    with pytest.raises(LabelSourceError, match=r"s\.parquet: label column 'ec' not found; .*'go'"):
        read_column_labels(SourceSpec(str(paths["s.parquet"])), "ec")
    with pytest.raises(LabelSourceError, match=r"s\.jsonl \(all 4 records\): label column 'ec' not found"):
        read_column_labels(SourceSpec(str(paths["s.jsonl"])), "ec")
    with pytest.raises(LabelSourceError, match=r"s\.csv line 1: id column 'acc' not found"):
        read_column_labels(SourceSpec(str(paths["s.csv"]), id_column="acc"), "go")
    fasta = _write(tmp_path / "s.fasta", SYNTHETIC_FASTA)
    with pytest.raises(LabelSourceError, match=r"s\.fasta: .*header:KEY"):
        read_column_labels(SourceSpec(str(fasta)), "go")


# --------------------------------------------------------------------------------------- label tables

# Synthetic tables in the shape of the shared sp50_go.tsv.gz and of a UniProtKB TSV download.
SIMPLE_TABLE = (
    "accession\tontology\tgo_terms\n"
    "P1\tmolecular_function\tGO:0000011;GO:0000012\n"
    "P2\tbiological_process\tGO:0000021\n"
    "P1\tcellular_component\tGO:0000031\n"
    "P1\tbiological_process\tGO:0000021;GO:0000011\n"
)
UNIPROT_TABLE = (
    "Entry\tEntry Name\tProtein names\tGene Ontology IDs\tGene Ontology (molecular function)\t"
    "Gene Ontology (biological process)\tGene Ontology (cellular component)\tLength\n"
    'P1\tSYN1_HUMAN\tSynthetic "kinase" 1\tGO:0000011; GO:0000021; GO:0000031\t'
    "ATP binding [GO:0000011]\tphosphorylation [GO:0000021]\tnucleus [GO:0000031]\t120\n"
    "P2\tSYN2_HUMAN\t[2Fe-2S] protein\tGO:0000012\t[2Fe-2S] cluster binding [GO:0000012]\t\t\t80\n"
    "P3\tSYN3_HUMAN\tUncharacterized\t\t\t\t\t50\n"
)
NAMESPACES = {"GO:0000011": MF, "GO:0000012": MF, "GO:0000021": BP, "GO:0000031": CC}


def _uniprot(tmp_path: Path, columns: list[str], name: str = "uniprot.tsv") -> Path:
    """UNIPROT_TABLE restricted to ``columns`` (plus Entry)."""
    rows = [line.split("\t") for line in UNIPROT_TABLE.splitlines()]
    keep = [i for i, h in enumerate(rows[0]) if h in ("Entry", *columns)]
    return _write(tmp_path / name, "".join("\t".join(row[i] for i in keep) + "\n" for row in rows))


def test_simple_table_merges_rows_and_filters_by_ontology(tmp_path: Path) -> None:
    """Rows of one accession merge (unique, first-seen order); ontologies filter by the ontology column;
    a gzipped CSV with a sniffed delimiter (unknown extension) reads the same."""
    path = _write(tmp_path / "go.tsv.gz", SIMPLE_TABLE)
    every = {"P1": ["GO:0000011", "GO:0000012", "GO:0000031", "GO:0000021"], "P2": ["GO:0000021"]}
    assert read_label_table(str(path)) == every
    assert read_label_table(str(path), [MF, BP, CC]) == every
    assert read_label_table(str(path), [BP]) == {"P2": ["GO:0000021"], "P1": ["GO:0000021", "GO:0000011"]}
    assert read_label_table(str(path), [CC, MF]) == {"P1": ["GO:0000011", "GO:0000012", "GO:0000031"]}
    as_csv = _write(tmp_path / "go.txt.gz", SIMPLE_TABLE.replace("\t", ","))
    assert read_label_table(str(as_csv)) == every


def test_two_column_table_and_namespace_filtering(tmp_path: Path) -> None:
    """The id + labels form reads ';'-lists; filtering it by ontology needs term namespaces (an error
    says so without them) and drops terms of other or unknown ontologies."""
    path = _write(tmp_path / "labels.csv", "id,labels\nP1,GO:0000011; GO:0000021;GO:9999999\nP2,\nP3,GO:0000031\n")
    assert read_label_table(str(path)) == {"P1": ["GO:0000011", "GO:0000021", "GO:9999999"], "P3": ["GO:0000031"]}
    assert read_label_table(str(path), [MF, CC], NAMESPACES) == {"P1": ["GO:0000011"], "P3": ["GO:0000031"]}
    with pytest.raises(LabelSourceError, match=r"labels\.csv: filtering by ontology .* needs a term graph"):
        read_label_table(str(path), [MF])


def test_uniprot_table_brackets_and_ontology_columns(tmp_path: Path) -> None:
    """A UniProt download: ids in brackets are taken from the per-ontology columns (not other bracketed
    text), Gene Ontology IDs are '; '-split, other columns ignored, entries without terms absent; the
    ontology filter uses the per-ontology columns when present."""
    path = _write(tmp_path / "uniprot.tsv.gz", UNIPROT_TABLE)
    assert read_label_table(str(path)) == {"P1": ["GO:0000011", "GO:0000021", "GO:0000031"], "P2": ["GO:0000012"]}
    assert read_label_table(str(path), [MF]) == {"P1": ["GO:0000011"], "P2": ["GO:0000012"]}
    assert read_label_table(str(path), [BP, CC]) == {"P1": ["GO:0000021", "GO:0000031"]}
    only_cc = _uniprot(tmp_path, ["Gene Ontology (cellular component)", "Length"])
    assert read_label_table(str(only_cc)) == {"P1": ["GO:0000031"]}
    with pytest.raises(LabelSourceError, match=r"uniprot\.tsv: no column for ontology \['molecular_function'\]"):
        read_label_table(str(only_cc), [MF])


def test_uniprot_ids_only_needs_namespaces_to_filter(tmp_path: Path) -> None:
    """With only 'Gene Ontology IDs', an ontology filter uses term_namespaces, and without them is an
    error saying a term graph is needed; a per-ontology column present is used for its own ontology."""
    ids_only = _uniprot(tmp_path, ["Gene Ontology IDs", "Protein names"])
    assert read_label_table(str(ids_only)) == {"P1": ["GO:0000011", "GO:0000021", "GO:0000031"], "P2": ["GO:0000012"]}
    assert read_label_table(str(ids_only), [MF], NAMESPACES) == {"P1": ["GO:0000011"], "P2": ["GO:0000012"]}
    with pytest.raises(LabelSourceError, match=r"uniprot\.tsv: filtering by ontology .* needs a term graph"):
        read_label_table(str(ids_only), [MF])
    mixed = _uniprot(tmp_path, ["Gene Ontology IDs", "Gene Ontology (cellular component)"], "mixed.tsv")
    assert read_label_table(str(mixed), [CC]) == {"P1": ["GO:0000031"]}  # no graph needed for CC
    assert read_label_table(str(mixed), [CC, BP], NAMESPACES) == {"P1": ["GO:0000021", "GO:0000031"]}


def test_label_table_errors_name_the_file(tmp_path: Path) -> None:
    """An unknown header lists the columns found and those expected; an unknown ontology name (argument
    or row) lists the valid ones; a ragged row names its line; an empty table is an error."""
    bad = _write(tmp_path / "bad.tsv", "protein\tterms\nP1\tGO:0000011\n")
    with pytest.raises(
        LabelSourceError, match=r"bad\.tsv: unrecognised .*\['protein', 'terms'\].*accession, ontology, go_terms"
    ):
        read_label_table(str(bad))
    simple = _write(tmp_path / "go.tsv", SIMPLE_TABLE)
    with pytest.raises(LabelSourceError, match=r"go\.tsv: unknown ontology 'MFO'; valid .*molecular_function"):
        read_label_table(str(simple), ["MFO"])
    bad_row = _write(tmp_path / "row.tsv", SIMPLE_TABLE + "P9\tfunction\tGO:1\n")
    with pytest.raises(LabelSourceError, match=r"row\.tsv line 6: unknown ontology 'function'"):
        read_label_table(str(bad_row))
    ragged = _write(tmp_path / "ragged.tsv", SIMPLE_TABLE + "P9\tmolecular_function\n")
    with pytest.raises(LabelSourceError, match=r"ragged\.tsv line 6 \(record 5\): 2 fields"):
        read_label_table(str(ragged))
    with pytest.raises(LabelSourceError, match=r"empty\.tsv: no rows"):
        read_label_table(str(_write(tmp_path / "empty.tsv", "accession\tontology\tgo_terms\n")))


# ------------------------------------------------------------------------------------------ term graph

# A synthetic GO-shaped graph (child, parent, distance, relation):
#   MF root <- A <- B (is_a), B <- C (part_of), C <- D (regulates), A <- E (is_a), CC root <- F
GRAPH_EDGES = [
    ("GO:000000A", "GO:0003674", "is_a"),
    ("GO:000000B", "GO:000000A", "is_a"),
    ("GO:000000C", "GO:000000B", "part_of"),
    ("GO:000000D", "GO:000000C", "regulates"),
    ("GO:000000E", "GO:000000A", "is_a"),
    ("GO:000000C", "GO:000000E", "is_a"),
    ("GO:000000F", "GO:0005575", "is_a"),
]


def _graph_file(tmp_path: Path, swapped: bool = False, name: str = "graph.tsv") -> Path:
    """GRAPH_EDGES as a go_graph.tsv-style table (swapped: parent in the 'child' column, as the shared file)."""
    rows = [(p, c) if swapped else (c, p) for c, p, _ in GRAPH_EDGES]
    body = "".join(f"{a}\t{b}\t1\t{rel}\n" for (a, b), (_, _, rel) in zip(rows, GRAPH_EDGES, strict=True))
    return _write(tmp_path / name, "child\tparent\tdistance\trelation\n" + body + "GO:000000B\tGO:0003674\t2\tis_a\n")


def test_term_parents_by_relation(tmp_path: Path) -> None:
    """Parents over the given relations only (default is_a + part_of, empty = all), distance > 1 rows
    skipped; without a relation column all edges count; a bad header or no matching edge is an error."""
    path = _graph_file(tmp_path)
    default = read_term_parents(str(path))
    assert default["GO:000000C"] == ["GO:000000B", "GO:000000E"] and "GO:000000D" not in default
    assert default["GO:000000B"] == ["GO:000000A"]  # the distance-2 row is not a direct edge
    assert read_term_parents(str(path), ["is_a"])["GO:000000C"] == ["GO:000000E"]
    assert read_term_parents(str(path), ())["GO:000000D"] == ["GO:000000C"]
    plain = _write(tmp_path / "plain.csv", "child,parent\nX2,X1\nX3,X2\nX3,X1\n")
    assert read_term_parents(str(plain)) == {"X2": ["X1"], "X3": ["X2", "X1"]}
    with pytest.raises(LabelSourceError, match=r"bad\.tsv: unrecognised term graph header \['from', 'to'\]"):
        read_term_parents(str(_write(tmp_path / "bad.tsv", "from\tto\nX2\tX1\n")))
    with pytest.raises(LabelSourceError, match=r"graph\.tsv: no direct edge of the relations \['has_part'\].*'is_a'"):
        read_term_parents(str(path), ["has_part"])


def test_term_parents_swapped_columns_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file whose GO roots sit in the 'child' column (the shared go_graph.tsv.gz) is read swapped, with
    a warning naming the file: the result equals that of the correctly labelled file, whatever the
    relation filter; roots on both sides are an error."""
    right = read_term_parents(str(_graph_file(tmp_path)), ())
    with caplog.at_level(logging.WARNING, logger="protlig_dd.data.term_graph"):
        swapped = read_term_parents(str(_graph_file(tmp_path, swapped=True, name="swapped.tsv")), ())
    assert {k: sorted(v) for k, v in swapped.items()} == {k: sorted(v) for k, v in right.items()}
    # A relation filter that keeps no root edge does not hide the swap.
    swapped_part_of = read_term_parents(str(tmp_path / "swapped.tsv"), ["part_of"])
    assert swapped_part_of == {"GO:000000C": ["GO:000000B"]}
    inconsistent = _write(tmp_path / "mixed.tsv", "child\tparent\nGO:0003674\tGO:1\nGO:2\tGO:0008150\n")
    with pytest.raises(LabelSourceError, match=r"mixed\.tsv: the GO roots .* inconsistent"):
        read_term_parents(str(inconsistent))
    assert "swapped.tsv" in caplog.text and "swapped" in caplog.text


def _brute_force_ancestors(parents: dict[str, list[str]], term: str) -> set[str]:
    """Breadth-first search up the graph: the definition the closure must agree with."""
    seen: set[str] = set()
    queue = collections.deque(parents.get(term, []))
    while queue:
        parent = queue.popleft()
        if parent not in seen:
            seen.add(parent)
            queue.extend(parents.get(parent, []))
    return seen


def test_ancestor_closure_matches_brute_force_and_survives_depth() -> None:
    """The memoised closure equals a BFS per term on random DAGs (every term present, roots empty), and a
    3,000-deep chain works (iterative, no recursion limit)."""
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 60)
        terms = [f"T{i}" for i in range(n)]
        parents: dict[str, list[str]] = {}
        for i in range(1, n):  # edges only to lower indices: acyclic by construction
            chosen = rng.sample(range(i), k=min(i, rng.randint(0, 3)))
            if chosen:
                parents[terms[i]] = [terms[j] for j in chosen]
        closure = ancestor_closure(parents)
        assert set(closure) == set(parents) | {p for plist in parents.values() for p in plist}
        for term in closure:
            assert closure[term] == _brute_force_ancestors(parents, term)
    chain = {f"C{i}": [f"C{i - 1}"] for i in range(1, 3_001)}  # 3x the default recursion limit
    assert len(ancestor_closure(chain)["C3000"]) == 3_000


def test_ancestor_closure_cycle_is_an_error() -> None:
    """A cycle (including a self-loop) is a LabelSourceError naming the terms on it."""
    with pytest.raises(
        LabelSourceError, match=r"cycle: (X2 -> X3 -> X4 -> X2|X3 -> X4 -> X2 -> X3|X4 -> X2 -> X3 -> X4)"
    ):
        ancestor_closure({"X1": ["X2"], "X2": ["X3"], "X3": ["X4"], "X4": ["X2"]})
    with pytest.raises(LabelSourceError, match="cycle: S -> S"):
        ancestor_closure({"S": ["S"]})


def test_add_ancestors_and_namespaces(tmp_path: Path) -> None:
    """add_ancestors keeps the labels (deduplicated, in order) then appends the missing ancestors sorted;
    namespaces follow the GO root a term descends from, roots map to their own name, and a term under
    two roots is an error."""
    closure = ancestor_closure(read_term_parents(str(_graph_file(tmp_path))))
    labels = {"P1": ["GO:000000C", "GO:000000A", "GO:000000C"], "P2": ["GO:000000F", "unknown"], "P3": []}
    assert add_ancestors(labels, closure) == {
        "P1": ["GO:000000C", "GO:000000A", "GO:000000B", "GO:000000E", "GO:0003674"],
        "P2": ["GO:000000F", "unknown", "GO:0005575"],
        "P3": [],
    }
    namespaces = term_namespaces_from_graph(closure)
    assert namespaces == {
        **{t: MF for t in ("GO:000000A", "GO:000000B", "GO:000000C", "GO:000000E", "GO:0003674")},
        "GO:000000F": CC,
        "GO:0005575": CC,
    }
    assert {GO_ROOTS[root] for root in GO_ROOTS} == {MF, BP, CC}
    with pytest.raises(LabelSourceError, match=r"GO:000000X descends from several GO roots"):
        term_namespaces_from_graph(ancestor_closure({"GO:000000X": ["GO:0003674", "GO:0008150"]}))


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.skipif(not SHARED_GO.is_dir(), reason=f"shared GO files not found at {SHARED_GO}")
def test_shared_swissprot_go_files() -> None:
    """The shared sp50_go.tsv.gz: 108,710 accessions with a cellular_component row (PROVENANCE.md); the
    shared go_graph.tsv.gz (columns swapped, see read_term_parents): GO:0016021 'integral component of
    membrane' descends from the CC root, and every CC term of the table gets the CC namespace."""
    cc = read_label_table(str(SHARED_GO / "sp50_go.tsv.gz"), [CC])
    assert len(cc) == 108_710
    closure = ancestor_closure(read_term_parents(str(SHARED_GO / "go_graph.tsv.gz")))
    assert "GO:0005575" in closure["GO:0016021"]
    assert {"GO:0016020", "GO:0031224"} <= closure["GO:0016021"]  # membrane, intrinsic component of membrane
    assert not closure["GO:0005575"]
    namespaces = term_namespaces_from_graph(closure)
    assert {namespaces.get(term) for terms in cc.values() for term in terms} == {CC}
