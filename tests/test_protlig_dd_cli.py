"""The protlig-dd command (issue 14): on PATH after pip install, --help/--version, every subcommand's
--help, and each subcommand end to end on the tiny config (prepare -> train -> sample, score,
evaluate, export -> sample from the export)."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG

from protlig_dd import __version__, cli


def _protlig_dd() -> str:
    exe = shutil.which("protlig-dd")
    assert exe, "protlig-dd is not on PATH: run pip install -e ."
    return exe


def test_console_script_is_installed_with_version_and_help() -> None:
    """pip install -e . declares protlig-dd -> protlig_dd.cli:main and puts it on PATH; --version prints
    the version and --help lists every subcommand."""
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert any(ep.name == "protlig-dd" and ep.value == "protlig_dd.cli:main" for ep in scripts)
    version = subprocess.run([_protlig_dd(), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"protlig-dd {__version__}"
    helped = subprocess.run([_protlig_dd(), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0
    for name in ("train", "prepare", "sample", "score", "evaluate", "export"):
        assert f"    {name}" in helped.stdout, name


def test_subcommand_help_through_the_installed_script() -> None:
    """`protlig-dd sample --help` is the sample module's help (the same options as python -m)."""
    proc = subprocess.run([_protlig_dd(), "sample", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "--template" in proc.stdout and "--checkpoint" in proc.stdout


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_subcommand_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every subcommand's --help exits 0 and shows its module's options."""
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    assert "--" in capsys.readouterr().out


def test_no_or_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command the help goes to stderr with exit 2; an unknown command is an argparse error."""
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["trian"])
    assert stop.value.code == 2


def _write_fasta(path: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    lines = []
    for i in range(count):
        lines += [f">seq{i}", "M" + "".join(rng.choice(letters, size=int(rng.integers(20, 60))))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_each_subcommand_end_to_end(tmp_path: Path) -> None:
    """prepare, train, sample, score, evaluate and export through protlig-dd on the tiny config, and
    sampling from the export gives what sampling from the run gave."""
    data = _write_fasta(tmp_path / "train.fasta", 80, seed=0)
    heldout = _write_fasta(tmp_path / "heldout.fasta", 6, seed=1)
    cache = tmp_path / "cache"
    assert cli.main(["prepare", "--source", str(data), "--out", str(cache), "--no-progress"]) == 0
    run = tmp_path / "run"
    overrides = ["training.max_steps=2", "eval.every=0", "sampling.every=0", f"data.cache_dir={tmp_path / 'dc'}"]
    train = ["train", "--work_dir", str(run), "--config", str(TINY_CONFIG), "--device", "cpu"]
    assert cli.main([*train, "--datafile", str(cache), "--set", *overrides]) == 0
    device = ["--device", "cpu", "--precision", "fp32"]
    sampled = tmp_path / "samples.fasta"
    sample = ["sample", "--num", "3", "--length", "20", "--steps", "4", *device]
    assert cli.main([*sample, "--checkpoint", str(run), "--out", str(sampled)]) == 0
    scores = tmp_path / "scores.csv"
    assert cli.main(["score", "--checkpoint", str(run), "--fasta", str(heldout), "--out", str(scores), *device]) == 0
    assert len(scores.read_text().splitlines()) == 7
    report = tmp_path / "report"
    evaluate = ["evaluate", "--checkpoint", str(run), "--data", str(heldout), "--samples", str(sampled)]
    assert (
        cli.main([*evaluate, "--train-data", str(data), "--samples-per-seq", "2", "--out", str(report), *device]) == 0
    )
    assert json.loads((report / "report.json").read_text())["validation"]["num_sequences"] == 6
    exported = tmp_path / "export"
    export = ["export", "--checkpoint", str(run), "--out", str(exported), "--heldout", str(heldout)]
    assert cli.main([*export, "--samples-per-seq", "2", *device]) == 0
    assert "Trained on" in (exported / "README.md").read_text()
    again = tmp_path / "again.fasta"
    assert cli.main([*sample, "--checkpoint", str(exported), "--out", str(again)]) == 0

    def sequences(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if not line.startswith(">")]

    assert sequences(again) == sequences(sampled)
