"""The sampling CLI end to end on a tiny trained checkpoint (issue 5): lengths, templates, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from protlig_dd import sample
from protlig_dd.data.readers import SourceSpec, iter_records
from protlig_dd.training import checkpoint as ckpt

MAX_LENGTH = 64  # tests/tiny_config.yaml model.max_length


def _run(run_dir: Path, out: Path, *extra: str) -> int:
    args = ["--checkpoint", str(run_dir), "--out", str(out), "--device", "cpu", "--precision", "fp32"]
    return sample.main([*args, "--steps", "4", *extra])


def _records(path: Path) -> list[tuple[str, str]]:
    header_lines = [line[1:] for line in path.read_text().splitlines() if line.startswith(">")]
    sequences = [r.sequence for r in iter_records(SourceSpec(str(path), format="fasta"))]
    return list(zip(header_lines, sequences, strict=True))


def test_fixed_length_samples_with_headers_and_speed(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--num 5 --length 20 writes 5 residue-only sequences of length 20; headers carry length and
    settings; residues/s is printed."""
    out = tmp_path / "nested" / "samples.fasta"
    assert _run(tiny_run, out, "--num", "5", "--length", "20") == 0
    records = _records(out)
    assert len(records) == 5
    for header, sequence in records:
        assert len(sequence) == 20 and "_" not in sequence
        assert "length=20" in header and "steps=4" in header and "predictor=analytic" in header
        assert "seed=0" in header and "ema=True" in header
    assert "residues/s" in capsys.readouterr().out


def test_lengths_drawn_from_the_training_histogram(tiny_run: Path, tmp_path: Path) -> None:
    """Without --length, lengths come from the checkpoint's training histogram, capped at max_length."""
    out = tmp_path / "samples.fasta"
    assert _run(tiny_run, out, "--num", "12", "--lengths-from-data", "--batch-size", "5") == 0
    meta = ckpt.read_meta(ckpt.resolve_checkpoint(tiny_run))
    allowed = {min(n, MAX_LENGTH) for n in meta["data_summary"]["length_histogram"]["lengths"]}
    lengths = [len(s) for _, s in _records(out)]
    assert len(lengths) == 12 and set(lengths) <= allowed


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_template_residues_are_preserved_exactly(tiny_run: Path, tmp_path: Path, predictor: str) -> None:
    """Every fixed letter of a template (ends and scattered positions) is in the output unchanged; the
    gaps are filled with residues (no MASK survives)."""
    template = "MKT" + "_" * 8 + "W_C__H" + "_" * 9 + "GGS"
    out = tmp_path / "samples.fasta"
    assert _run(tiny_run, out, "--num", "6", "--template", template, "--predictor", predictor) == 0
    records = _records(out)
    assert len(records) == 6
    for header, sequence in records:
        assert len(sequence) == len(template) and "_" not in sequence
        for position, letter in enumerate(template):
            if letter != "_":
                assert sequence[position] == letter, (position, sequence)
        assert f"template={template}" in header and f"predictor={predictor}" in header


def test_prefix_and_suffix_are_kept_and_drawn_lengths_fit_them(tiny_run: Path, tmp_path: Path) -> None:
    """--prefix/--suffix fix both ends, with --length or with lengths drawn from the data (raised to at
    least len(prefix) + len(suffix))."""
    out = tmp_path / "fixed.fasta"
    assert _run(tiny_run, out, "--num", "3", "--length", "20", "--prefix", "MKV", "--suffix", "WWW") == 0
    for _, sequence in _records(out):
        assert len(sequence) == 20 and sequence.startswith("MKV") and sequence.endswith("WWW")
    prefix = "M" + "A" * 39
    assert _run(tiny_run, out, "--num", "8", "--prefix", prefix, "--suffix", "GG") == 0
    for _, sequence in _records(out):
        assert len(sequence) >= 42 and sequence.startswith(prefix) and sequence.endswith("GG")


def test_same_seed_same_samples(tiny_run: Path, tmp_path: Path) -> None:
    """A fixed --seed reproduces the file exactly; another seed gives other sequences."""
    first, second, other = tmp_path / "a.fasta", tmp_path / "b.fasta", tmp_path / "c.fasta"
    for path, seed in ((first, "3"), (second, "3"), (other, "4")):
        assert _run(tiny_run, path, "--num", "4", "--seed", seed) == 0
    assert first.read_text() == second.read_text()
    assert [s for _, s in _records(first)] != [s for _, s in _records(other)]


def test_a_step_folder_works_as_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    """--checkpoint accepts a step folder as well as a run directory."""
    folder = ckpt.resolve_checkpoint(tiny_run)
    out = tmp_path / "samples.fasta"
    assert _run(folder, out, "--num", "2", "--length", "10") == 0
    assert all("checkpoint_step=2" in header for header, _ in _records(out))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--template", "M" * (MAX_LENGTH + 1)], "exceeds max_length 64"),
        (["--template", "MK1__"], "character '1' at position 3"),
        (["--length", str(MAX_LENGTH + 1)], "--length 65"),
        (["--length", "0"], "--length 0"),
        (["--template", "MK__", "--prefix", "M"], "--template cannot be combined"),
        (["--prefix", "M" * 70], "--prefix/--suffix"),
    ],
)
def test_bad_requests_exit_2_with_one_line(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """Template longer than the model, unknown template letters, impossible lengths: exit 2 and one
    'error:' line naming the problem, no file written."""
    out = tmp_path / "samples.fasta"
    assert _run(tiny_run, out, "--num", "2", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists()


def test_missing_or_empty_checkpoint_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No checkpoint (missing path, or a directory without complete checkpoints) is a one-line error."""
    assert _run(tmp_path / "nowhere", tmp_path / "s.fasta", "--num", "1") == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert _run(tmp_path / "empty_run", tmp_path / "s.fasta", "--num", "1") == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_module_entry_point_errors_without_traceback(tmp_path: Path) -> None:
    """`python -m protlig_dd.sample` with a missing checkpoint exits 2 with one stderr line."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "protlig_dd.sample", "--checkpoint", str(tmp_path / "none")]
    result = subprocess.run(
        [*command, "--num", "1", "--out", str(tmp_path / "s.fasta")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith(
        "error: checkpoint not found"
    )
