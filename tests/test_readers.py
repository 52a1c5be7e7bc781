"""Source readers: every format yields the same records; malformed input names file and line."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest

from protlig_dd.data import readers
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.cache import prepare_cache
from protlig_dd.data.pipeline import EMBEDDED_TRAIN_FASTAS
from protlig_dd.data.readers import SourceError, SourceSpec, iter_batches, iter_records
from protlig_dd.data.sources import detect_format


@pytest.fixture(scope="module")
def real_records() -> list[tuple[str, str]]:
    """The first 50 real sequences of the embedded FASTA as (id, sequence)."""
    spec = SourceSpec(str(EMBEDDED_TRAIN_FASTAS["uniref50_17taxa"]))
    return [(r.id, r.sequence) for r in itertools.islice(iter_records(spec), 50)]


def _write_fasta(path, records, opener=open, width=60):
    with opener(path, "wt") as handle:
        for rid, seq in records:
            handle.write(f">{rid} n=1 Tax=Test TaxID=1 RepID={rid}\n")
            for i in range(0, len(seq), width):
                handle.write(seq[i : i + width] + "\n")


def _write_table(path, records, delimiter):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["name", "length", "sequence"])
        for rid, seq in records:
            writer.writerow([rid, len(seq), seq])


def _all_format_specs(tmp_path, records) -> dict[str, SourceSpec]:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_fasta(tmp_path / "s.fasta", records)
    _write_fasta(tmp_path / "s.fa.gz", records, opener=gzip.open, width=80)
    _write_table(tmp_path / "s.csv", records, ",")
    _write_table(tmp_path / "s.tsv", records, "\t")
    table = pa.table({"name": [r[0] for r in records], "sequence": [r[1] for r in records]})
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=7)  # several row groups
    with open(tmp_path / "s.jsonl", "w") as handle:
        for rid, seq in records:
            handle.write(json.dumps({"name": rid, "sequence": seq}) + "\n")
    datasets.Dataset.from_dict(
        {"name": [r[0] for r in records], "sequence": [r[1] for r in records]}
    ).save_to_disk(str(tmp_path / "hf_saved"))
    (tmp_path / "hf_files").mkdir()
    (tmp_path / "hf_files" / "part.jsonl").write_text((tmp_path / "s.jsonl").read_text())
    return {
        "fasta": SourceSpec(str(tmp_path / "s.fasta")),
        "fasta.gz": SourceSpec(str(tmp_path / "s.fa.gz")),
        "csv": SourceSpec(str(tmp_path / "s.csv"), id_column="name"),
        "tsv": SourceSpec(str(tmp_path / "s.tsv"), id_column="name"),
        "parquet": SourceSpec(str(tmp_path / "s.parquet"), id_column="name"),
        "jsonl": SourceSpec(str(tmp_path / "s.jsonl"), id_column="name"),
        "hf saved": SourceSpec(str(tmp_path / "hf_saved"), id_column="name"),
        "hf load_dataset streaming": SourceSpec(
            str(tmp_path / "hf_files"), format="hf", id_column="name", streaming=True
        ),
    }


def test_every_format_gives_identical_records_and_token_streams(tmp_path, real_records):
    """The same 50 real sequences written as FASTA, FASTA.gz, CSV, TSV, Parquet, JSONL and two HF
    sources read back as the same (id, sequence) records and prepare into identical token arrays."""
    specs = _all_format_specs(tmp_path, real_records)
    alphabet = Alphabet()
    expected_tokens = np.concatenate([alphabet.encode(seq) for _, seq in real_records])
    for name, spec in specs.items():
        got = [(r.id, r.sequence) for r in iter_records(spec)]
        assert got == real_records, name
        cache = prepare_cache([spec], tmp_path / "caches" / name.replace(" ", "_"), alphabet, progress=False)
        np.testing.assert_array_equal(np.asarray(cache.tokens), expected_tokens, err_msg=name)
        assert [cache.sequence_id(i) for i in range(len(cache))] == [r[0] for r in real_records], name


def test_fasta_block_boundaries_do_not_change_records_or_lines(tmp_path, real_records, monkeypatch):
    """Records cut across read blocks (tiny blocks here) parse exactly as with one big block,
    including the reported line numbers."""
    path = tmp_path / "s.fasta"
    _write_fasta(path, real_records, width=13)
    big = [(r.id, r.sequence, r.location) for r in iter_records(SourceSpec(str(path)))]
    monkeypatch.setattr(readers, "_FASTA_BLOCK_BYTES", 37)
    small = [(r.id, r.sequence, r.location) for r in iter_records(SourceSpec(str(path)))]
    assert small == big
    assert [(i, s) for i, s, _ in big] == real_records
    # The 3rd record's header line = 1 + lines of the first two records.
    lines_before = sum(1 + -(-len(seq) // 13) for _, seq in real_records[:2])
    assert big[2][2] == f"{path} line {lines_before + 1} (record 3)"


def test_fasta_cleaning_crlf_whitespace_stop_and_blank_lines(tmp_path):
    """Multi-line sequences are joined, CRLF/whitespace removed, one trailing '*' dropped, blank
    lines before the first header and between records ignored, the id is the first header word."""
    path = tmp_path / "x.fa"
    path.write_bytes(b"\n\n>UniRef50_P1 n=2 Tax=Homo\r\nAC DE\r\nfgh*\r\n\r\n>UniRef50_P2\nMK\n\nV\n")
    got = [(r.id, r.sequence) for r in iter_records(SourceSpec(str(path)))]
    assert got == [("UniRef50_P1", "ACDEfgh"), ("UniRef50_P2", "MKV")]


def test_default_id_is_record_number(tmp_path):
    """Without an id column the id is the 1-based record number (blank CSV lines are not records)."""
    path = tmp_path / "x.csv"
    path.write_text("sequence\nACD\n\nMKV\n")
    assert [(r.id, r.sequence) for r in iter_records(SourceSpec(str(path)))] == [("1", "ACD"), ("2", "MKV")]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty source"),
        (b"\n\n", "empty source"),
        (b"ACDE\n>x\nAC\n", "line 1: sequence line before any '>' header"),
        (b"\n\nACDE\n", "line 3: sequence line before any '>' header"),
        (b">a\nAC\n>b\n\n>c\nMK\n", "line 3: empty sequence for 'b'"),
        (b">a\nAC\n>\nMK\n", "line 3: FASTA header without an id"),
        (b">a\nAC\n>  \nMK\n", "line 3: FASTA header without an id"),
        (b">a\n*\n", "line 1: empty sequence for 'a'"),
    ],
)
def test_malformed_fasta_names_file_and_line(tmp_path, content, message):
    """Each malformed FASTA gives a SourceError naming the file and the offending line."""
    path = tmp_path / "bad.fasta"
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        list(iter_batches(SourceSpec(str(path))))
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_malformed_fasta_line_number_in_a_later_block(tmp_path, monkeypatch):
    """Line numbers stay right when the malformed record is several read blocks into the file."""
    path = tmp_path / "bad.fasta"
    good = "".join(f">s{i}\nACDEFGHIK\nLMNPQ\n" for i in range(40))
    path.write_text(good + ">broken\n\n>after\nAC\n")
    monkeypatch.setattr(readers, "_FASTA_BLOCK_BYTES", 50)
    with pytest.raises(SourceError, match=rf"{path} line 121: empty sequence for 'broken'"):
        list(iter_batches(SourceSpec(str(path))))


def test_gzip_detected_by_content(tmp_path, real_records):
    """A gzipped file is decompressed whatever its name; a .gz FASTA equals the plain one."""
    _write_fasta(tmp_path / "a.fasta.gz", real_records[:5], opener=gzip.open)
    _write_fasta(tmp_path / "b.fasta", real_records[:5])
    a = [(r.id, r.sequence) for r in iter_records(SourceSpec(str(tmp_path / "a.fasta.gz")))]
    b = [(r.id, r.sequence) for r in iter_records(SourceSpec(str(tmp_path / "b.fasta")))]
    assert a == b == real_records[:5]


def test_missing_file_and_undetectable_format(tmp_path):
    """A missing file, an unknown extension and an unknown explicit format are SourceErrors naming
    the path."""
    with pytest.raises(SourceError, match="nope.fasta: file not found"):
        list(iter_batches(SourceSpec(str(tmp_path / "nope.fasta"))))
    with pytest.raises(SourceError, match="set the format to 'hf'"):
        detect_format(str(tmp_path / "owner_dataset"))
    (tmp_path / "x.txt").write_text("ACD\n")
    with pytest.raises(SourceError, match="x.txt: cannot detect the format"):
        detect_format(str(tmp_path / "x.txt"))
    with pytest.raises(SourceError, match="unknown format 'xml'"):
        SourceSpec(str(tmp_path / "x.txt"), format="xml").resolved_format()
    assert detect_format(str(tmp_path)) == "hf"
    (tmp_path / "y.FAA.gz").write_bytes(b"")
    assert detect_format(str(tmp_path / "y.FAA.gz")) == "fasta"


def test_unknown_columns_name_file_and_available_columns(tmp_path, real_records):
    """A sequence or id column absent from a CSV/TSV/Parquet/JSONL/HF source is a SourceError listing
    the available columns."""
    specs = _all_format_specs(tmp_path, real_records[:3])
    for name in ("csv", "tsv", "parquet", "jsonl", "hf saved"):
        spec = specs[name]
        for kwargs in ({"sequence_column": "seq"}, {"id_column": "accession"}):
            bad = SourceSpec(spec.path, **{"id_column": spec.id_column, **kwargs})
            with pytest.raises(SourceError) as err:
                list(iter_batches(bad))
            text = str(err.value)
            assert spec.path in text and "not found" in text and "'sequence'" in text, (name, text)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", "id,sequence\nx,ACD\ny\n", "line 3 (record 2): 1 fields, the header has 2"),
        ("a.csv", "id,sequence\nx,ACD\ny,  \n", "line 3 (record 2): empty sequence"),
        ("a.csv", "id,sequence\nx,ACD\n,MKV\n", "line 3 (record 2): empty id"),
        ("a.csv", "", "empty source (no header row)"),
        ("a.csv", "id,sequence\n", "empty source"),
        ("a.tsv", "id\tsequence\nx\tAC\ty\n", "line 2 (record 1): 3 fields"),
        ("a.jsonl", '{"id": "x", "sequence": "AC"}\n{"id": "y"\n', "line 2 (record 2): invalid JSON"),
        ("a.jsonl", '{"id": "x", "sequence": "AC"}\n["y"]\n', "line 2 (record 2): expected a JSON object"),
        (
            "a.jsonl",
            '{"id": "x", "sequence": "AC"}\n\n{"id": "y", "sequence": null}\n',
            "line 3 (record 2): missing",
        ),
        ("a.json", '[{"id": "x", "sequence": "AC"}]\n', "line 1: a JSON array is not supported"),
        ("a.jsonl", '{"id": "x", "sequence": 5}\n', "holds int, expected text"),
    ],
)
def test_malformed_tabular_names_file_and_line(tmp_path, name, content, message):
    """Malformed CSV/TSV/JSONL rows give a SourceError naming the file, line and record."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SourceError) as err:
        list(iter_batches(SourceSpec(str(path), id_column="id")))
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_parquet_null_names_record(tmp_path):
    """A null sequence in Parquet names the record number (Parquet has no lines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sequence": ["AC", None]}), tmp_path / "n.parquet")
    with pytest.raises(SourceError, match=r"n.parquet record 2: missing value in column 'sequence'"):
        list(iter_batches(SourceSpec(str(tmp_path / "n.parquet"))))


def test_hf_dataset_dict_split_selection(tmp_path):
    """A saved DatasetDict is read through hf_split; a missing split lists the available ones."""
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"sequence": ["ACD", "MKV"]}),
            "validation": datasets.Dataset.from_dict({"sequence": ["WWW"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    got = [r.sequence for r in iter_records(SourceSpec(str(tmp_path / "dd"), hf_split="validation"))]
    assert got == ["WWW"]
    with pytest.raises(SourceError, match=r"split 'test' not found; available: \['train', 'validation'\]"):
        list(iter_batches(SourceSpec(str(tmp_path / "dd"), hf_split="test")))


def test_batches_are_bounded(tmp_path, monkeypatch):
    """Record-at-a-time readers flush batches at the residue budget instead of collecting the file."""
    monkeypatch.setattr(readers, "_BATCH_RESIDUES", 10)
    path = tmp_path / "a.csv"
    path.write_text("sequence\n" + "ACDEF\n" * 9)
    batches = list(iter_batches(SourceSpec(str(path))))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 1]
    assert [b.first_record for b in batches] == [1, 3, 5, 7, 9]
    assert batches[-1].location(0) == f"{path} line 10 (record 9)"
