"""The embedded data: files unchanged, documented counts, the default training set when no source is set."""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from protlig_dd.config import DataConfig
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.pipeline import (
    EMBEDDED_COMPOSITION_REFERENCE,
    EMBEDDED_DIR,
    EMBEDDED_TRAIN_COUNTS,
    EMBEDDED_VALIDATION_COUNT,
    prepare_splits,
)

ALPHABET = Alphabet()
# SHA-256 of the shipped files, equal to those of the shared data they were copied from.
SHA256 = {
    "swissprot50_train.fasta.gz": "feab4a1ce562dbd9c6b7116b9077ab4f340a35d79cdd64cc62283a8fc3c7b340",
    "uniref50_train_filt.fasta.gz": "3efb69cf76cfbfc08b3ac45cca06f729ffaba1d095d7b43593b698bc155f8ce8",
    "x000.csv": "1fe594bc1d212cc2bd9e1fa9123fd9254dc7ca57604e8210a1c8c5c65267e204",
    "x001.csv": "df9e627a16152e9507e307d7db2ea07c0ef78be6cfd79b72daa6e99ad2f6e1d2",
    "uniref50_aa_ref_test.csv": "225620cad646c368148c83663953bc8f38f7b7f11500a6982666dd0842c60dc8",
}


SHARED_SWISSPROT = Path(__file__).resolve().parents[2] / "shared" / "data" / "swissprot50_2014" / "sp50_reps.fasta.gz"


