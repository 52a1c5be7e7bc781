"""The scoring CLI and Python API end to end on a tiny trained checkpoint (issue 5)."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, TINY_CONFIG

from protlig_dd import score
from protlig_dd.config import load_config
from protlig_dd.evaluation.shuffle_control import shuffle_control
from protlig_dd.inference import load_model
from protlig_dd.scoring import CSV_COLUMNS, score_sequences
from protlig_dd.training.loop import RunOptions, train

MAX_LENGTH = 64  # tests/tiny_config.yaml model.max_length
SEQUENCES = {
    "ubiquitin": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
    "short": "MSTNPKPQRKTKRNTNRRPQDVKFPGG",
    "long": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHM"
    "KALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKAT",
    "tiny": "MA",
}


def _periodic_sequences(count: int, seed: int) -> list[str]:
    """Windows of a repeated 20-letter motif at random offsets: order matters, composition does not."""
    rng = random.Random(seed)
    motif = "MKTAYIAKQRWHEGLPSDNF"
    return [
        "".join(motif[(start + j) % len(motif)] for j in range(rng.randint(30, 64)))
        for start in (rng.randrange(len(motif)) for _ in range(count))
    ]


def _shuffled(sequences: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.sample(s, len(s))) for s in sequences]


@pytest.fixture
def fasta(tmp_path: Path) -> Path:
    path = tmp_path / "in.fasta"
    path.write_text("".join(f">{name} some description\n{seq}\n" for name, seq in SEQUENCES.items()))
    return path


def _score(run_dir: Path, fasta: Path, out: Path, *extra: str) -> int:
    args = ["--checkpoint", str(run_dir), "--fasta", str(fasta), "--out", str(out)]
    return score.main([*args, "--device", "cpu", "--precision", "fp32", *extra])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_scores_csv_per_sequence_with_windows_and_total(
    tiny_run: Path, fasta: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One CSV row per sequence with the documented columns; the 147-residue sequence is scored in
    ceil(147 / 64) = 3 windows and ubiquitin (76) in 2 (said in num_windows), nothing truncated;
    ppl_bound = exp(nll/residue); the residue-weighted total is printed and written to
    scores.summary.json."""
    out = tmp_path / "scores.csv"
    assert _score(tiny_run, fasta, out, "--samples-per-seq", "4") == 0
    rows = _rows(out)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["id"] for r in rows] == list(SEQUENCES)
    by_id = {r["id"]: r for r in rows}
    for name, sequence in SEQUENCES.items():
        row = by_id[name]
        assert int(row["length"]) == len(sequence)
        assert int(row["num_windows"]) == math.ceil(len(sequence) / MAX_LENGTH)
        nll, per_residue = float(row["nll"]), float(row["nll_per_residue"])
        assert per_residue == pytest.approx(nll / len(sequence), rel=1e-4)
        assert float(row["ppl_bound"]) == pytest.approx(math.exp(per_residue), rel=1e-4)
        assert float(row["nll_stderr"]) > 0
    assert (int(by_id["long"]["num_windows"]), int(by_id["ubiquitin"]["num_windows"])) == (3, 2)
    summary = json.loads((tmp_path / "scores.summary.json").read_text())
    assert summary["num_residues"] == sum(len(s) for s in SEQUENCES.values())
    assert summary["num_sequences"] == len(SEQUENCES) and summary["num_windowed"] == 2
    total = sum(float(r["nll"]) for r in rows) / summary["num_residues"]
    assert summary["nll_per_residue"] == pytest.approx(total, rel=1e-4)
    assert summary["ppl_bound"] == pytest.approx(math.exp(summary["nll_per_residue"]))
    printed = capsys.readouterr().out
    assert "residues/s" in printed and "ppl bound" in printed and "O(eps)" in printed


def test_scores_are_stable_under_a_fixed_seed(tiny_run: Path, fasta: Path, tmp_path: Path) -> None:
    """The same seed reproduces every number; another seed draws other t and masks."""
    paths = [tmp_path / f"{name}.csv" for name in ("a", "b", "c")]
    for path, seed in zip(paths, ("5", "5", "6"), strict=True):
        assert _score(tiny_run, fasta, path, "--seed", seed) == 0
    assert paths[0].read_text() == paths[1].read_text()
    assert [r["nll"] for r in _rows(paths[0])] != [r["nll"] for r in _rows(paths[2])]


