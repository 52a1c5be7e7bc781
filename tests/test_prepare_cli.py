"""The prepare CLI end to end, in a subprocess: counts printed, reuse/force, bad input exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.cache import PreparedCache, prepare_cache
from protlig_dd.data.prepare import format_report
from protlig_dd.data.readers import SourceSpec

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "protlig_dd.data.prepare", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture()
def fasta(tmp_path) -> Path:
    path = tmp_path / "in.fasta"
    path.write_text(">UniRef50_A n=1\nMKVLA\nAGW\n>UniRef50_B\nACDEFGHIKZ\n>UniRef50_C\nWY\n")
    return path


def test_cli_prepares_prints_counts_and_reuses(tmp_path, fasta):
    """The CLI writes a cache that opens, prints kept/dropped/residue counts and the length summary,
    reuses it on a second run and rebuilds it with --force."""
    out = tmp_path / "cache"
    first = _run("--source", str(fasta), "--out", str(out), "--min-length", "3", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "sequences:  3 read, 2 kept" in first.stdout
    assert "dropped:    1 too short, 0 with unknown residues" in first.stdout
    assert "residues:   18" in first.stdout
    assert "length:     min 8, median 8, mean 9.0, max 10" in first.stdout
    assert "quantiles:  p1 8," in first.stdout
    cache = PreparedCache.open(out)
    assert [cache.sequence_id(i) for i in range(len(cache))] == ["UniRef50_A", "UniRef50_B"]
    again = _run("--source", str(fasta), "--out", str(out), "--min-length", "3", "--no-progress")
    assert again.returncode == 0 and "reusing prepared cache" in again.stderr
    forced = _run("--source", str(fasta), "--out", str(out), "--min-length", "3", "--force", "--no-progress")
    assert forced.returncode == 0 and "prepared 2 sequences" in forced.stderr


def test_cli_tabular_columns(tmp_path):
    """--sequence-column/--id-column select the columns of a TSV; a trailing '*' is not a residue."""
    path = tmp_path / "in.tsv"
    path.write_text("acc\tseq\nP1\tMKV\nP2\tMK*\n")
    result = _run(
        "--source",
        str(path),
        "--out",
        str(tmp_path / "c"),
        "--sequence-column",
        "seq",
        "--id-column",
        "acc",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert "sequences:  2 read, 2 kept" in result.stdout and "residues:   5" in result.stdout
    cache = PreparedCache.open(tmp_path / "c")
    assert [cache.sequence_id(i) for i in range(len(cache))] == ["P1", "P2"]


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda p: p.write_text("ACDE\n>x\nAC\n"), [], "line 1: sequence line before any '>' header"),
        (lambda p: p.write_text(">x\nAC1\n"), [], "character '1' at position 3"),
        (lambda p: None, [], "file not found"),
        (lambda p: p.write_text(">x\nACD\n"), ["--min-length", "0"], "min_length must be >= 1"),
        (lambda p: p.write_text(">x\nACD\n"), ["--min-length", "9"], "no sequence kept"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_one_line_error(tmp_path, make, extra, message):
    """Bad input exits with status 2 and a one-line 'error: ...' on stderr, without a traceback,
    and leaves no cache behind."""
    path = tmp_path / "bad.fasta"
    make(path)
    result = _run("--source", str(path), "--out", str(tmp_path / "c"), "--no-progress", *extra)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "c").exists()


def test_report_lists_mapped_letters(tmp_path):
    """format_report prints per-letter map_to_x counts when a cache mapped letters to X (the CLI's
    default alphabet holds all 26 letters, so this uses a smaller one in-process)."""
    path = tmp_path / "in.fasta"
    path.write_text(">a\nMKVZB\n>b\nBBW\n")
    small = Alphabet(residues="ACDEFGHIKLMNPQRSTVWYX")
    cache = prepare_cache(
        [SourceSpec(str(path))], tmp_path / "c", small, unknown_residues="map_to_x", progress=False
    )
    assert "mapped to X: Bx3, Zx1" in format_report(cache)


def test_benchmark_script_smoke(tmp_path):
    """scripts/benchmark_data.py runs end to end on a tiny synthetic size and writes its JSON with
    preparation, loader and padding results (guards the script against API drift)."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark_data.py"), "--num-sequences", "2000"]
        + ["--loader-batches", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert [row["num_sequences"] for row in data["preparation"]] == [500, 2000]
    assert all(row["residues_per_second"] > 0 and row["peak_rss_mb"] > 0 for row in data["preparation"])
    assert data["loader"]["real_tokens_per_second"] > 0
    assert 0.0 <= data["padding_shipped_sample"]["padding_waste"] < 0.05