@pytest.fixture(scope="module")
def default_splits(tmp_path_factory):
    return prepare_splits(DataConfig(), ALPHABET, tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def uniref50_17taxa_splits(tmp_path_factory):
    cfg = DataConfig(embedded_train="uniref50_17taxa")
    return prepare_splits(cfg, ALPHABET, tmp_path_factory.mktemp("cache"), progress=False)


def _read_fasta(path: Path) -> dict[str, str]:
    records: dict[str, list[str]] = {}
    name = ""
    with gzip.open(path, "rt") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                name = line[1:].split()[0]
                records[name] = []
            elif line:
                records[name].append(line)
    return {k: "".join(v) for k, v in records.items()}


def test_files_are_byte_identical_copies():
    """Every embedded data file has the SHA-256 recorded in PROVENANCE.md (no edits, no invented data)."""
    provenance = (EMBEDDED_DIR / "PROVENANCE.md").read_text()
    for name, digest in SHA256.items():
        assert hashlib.sha256((EMBEDDED_DIR / name).read_bytes()).hexdigest() == digest, name
        assert digest in provenance, name


def test_license_notes_present():
    """The license notes name UniProt's CC BY 4.0 with a citation and EvoDiff's MIT license."""
    text = (EMBEDDED_DIR / "LICENSE.md").read_text()
    assert "CC BY 4.0" in text and "UniProt: the Universal Protein Knowledgebase" in text
    assert "MIT License" in text and "microsoft/evodiff" in text
    assert "not random" in (EMBEDDED_DIR / "PROVENANCE.md").read_text()


def test_default_config_uses_the_swissprot_subset_with_documented_counts(default_splits):
    """An empty data.source gives the 35,809 Swiss-Prot representatives (12,000,311 residues, lengths
    30..1,024, median 292) and the 996 random validation sequences, no test split and no hash split."""
    splits = default_splits
    assert len(splits.train) == EMBEDDED_TRAIN_COUNTS["swissprot50"] == 35809
    assert splits.train.num_residues == 12_000_311
    lengths = splits.train.lengths
    assert (int(lengths.min()), int(np.median(lengths)), int(lengths.max())) == (30, 292, 1024)
    assert splits.train.sequence_id(0) == "P59248" and splits.train.sequence_id(35808) == "Q84TE6"
    assert splits.validation is not None and len(splits.validation) == EMBEDDED_VALIDATION_COUNT == 996
    assert splits.test is None
    summary = splits.summary
    assert summary.split == "embedded" and summary.excluded_from_train == 0
    assert (summary.num_train, summary.num_validation, summary.num_test) == (35809, 996, 0)


@pytest.mark.skipif(not SHARED_SWISSPROT.is_file(), reason="the shared Swiss-Prot file is not beside the repo")
def test_swissprot_subset_holds_unchanged_shared_sequences():
    """Every embedded Swiss-Prot record is the shared file's record of the same accession, letter for
    letter, within 30..1,024 residues (a subset, nothing invented or edited)."""
    shared = _read_fasta(SHARED_SWISSPROT)
    subset = _read_fasta(Path(EMBEDDED_DIR / "swissprot50_train.fasta.gz"))
    assert len(subset) == 35809
    for name, sequence in subset.items():
        assert shared[name] == sequence, name
        assert 30 <= len(sequence) <= 1024


def test_uniref50_17taxa_option_with_documented_counts(uniref50_17taxa_splits):
    """data.embedded_train=uniref50_17taxa gives 5,001 training sequences (1,505,291 residues, lengths
    24..9,111) and the 996 random validation sequences (16..3,837), no test split and no hash split."""
    splits = uniref50_17taxa_splits
    assert len(splits.train) == EMBEDDED_TRAIN_COUNTS["uniref50_17taxa"] == 5001
    assert splits.validation is not None and len(splits.validation) == EMBEDDED_VALIDATION_COUNT == 996
    assert splits.test is None
    assert splits.train.num_residues == 1_505_291
    assert (
        int(splits.train.lengths.min()),
        int(np.median(splits.train.lengths)),
        int(splits.train.lengths.max()),
    ) == (
        24,
        205,
        9111,
    )
    assert (int(splits.validation.lengths.min()), int(splits.validation.lengths.max())) == (16, 3837)
    assert splits.validation.num_residues == 284_668
    assert splits.train.sequence_id(0) == "UniRef50_A0A007"
    assert splits.train.sequence_id(5000) == "UniRef50_A0A010RY59"
    assert splits.validation.sequence_id(0) == "UniRef50_A0A1H0Q542"
    summary = splits.summary
    assert summary.split == "embedded" and summary.excluded_from_train == 0
    assert (summary.num_train, summary.num_validation, summary.num_test) == (5001, 996, 0)


def test_embedded_summary_statistics(uniref50_17taxa_splits):
    """Training unigram frequencies cover the alphabet and sum to 1 (X appears 103 times); the
    length histogram counts every training sequence."""
    summary = uniref50_17taxa_splits.summary
    freqs = summary.residue_frequencies
    assert freqs.shape == (ALPHABET.num_residues,) and freqs.sum() == pytest.approx(1.0)
    x = ALPHABET.residues.index("X")
    assert freqs[x] * 1_505_291 == pytest.approx(103)
    hist = summary.length_histogram
    assert sum(hist["counts"]) == 5001 and hist["lengths"][0] == 24 and hist["lengths"][-1] == 9111
    plain = summary.to_dict()
    assert isinstance(plain["residue_frequencies"], list) and isinstance(
        plain["length_histogram"]["lengths"][0], int
    )


def test_validation_sequences_match_the_csv_text(default_splits):
    """The validation tokens decode to exactly the CSV sequences, in file order (x000 then x001)."""
    sequences = []
    for name in ("x000.csv", "x001.csv"):
        with open(EMBEDDED_DIR / name, newline="") as handle:
            sequences += [row["sequence"] for row in csv.DictReader(handle)]
    validation = default_splits.validation
    assert len(sequences) == len(validation)
    for k in (0, 497, 498, 995):
        assert ALPHABET.decode(validation.tokens(k)) == sequences[k]


def test_composition_reference_has_the_alphabet_letters():
    """The EvoDiff composition reference has one row of counts over the 26 letters of our alphabet."""
    with open(EMBEDDED_COMPOSITION_REFERENCE, newline="") as handle:
        header, counts = list(csv.reader(handle))
    assert sorted(header) == sorted(ALPHABET.residues)
    assert all(int(c) >= 0 for c in counts) and len(counts) == 26
