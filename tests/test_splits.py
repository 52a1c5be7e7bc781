"""Hash splits (stable under re-ordering and growth) and prepare_splits on configured sources."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from protlig_dd.config import DataConfig
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.pipeline import length_histogram, prepare_splits, residue_counts
from protlig_dd.data.sequence_set import InMemoryTokenStore, SequenceSet
from protlig_dd.data.splits import assign_splits, exclude_ids, hash_ids, hash_to_unit

ALPHABET = Alphabet()


def _ids(n: int, prefix: str = "UniRef50_T") -> list[bytes]:
    return [f"{prefix}{i:07d}".encode() for i in range(n)]


def _membership(ids: list[bytes], vf: float, tf: float) -> dict[bytes, str]:
    split = assign_splits(hash_ids(ids), vf, tf)
    out = {}
    for name in ("train", "validation", "test"):
        for i in getattr(split, name):
            out[ids[i]] = name
    return out


def test_hash_is_fixed_blake2b():
    """The id hash is BLAKE2b-64 little-endian, independent of Python's salted hash(): these values
    must never change, or every saved split would move."""
    hashes = hash_ids([b"UniRef50_A0A007", b""])
    assert hashes.dtype == np.uint64
    assert [int(h) for h in hashes] == [17273714012212003676, 13020603013274838756]
    expected = int.from_bytes(hashlib.blake2b(b"UniRef50_A0A007", digest_size=8).digest(), "little")
    assert int(hashes[0]) == expected
    unit = hash_to_unit(hashes)
    assert np.all((unit >= 0) & (unit < 1))
    assert hash_to_unit(np.array([2**64 - 1], dtype=np.uint64))[0] < 1.0


def test_split_is_stable_under_reordering_and_growth():
    """An id's split depends on the id alone: shuffling the file or appending records moves no
    existing id to another split."""
    ids = _ids(3000)
    base = _membership(ids, 0.1, 0.05)
    shuffled = list(np.random.default_rng(0).permutation(np.array(ids, dtype=object)))
    assert _membership(shuffled, 0.1, 0.05) == base
    grown = ids + _ids(2000, prefix="UniRef50_NEW")
    after = _membership(grown, 0.1, 0.05)
    assert {k: after[k] for k in ids} == base


def test_split_fractions_and_disjointness():
    """Splits partition the indices and their sizes match the fractions within binomial noise."""
    n = 20000
    split = assign_splits(hash_ids(_ids(n)), 0.1, 0.2)
    together = np.concatenate([split.train, split.validation, split.test])
    assert np.array_equal(np.sort(together), np.arange(n))
    for got, p in ((len(split.validation), 0.1), (len(split.test), 0.2)):
        assert abs(got - p * n) < 5 * np.sqrt(n * p * (1 - p)), (got, p)
    none = assign_splits(hash_ids(_ids(100)), 0.0, 0.0)
    assert len(none.train) == 100 and len(none.validation) == len(none.test) == 0


def test_invalid_fractions():
    """Fractions outside [0, 1) or summing to >= 1 are ValueErrors naming the values."""
    hashes = hash_ids(_ids(10))
    with pytest.raises(ValueError, match="1.5"):
        assign_splits(hashes, 1.5, 0.0)
    with pytest.raises(ValueError, match="must be < 1, got 1.0"):
        assign_splits(hashes, 0.5, 0.5)


def test_exclude_ids():
    """exclude_ids removes exactly the indices whose hash is in the excluded set."""
    ids = _ids(10)
    hashes = hash_ids(ids)
    kept = exclude_ids(np.arange(10), hashes, hash_ids([ids[2], ids[7], b"absent"]))
    assert kept.tolist() == [0, 1, 3, 4, 5, 6, 8, 9]


def _write_fasta(path, records):
    path.write_text("".join(f">{rid} Tax=T\n{seq}\n" for rid, seq in records))


def _records(n: int, seed: int = 0, prefix: str = "UniRef50_S") -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    return [
        (f"{prefix}{i:05d}", "".join(rng.choice(letters, size=int(rng.integers(5, 60))))) for i in range(n)
    ]


def _split_ids(splits) -> dict[str, set[str]]:
    out = {}
    for name in ("train", "validation", "test"):
        part = getattr(splits, name)
        out[name] = set() if part is None else {part.sequence_id(k) for k in range(len(part))}
    return out


def test_prepare_splits_hash_split_is_stable_when_file_is_reordered(tmp_path):
    """prepare_splits on a file and on the same file reversed gives the same id sets per split,
    and the summary counts, frequencies and length histogram describe the training split."""
    records = _records(400)
    _write_fasta(tmp_path / "a.fasta", records)
    _write_fasta(tmp_path / "b.fasta", records[::-1])
    cfg_a = DataConfig(source=str(tmp_path / "a.fasta"), validation_fraction=0.2, test_fraction=0.1)
    cfg_b = DataConfig(source=str(tmp_path / "b.fasta"), validation_fraction=0.2, test_fraction=0.1)
    a = prepare_splits(cfg_a, ALPHABET, tmp_path / "cache", progress=False)
    b = prepare_splits(cfg_b, ALPHABET, tmp_path / "cache", progress=False)
    ids_a, ids_b = _split_ids(a), _split_ids(b)
    assert ids_a == ids_b
    assert sum(len(v) for v in ids_a.values()) == 400 and all(ids_a.values())
    summary = a.summary
    assert (summary.num_train, summary.num_validation, summary.num_test) == tuple(
        len(ids_a[k]) for k in ("train", "validation", "test")
    )
    by_id = dict(records)
    train_seqs = [by_id[i] for i in ids_a["train"]]
    assert summary.train_residues == sum(map(len, train_seqs))
    expected = np.bincount(
        np.concatenate([ALPHABET.encode(s) for s in train_seqs]), minlength=ALPHABET.num_residues
    )
    np.testing.assert_allclose(summary.residue_frequencies, expected / expected.sum())
    assert summary.residue_frequencies.shape == (ALPHABET.num_residues,)
    hist = summary.length_histogram
    assert sum(hist["counts"]) == summary.num_train
    assert sorted(hist["lengths"]) == hist["lengths"] and set(hist["lengths"]) == {len(s) for s in train_seqs}
    assert summary.split == "hash" and summary.to_dict()["num_train"] == summary.num_train


def test_prepare_splits_explicit_files_and_overlap_exclusion(tmp_path):
    """validation_source/test_source are used whole (no hash split for them), and their ids are
    removed from training (counted)."""
    records = _records(100)
    validation = records[:10]
    _write_fasta(tmp_path / "train.fasta", records)
    (tmp_path / "val.csv").write_text("id,sequence\n" + "".join(f"{i},{s}\n" for i, s in validation))
    _write_fasta(tmp_path / "test.fasta", _records(7, seed=1, prefix="UniRef50_Q"))
    cfg = DataConfig(
        source=str(tmp_path / "train.fasta"),
        validation_source=str(tmp_path / "val.csv"),
        test_source=str(tmp_path / "test.fasta"),
        id_column="id",
        validation_fraction=0.5,
    )
    splits = prepare_splits(cfg, ALPHABET, tmp_path / "cache", progress=False)
    ids = _split_ids(splits)
    assert ids["validation"] == {i for i, _ in validation}
    assert len(ids["test"]) == 7 and not ids["test"] & ids["train"]
    assert ids["train"] == {i for i, _ in records[10:]}
    assert splits.summary.excluded_from_train == 10 and splits.summary.split == "explicit"
    assert set(splits.summary.caches) == {"train", "validation", "test"}


def test_prepare_splits_reuses_caches_and_keeps_options_apart(tmp_path):
    """A second call reuses the prepared cache; another min_length prepares a separate cache."""
    _write_fasta(tmp_path / "a.fasta", _records(50))
    cfg = DataConfig(source=str(tmp_path / "a.fasta"), validation_fraction=0.0)
    first = prepare_splits(cfg, ALPHABET, tmp_path / "cache", progress=False)
    mtime = (tmp_path / first.summary.caches["train"] / "tokens.bin").stat().st_mtime_ns
    second = prepare_splits(cfg, ALPHABET, tmp_path / "cache", progress=False)
    assert second.summary.caches == first.summary.caches
    assert (tmp_path / first.summary.caches["train"] / "tokens.bin").stat().st_mtime_ns == mtime
    assert second.validation is None and second.test is None and len(second.train) == 50
    longer = prepare_splits(
        DataConfig(source=cfg.source, min_length=30), ALPHABET, tmp_path / "cache", progress=False
    )
    assert longer.summary.caches["train"] != first.summary.caches["train"]
    assert all(int(n) >= 30 for n in longer.train.lengths)


def test_residue_counts_blocks_match_direct_count(monkeypatch):
    """Block-wise vectorised residue counting of a subset equals a direct per-sequence count,
    including blocks smaller than one sequence."""
    from protlig_dd.data import pipeline

    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 26, size=int(rng.integers(1, 50)), dtype=np.uint8) for _ in range(200)]
    store = InMemoryTokenStore.from_arrays(seqs)
    subset = SequenceSet(store, np.sort(rng.choice(200, size=80, replace=False)))
    direct = np.bincount(np.concatenate([seqs[i] for i in subset.indices]), minlength=26)
    monkeypatch.setattr(pipeline, "_COUNT_BLOCK_TOKENS", 7)
    np.testing.assert_array_equal(residue_counts(subset, 26), direct)
    assert length_histogram(np.array([3, 1, 3])) == {"lengths": [1, 3], "counts": [1, 2]}
