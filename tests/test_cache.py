"""Prepared cache: TokenStore layout, unknown-residue policies, reuse/rebuild, crash safety."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from protlig_dd.data import cache as cache_module
from protlig_dd.data import readers
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.cache import CacheError, PreparedCache, prepare_cache, read_meta
from protlig_dd.data.encoding import QUANTILES, length_summary
from protlig_dd.data.readers import SourceError, SourceSpec
from protlig_dd.data.sequence_set import SequenceSet

ALPHABET = Alphabet()
SEQUENCES = [
    ("UniRef50_A", "MKVLAAGW"),
    ("UniRef50_B", "acdefghik"),
    ("UniRef50_C", "W"),
    ("UniRef50_D", "PQRSTVY" * 40),
]


def _fasta(path, records=SEQUENCES):
    path.write_text("".join(f">{rid} n=1 Tax=T\n{seq}\n" for rid, seq in records))
    return SourceSpec(str(path))


def _prepare(spec, out, **kwargs):
    return prepare_cache(
        [spec] if isinstance(spec, SourceSpec) else spec, out, ALPHABET, progress=False, **kwargs
    )


def test_cache_satisfies_token_store_protocol(tmp_path):
    """tokens is flat uint8, offsets int64 (n+1), sequence i decodes back to its (uppercased)
    sequence, sequence_id returns the header's first word, and SequenceSet works on it."""
    cache = _prepare(_fasta(tmp_path / "a.fasta"), tmp_path / "c")
    assert cache.tokens.dtype == np.uint8 and cache.offsets.dtype == np.int64
    assert cache.offsets.shape == (len(SEQUENCES) + 1,) and len(cache) == len(SEQUENCES)
    for i, (rid, seq) in enumerate(SEQUENCES):
        assert ALPHABET.decode(cache.tokens[cache.offsets[i] : cache.offsets[i + 1]]) == seq.upper()
        assert cache.sequence_id(i) == rid
    whole = SequenceSet.whole(cache)
    assert whole.num_residues == sum(len(s) for _, s in SEQUENCES)
    assert ALPHABET.decode(whole.tokens(3, start=5, length=4)) == ("PQRSTVY" * 40)[5:9]
    with pytest.raises(IndexError):
        cache.sequence_id(len(SEQUENCES))
    assert isinstance(cache.tokens, np.memmap)
    assert cache.meta["counts"]["residues"] == int(cache.residue_counts.sum())


def test_pickle_reopens_by_path(tmp_path):
    """Pickling a cache (DataLoader workers) stores its path, not a copy of the mapped tokens."""
    cache = _prepare(_fasta(tmp_path / "a.fasta", [("x", "ACDEFGHIKL" * 5000)]), tmp_path / "c")
    blob = pickle.dumps(cache)
    assert len(blob) < 2000
    again = pickle.loads(blob)
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(cache.tokens))


def test_unknown_residue_policies(tmp_path):
    """error stops naming file, line, character and position; map_to_x maps to X and counts per
    letter; drop drops and counts the sequence."""
    records = [("a", "MKV"), ("b", "ACZJ"), ("c", "MKBBL")]  # B, Z, J are in the default alphabet
    small = Alphabet(residues="ACDEFGHIKLMNPQRSTVWYX")
    spec = _fasta(tmp_path / "u.fasta", records)
    with pytest.raises(SourceError) as err:
        prepare_cache([spec], tmp_path / "e", small, progress=False)
    assert f"{spec.path} line 3 (record 2): character 'Z' at position 3 of 'b' is not in the alphabet" in str(
        err.value
    )
    mapped = prepare_cache([spec], tmp_path / "m", small, unknown_residues="map_to_x", progress=False)
    assert mapped.meta["counts"]["mapped_to_x"] == {"B": 2, "J": 1, "Z": 1}
    assert small.decode(mapped.tokens[mapped.offsets[2] : mapped.offsets[3]]) == "MKXXL"
    assert len(mapped) == 3
    dropped = prepare_cache([spec], tmp_path / "d", small, unknown_residues="drop", progress=False)
    assert len(dropped) == 1 and dropped.sequence_id(0) == "a"
    assert dropped.meta["counts"]["dropped"] == {"too_short": 0, "unknown_residues": 2}


