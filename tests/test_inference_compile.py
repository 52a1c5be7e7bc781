"""torch.compile for inference (load_model(compile=True), sample/score --compile): same numbers as eager.

Compiling a tiny model takes seconds per batch shape (inductor's on-disk cache makes repeats
faster), so each test compiles only a few shapes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from protlig_dd import sample, score
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.inference import load_model

ALPHABET = Alphabet()
# Real UniProt fragments (ubiquitin P0CG48 residues 1-76 and its first 30), as in test_score_cli.
UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"


def _randomize(model: torch.nn.Module) -> None:
    """Give the zero-initialised (adaLN-Zero, output) weights random values, so the output depends
    on every block; the compiled module reads the same parameters."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def test_compiled_network_matches_the_model(tiny_run: Path) -> None:
    """The compiled network gives the eager model's log-scores (fp32) on an unpadded batch and on
    a padded one (attention mask, positions): compilation changes speed, not the function."""
    loaded = load_model(tiny_run, device="cpu", precision="fp32", compile=True)
    assert loaded.compiled and loaded.network is not loaded.model
    _randomize(loaded.model)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, ALPHABET.mask_id + 1, (3, 40), generator=generator)
    sigma = torch.tensor([0.1, 1.0, 3.0])
    segment_ids = torch.ones_like(tokens)
    segment_ids[1, 25:] = 0  # row 1 is 25 residues long, then padding
    padded = tokens.masked_fill(segment_ids == 0, ALPHABET.pad_id)
    positions = torch.arange(40).expand(3, 40)
    with torch.inference_mode():
        for args in ((tokens, sigma), (padded, sigma, segment_ids, positions)):
            expected = loaded.model(*args)
            torch.testing.assert_close(loaded.network(*args), expected, rtol=1e-4, atol=1e-4)
            assert expected.abs().max() > 1.0  # a real function of the input, not a constant


def test_load_model_without_compile_uses_the_model(tiny_run: Path) -> None:
    """By default nothing is compiled: sampling and scoring call the eager model."""
    loaded = load_model(tiny_run, device="cpu", precision="fp32")
    assert loaded.network is loaded.model and not loaded.compiled


def _scores(run_dir: Path, fasta: Path, out: Path, *extra: str) -> list[float]:
    args = ["--checkpoint", str(run_dir), "--fasta", str(fasta), "--out", str(out), "--device", "cpu"]
    assert score.main([*args, "--precision", "fp32", "--samples-per-seq", "2", *extra]) == 0
    with open(out, newline="") as handle:
        return [float(row["nll"]) for row in csv.DictReader(handle)]


def test_score_and_sample_clis_with_compile(tiny_run: Path, tmp_path: Path) -> None:
    """score --compile gives the eager scores (same seed, same draws); sample --compile keeps a
    template's residues and writes the requested sequences."""
    fasta = tmp_path / "in.fasta"
    fasta.write_text(f">ubiquitin\n{UBIQUITIN}\n>ubiquitin_1_30\n{UBIQUITIN[:30]}\n")
    eager = _scores(tiny_run, fasta, tmp_path / "eager.csv")
    compiled = _scores(tiny_run, fasta, tmp_path / "compiled.csv", "--compile")
    assert compiled == pytest.approx(eager, rel=1e-4)

    out = tmp_path / "infill.fasta"
    template = "MKT" + "_" * 20 + "GGS"
    args = ["--checkpoint", str(tiny_run), "--out", str(out), "--device", "cpu", "--precision", "fp32"]
    assert sample.main([*args, "--steps", "3", "--num", "2", "--template", template, "--compile"]) == 0
    sequences = [line for line in out.read_text().splitlines() if not line.startswith(">")]
    assert len(sequences) == 2
    for sequence in sequences:
        assert len(sequence) == len(template) and sequence[:3] == "MKT" and sequence[-3:] == "GGS"


def test_compile_where_unsupported_is_a_clear_error(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a device without torch.compile support (MPS) --compile exits 2 with one line, never
    silently running eagerly."""
    monkeypatch.setattr("protlig_dd.inference.compile_supported", lambda device: False)
    args = ["--checkpoint", str(tiny_run), "--out", str(tmp_path / "x.fasta"), "--device", "cpu"]
    assert sample.main([*args, "--num", "1", "--length", "10", "--compile"]) == 2
    assert "torch.compile is not supported on cpu" in capsys.readouterr().err
    assert not (tmp_path / "x.fasta").exists()