def test_standard_error_shrinks_with_more_samples(tiny_run: Path) -> None:
    """Monte-Carlo standard error falls like 1/sqrt(K): K = 64 draws give well under half the
    standard error of K = 4 (expected ratio 4), per sequence on average and for the total; the
    estimates agree within their errors."""
    loaded = load_model(tiny_run, device="cpu", precision="fp32")
    sequences = list(SEQUENCES.values())
    few = score_sequences(loaded, sequences, samples_per_sequence=4, seed=0)
    many = score_sequences(loaded, sequences, samples_per_sequence=64, seed=0)
    few_err = np.mean([s.nll_stderr for s in few.scores])
    many_err = np.mean([s.nll_stderr for s in many.scores])
    assert many_err < 0.5 * few_err
    assert many.total.nll_stderr < 0.5 * few.total.nll_stderr
    gap = abs(many.total.nll_per_residue - few.total.nll_per_residue)
    assert gap < 4 * math.hypot(many.total.nll_stderr, few.total.nll_stderr)


def test_single_draw_has_no_standard_error(tiny_run: Path) -> None:
    """With one draw per sequence there is no standard error: it is nan, not a made-up zero."""
    loaded = load_model(tiny_run, device="cpu", precision="fp32")
    report = score_sequences(loaded, [SEQUENCES["short"]], samples_per_sequence=1)
    assert math.isnan(report.scores[0].nll_stderr) and math.isnan(report.total.nll_stderr)
    assert math.isfinite(report.scores[0].nll)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("MKTAYIAKQR\n>x\nMK\n", "line 1: sequence line before any '>' header"),
        (">ok\nMKT\n>bad\nMK1T\n", "'bad"),
        (">empty\n\n>y\nMK\n", "empty sequence for 'empty'"),
    ],
)
def test_bad_fasta_exits_2_naming_the_problem(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Malformed FASTA or a letter outside the alphabet: exit 2, one line naming file/line or sequence."""
    path = tmp_path / "bad.fasta"
    path.write_text(content)
    assert _score(tiny_run, path, tmp_path / "scores.csv") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "scores.csv").exists()


def test_missing_inputs_exit_2(
    tiny_run: Path, fasta: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing FASTA, a missing checkpoint or --samples-per-seq 0: exit 2 with a one-line error."""
    assert _score(tiny_run, tmp_path / "none.fasta", tmp_path / "s.csv") == 2
    assert "file not found" in capsys.readouterr().err
    assert _score(tmp_path / "no_run", fasta, tmp_path / "s.csv") == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert _score(tiny_run, fasta, tmp_path / "s.csv", "--samples-per-seq", "0") == 2
    assert "--samples-per-seq" in capsys.readouterr().err


def test_module_entry_point_errors_without_traceback(tmp_path: Path, fasta: Path) -> None:
    """`python -m protlig_dd.score` with a missing checkpoint exits 2 with one stderr line."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "protlig_dd.score", "--checkpoint", str(tmp_path / "none")]
    result = subprocess.run(
        [*command, "--fasta", str(fasta), "--out", str(tmp_path / "s.csv")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith(
        "error: checkpoint not found"
    )


def test_scores_see_residue_order_of_a_learned_pattern(tmp_path: Path) -> None:
    """Fast variant of the shuffle test: a tiny model trained for 60 steps on windows of a repeated
    motif scores new such windows far better (lower bound) than the same windows with their residues
    shuffled. Shuffling keeps the composition, so only context use (scoring with the right positions,
    masks and segment layout) can tell them apart."""
    train_fasta = tmp_path / "periodic.fasta"
    train_fasta.write_text("".join(f">p{i}\n{s}\n" for i, s in enumerate(_periodic_sequences(400, 0))))
    overrides = [
        f"data.source={train_fasta}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.validation_fraction=0.0",
        "data.tokens_per_batch=512",
        "model.dropout=0.0",
        "optim.lr=0.003",
        "optim.warmup_steps=5",
        "training.max_steps=60",
        "training.grad_accum_steps=1",
        "training.ema_decay=0.0",
        "eval.every=0",
        "sampling.every=0",
        "checkpoint.every=60",
    ]
    train(load_config(TINY_CONFIG, overrides), RunOptions(work_dir=tmp_path / "run", device="cpu"))
    loaded = load_model(tmp_path / "run", device="cpu", precision="fp32")
    real = _periodic_sequences(16, 1)
    # The same seed gives both sets the same t draws and mask positions (a paired comparison).
    ordered = score_sequences(loaded, real, samples_per_sequence=4, seed=1).total
    shuffled = score_sequences(loaded, _shuffled(real, 2), samples_per_sequence=4, seed=1).total
    margin = 3 * math.hypot(ordered.nll_stderr, shuffled.nll_stderr)
    assert ordered.nll_per_residue + margin < shuffled.nll_per_residue
    # The evaluation report's control (paired, ratio-estimator standard error) sees it as well.
    control = shuffle_control(
        loaded, [loaded.alphabet.encode(s) for s in real], [f"p{i}" for i in range(len(real))], seed=1
    )
    assert control.difference_per_residue > 0 and control.z > 3, control.describe()