@pytest.mark.parametrize("policy", ["error", "map_to_x", "drop"])
def test_non_letters_always_error(tmp_path, policy):
    """A non-letter (digit, '-', '*' inside a sequence, non-ASCII) is an error under every policy."""
    for bad, shown in (("AC-D", "'-'"), ("AC*D", "'*'"), ("AC1D", "'1'"), ("ACéD", "non-ASCII byte 0xc3")):
        spec = _fasta(tmp_path / "n.fasta", [("ok", "MKV"), ("bad", bad)])
        with pytest.raises(SourceError) as err:
            prepare_cache([spec], tmp_path / "n", ALPHABET, unknown_residues=policy, progress=False)
        assert f"line 3 (record 2): character {shown} at position 3 of 'bad' is not a residue letter" in str(
            err.value
        )
        assert not (tmp_path / "n").exists()


def test_min_length_drops_and_counts(tmp_path):
    """Sequences shorter than min_length are dropped and counted; lengths summary describes the kept."""
    cache = _prepare(_fasta(tmp_path / "a.fasta"), tmp_path / "c", min_length=8)
    assert [cache.sequence_id(i) for i in range(len(cache))] == ["UniRef50_A", "UniRef50_B", "UniRef50_D"]
    counts = cache.meta["counts"]
    assert counts["read"] == 4 and counts["kept"] == 3 and counts["dropped"]["too_short"] == 1
    assert cache.meta["lengths"]["min"] == 8 and cache.meta["lengths"]["max"] == 280
    assert cache.meta["length_histogram"] == {"lengths": [8, 9, 280], "counts": [1, 1, 1]}
    with pytest.raises(SourceError, match="no sequence kept"):
        _prepare(_fasta(tmp_path / "a.fasta"), tmp_path / "c2", min_length=1000)
    assert not (tmp_path / "c2").exists()


