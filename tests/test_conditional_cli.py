"""Label-conditioned training, sampling, scoring and evaluation end to end on the tiny config.

The training data here is synthetic (random residues with made-up labels L1..L3, said so in each
file); the real GO labels shipped with the package are loaded by the last test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG

from protlig_dd import evaluate, sample, score
from protlig_dd.config import load_config
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training import run_train_uniref50_optimized as entry
from protlig_dd.training.loop import RunOptions, train

RESIDUES = Alphabet().residues[:20]


def _write_labelled_data(folder: Path, count: int = 160) -> tuple[Path, Path]:
    """Synthetic FASTA plus a label table: label L1 sequences are rich in L/I/V, L2 in K/E, L3 mixed."""
    rng = np.random.default_rng(0)
    fasta, table = folder / "synthetic.fasta.gz", folder / "synthetic_labels.tsv"
    rows = ["id\tlabels"]
    with gzip.open(fasta, "wt") as handle:
        handle.write("")
        for i in range(count):
            label = ("L1", "L2", "L3")[i % 3]
            letters = {"L1": "LIVLIVA", "L2": "KEKEKRD", "L3": RESIDUES}[label]
            seq = "".join(rng.choice(list(letters), int(rng.integers(20, 60))))
            handle.write(f">S{i:04d} synthetic\n{seq}\n")
            rows.append(f"S{i:04d}\t{label};all")
    table.write_text("\n".join(rows) + "\n")
    # A synthetic term graph: L1 and L2 are kinds of P1, L3 of P2 (child, parent, distance, relation).
    graph = "child\tparent\tdistance\trelation\nL1\tP1\t1\tis_a\nL2\tP1\t1\tis_a\nL3\tP2\t1\tis_a\n"
    (folder / "synthetic_graph.tsv").write_text(graph)
    return fasta, table


def _overrides(folder: Path, fasta: Path, table: Path) -> list[str]:
    return [
        f"data.source={fasta}",
        "data.validation_fraction=0.2",
        f"data.cache_dir={folder / 'cache'}",
        f"labels.source={table}",
        f"labels.term_graph={table.parent / 'synthetic_graph.tsv'}",
        "labels.add_ancestors=true",
        "labels.min_count=1",
        "labels.p_uncond=0.25",
        "training.max_steps=6",
        "model.time_conditioning=false",
    ]


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("labelled")
    fasta, table = _write_labelled_data(folder)
    cfg = load_config(TINY_CONFIG, _overrides(folder, fasta, table))
    train(cfg, RunOptions(work_dir=folder / "run", device="cpu"))
    return folder / "run", fasta, table


def test_checkpoints_carry_the_vocabulary_and_resume_equals_a_straight_run(
    labelled_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    run, fasta, table = labelled_run
    meta = ckpt.read_meta(ckpt.latest_checkpoint(run).path)
    labels = meta["data_summary"]["labels"]
    assert set(labels["terms"]) == {"L1", "L2", "L3", "all", "P1", "P2"}
    assert labels["ancestors"]["L1"] == ["P1"] and labels["ancestors"]["all"] == []
    cfg = load_config(TINY_CONFIG, _overrides(tmp_path, fasta, table))
    train(cfg, RunOptions(work_dir=tmp_path / "split", device="cpu", stop_after_steps=3))
    train(cfg, RunOptions(work_dir=tmp_path / "split", device="cpu"))  # resumes with the stored vocabulary
    straight = ckpt.load_file(ckpt.latest_checkpoint(run).path / "model.pt")
    split = ckpt.load_file(ckpt.latest_checkpoint(tmp_path / "split").path / "model.pt")
    for name, tensor in straight["model"].items():
        torch.testing.assert_close(split["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert (
        ckpt.read_meta(ckpt.latest_checkpoint(tmp_path / "split").path)["data_summary"]["labels"]
        == meta["data_summary"]["labels"]
    )


def test_guided_sampling_cli_records_labels_and_repeats_with_a_seed(
    labelled_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    run = labelled_run[0]
    common = ["--checkpoint", str(run), "--num", "3", "--length", "20", "--steps", "6", "--seed", "5"]
    for name in ("a", "b"):
        args = [*common, "--label", "L1", "--guidance", "1.5", "--guidance-schedule", "late"]
        assert sample.main([*args, "--out", str(tmp_path / f"{name}.fasta")]) == 0
    text = (tmp_path / "a.fasta").read_text()
    assert text == (tmp_path / "b.fasta").read_text()
    assert "labels=L1 label_set_size=2 guidance=1.5 guidance_schedule=late" in text.splitlines()[0]
    assert sample.main([*common, "--out", str(tmp_path / "u.fasta")]) == 0
    assert sample.main([*common, "--guidance", "0", "--out", str(tmp_path / "u0.fasta")]) == 0
    strip = lambda p: [line for line in p.read_text().splitlines() if not line.startswith(">")]  # noqa: E731
    assert strip(tmp_path / "u.fasta") == strip(tmp_path / "u0.fasta")


def test_bad_label_requests_exit_2_naming_the_label_or_checkpoint(
    labelled_run: tuple[Path, Path, Path], tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = labelled_run[0]
    out = str(tmp_path / "x.fasta")
    assert sample.main(["--checkpoint", str(run), "--num", "1", "--label", "L4", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: unknown label 'L4'") and "known labels: " in err and "L1" in err and "\n" not in err
    )
    assert sample.main(["--checkpoint", str(run), "--num", "1", "--guidance", "2", "--out", out]) == 2
    assert "--guidance needs at least one --label" in capsys.readouterr().err
    assert sample.main(["--checkpoint", str(tiny_run), "--num", "1", "--label", "L1", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained without labels" in err and "checkpoints" in err and "\n" not in err


def test_conditional_scoring_cli(labelled_run: tuple[Path, Path, Path], tmp_path: Path, capsys) -> None:
    run, fasta, table = labelled_run
    out = tmp_path / "scores.csv"
    base = ["--checkpoint", str(run), "--fasta", str(fasta), "--samples-per-seq", "2"]
    assert score.main([*base, "--label", "L2", "--out", str(out)]) == 0
    assert "every sequence scored under L2" in json.loads((tmp_path / "scores.summary.json").read_text())["labels"]
    assert score.main([*base, "--labels-from", str(table), "--out", str(out)]) == 0
    assert "160 of 160 with known labels" in capsys.readouterr().out
    stranger = tmp_path / "stranger.tsv"
    stranger.write_text("id\tlabels\nQ1\tL1\n")
    assert score.main([*base, "--labels-from", str(stranger), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stranger.tsv: no id matches a sequence" in err


def test_training_with_a_label_file_matching_no_sequence_exits_2(tmp_path: Path, capsys) -> None:
    fasta, _ = _write_labelled_data(tmp_path, count=30)
    stranger = tmp_path / "stranger.tsv"
    stranger.write_text("id\tlabels\nQ1\tL1\n")
    overrides = [f"data.source={fasta}", f"data.cache_dir={tmp_path / 'cache'}", f"labels.source={stranger}"]
    args = ["--work_dir", str(tmp_path / "run"), "--config", str(TINY_CONFIG), "--device", "cpu"]
    code = entry.main([*args, *[x for o in overrides for x in ("--set", o)]])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "stranger.tsv" in err and "no id" in err


def test_evaluation_report_has_the_label_section(labelled_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, fasta, table = labelled_run
    args = [
        "--checkpoint",
        str(run),
        "--out",
        str(tmp_path / "report"),
        "--num-samples",
        "4",
        "--steps",
        "4",
        "--max-data-sequences",
        "8",
        "--no-shuffle-control",
        "--labelled-data",
        str(fasta),
        "--labels-from",
        str(table),
        "--max-labelled-sequences",
        "12",
        "--signature-label",
        "L1",
        "--guidance",
        "1",
    ]
    assert evaluate.main(args) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    control = report["conditional"]["label_control"]
    assert control["num_sequences"] == 12 and "other_minus_own_z" in control
    table_rows = report["conditional"]["signatures"][0]["table"]
    assert set(table_rows) == {"unconditional", "L1 W=1", "real members", "real members, length-matched"}
    assert "## Label conditioning" in (tmp_path / "report" / "report.md").read_text()


def test_the_go_conditional_config_reads_the_shipped_labels(tmp_path: Path) -> None:
    """The real embedded GO labels (UniProt, shipped with the package) load without ../shared."""
    from protlig_dd.data.label_pipeline import read_labels

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "config_go_conditional_cpu.yaml")
    labels = read_labels(cfg.labels, cfg.labels.source, [])
    assert len(labels) == 35809
    with_membrane = [names for names in labels.values() if "GO:0016021" in names]
    assert len(with_membrane) > 1000
    assert all("GO:0016020" in names and "GO:0005575" in names for names in with_membrane)  # ancestors added