def test_length_summary_matches_numpy_nearest_rank():
    """Histogram quantiles equal numpy's nearest-rank (inverted_cdf) quantiles of the raw lengths."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 3000, size=1001)
    summary = length_summary(np.bincount(lengths))
    assert summary["min"] == lengths.min() and summary["max"] == lengths.max()
    assert summary["mean"] == pytest.approx(lengths.mean())
    assert summary["median"] == int(np.quantile(lengths, 0.5, method="inverted_cdf"))
    for key, q in zip(summary["quantiles"], QUANTILES, strict=True):
        assert summary["quantiles"][key] == int(np.quantile(lengths, q, method="inverted_cdf")), key


def test_reuse_rebuild_and_force(tmp_path, monkeypatch):
    """Same inputs reuse the cache (no rebuild); a changed source file or option rebuilds it;
    force rebuilds an up-to-date one."""
    spec = _fasta(tmp_path / "a.fasta")
    first = _prepare(spec, tmp_path / "c")
    builds = []
    real_build = cache_module._build
    monkeypatch.setattr(cache_module, "_build", lambda *a: builds.append(1) or real_build(*a))
    again = _prepare(spec, tmp_path / "c")
    assert builds == [] and again.fingerprint == first.fingerprint
    _prepare(spec, tmp_path / "c", force=True)
    assert builds == [1]
    _prepare(spec, tmp_path / "c", min_length=2)
    assert builds == [1, 1]
    _fasta(tmp_path / "a.fasta", SEQUENCES + [("UniRef50_E", "MKV")])
    grown = _prepare(spec, tmp_path / "c", min_length=2)
    assert builds == [1, 1, 1] and len(grown) == 4  # "W" is shorter than 2
    other = Alphabet(residues="ACDEFGHIKLMNPQRSTVWYXBZUOJ"[::-1])
    prepare_cache([spec], tmp_path / "c", other, min_length=2, progress=False)
    assert builds == [1, 1, 1, 1]


def test_crash_mid_write_leaves_no_cache_and_keeps_previous(tmp_path, monkeypatch):
    """An exception raised mid-write leaves no complete-looking cache and no temporary directory;
    a previous cache at the same place survives a failed forced rebuild unchanged."""
    records = [(f"s{i}", "MKVLAAGW" * 3) for i in range(50)]
    spec = _fasta(tmp_path / "a.fasta", records)
    calls = []
    real_append = cache_module._Writer.append

    def crash_on_second(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_append(self, *args)

    monkeypatch.setattr(readers, "_FASTA_BLOCK_BYTES", 64)  # many batches
    monkeypatch.setattr(cache_module._Writer, "append", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _prepare(spec, tmp_path / "c")
    assert sorted(os.listdir(tmp_path)) == [".c.lock", "a.fasta"]

    monkeypatch.setattr(cache_module._Writer, "append", real_append)
    previous = _prepare(spec, tmp_path / "c")
    tokens_before = np.array(previous.tokens)
    calls.clear()
    monkeypatch.setattr(cache_module._Writer, "append", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _prepare(spec, tmp_path / "c", force=True)
    kept = PreparedCache.open(tmp_path / "c")
    assert kept.fingerprint == previous.fingerprint
    np.testing.assert_array_equal(np.asarray(kept.tokens), tokens_before)
    assert sorted(os.listdir(tmp_path)) == [".c.lock", "a.fasta", "c"]


def test_leftover_temporary_directory_is_ignored_and_removed(tmp_path):
    """A temporary directory left by a killed preparation (even one holding a meta.json) is never
    taken for the cache and is deleted by the next preparation."""
    spec = _fasta(tmp_path / "a.fasta")
    stale = tmp_path / ".c.tmp-99999-deadbeef"
    stale.mkdir()
    (stale / "tokens.bin").write_bytes(b"\x00" * 10)
    (stale / "meta.json").write_text(json.dumps({"format": cache_module.CACHE_FORMAT}))
    cache = _prepare(spec, tmp_path / "c")
    assert not stale.exists() and len(cache) == len(SEQUENCES)
    with pytest.raises(CacheError, match="not a prepared cache"):
        PreparedCache.open(tmp_path / "missing")


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    """--out pointing at a non-empty directory that is not a cache is an error, not a deletion."""
    spec = _fasta(tmp_path / "a.fasta")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(CacheError, match="exists and is not a prepared cache"):
        _prepare(spec, tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert len(_prepare(spec, tmp_path / "empty")) == len(SEQUENCES)


def test_damaged_cache_is_reported_and_force_rebuilds(tmp_path):
    """A cache whose files do not match its meta.json is a CacheError (never silently used);
    force rebuilds it."""
    spec = _fasta(tmp_path / "a.fasta")
    _prepare(spec, tmp_path / "c")
    with open(tmp_path / "c" / "tokens.bin", "r+b") as handle:
        handle.truncate(5)
    with pytest.raises(CacheError, match="tokens.bin: size 5"):
        _prepare(spec, tmp_path / "c")
    assert len(_prepare(spec, tmp_path / "c", force=True)) == len(SEQUENCES)


def test_meta_records_sources_and_fingerprint_inputs(tmp_path):
    """meta.json names the source, alphabet, policy and counts; a foreign meta.json is not ours."""
    spec = _fasta(tmp_path / "a.fasta")
    cache = _prepare([spec, spec], tmp_path / "c")  # several sources are concatenated
    meta = read_meta(tmp_path / "c")
    assert meta is not None and len(cache) == 2 * len(SEQUENCES)
    assert meta["alphabet"] == ALPHABET.residues
    assert [s["path"] for s in meta["fingerprint_inputs"]["sources"]] == [
        str((tmp_path / "a.fasta").resolve())
    ] * 2
    assert meta["fingerprint_inputs"]["unknown_residues"] == "error"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"format": "something else"}')
    assert read_meta(tmp_path / "other") is None


def test_invalid_options(tmp_path):
    """Bad policy, min_length or an empty source list are ValueErrors naming the value."""
    spec = _fasta(tmp_path / "a.fasta")
    with pytest.raises(ValueError, match="'ignore'"):
        _prepare(spec, tmp_path / "c", unknown_residues="ignore")
    with pytest.raises(ValueError, match="min_length must be >= 1, got 0"):
        _prepare(spec, tmp_path / "c", min_length=0)
    with pytest.raises(ValueError, match="at least one source"):
        prepare_cache([], tmp_path / "c", ALPHABET)
    with pytest.raises(ValueError, match="needs an X"):
        prepare_cache([spec], tmp_path / "c", Alphabet("ACDEFGHIKLMNPQRSTVWY"), unknown_residues="map_to_x")
