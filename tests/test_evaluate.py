"""The evaluation report end to end on a tiny trained run (issue 5): report.json, report.md, plots."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, train_tiny_run

from protlig_dd import evaluate, sample
from protlig_dd.evaluation.report import EvaluationOptions, training_reference
from protlig_dd.inference import load_model
from protlig_dd.training import checkpoint as ckpt

HELD_OUT = {
    "ubiquitin": "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
    "insulin": "MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRREAEDLQVGQVELGGGPGAGSLQPLALEG"
    "SLQKRGIVEQCCTSICSLYQLENYCN",
    "lysozyme": "KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSRNLCNIPCSALL"
    "SSDITASVNCAKKIVSDGNGMNAWVAWRNRCKGTDVQAWIRGCRL",
    "polyq": "MATLEKLMKAFESLKSF" + "Q" * 30 + "PPPPPPPPPPPQLPQPPPQAQPLLPQPQPPPPPPPPPPGPAVAEEPLHRP",
}
PLOTS = ("perplexity.png", "composition.png", "lengths.png", "identity.png", "training_curves.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shared_cache_dir: Path) -> Path:
    """A tiny run with two validations in metrics.jsonl and a final checkpoint (seconds)."""
    overrides = [
        "training.max_steps=4",
        "eval.every=2",
        "eval.num_sequences=4",
        "sampling.every=0",
        "checkpoint.every=4",
    ]
    return train_tiny_run(tmp_path_factory.mktemp("evaluate_run"), shared_cache_dir, overrides)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("held_out") / "held_out.fasta"
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in HELD_OUT.items()))
    return path


def _evaluate(checkpoint: Path, out: Path, *extra: str) -> int:
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", "--precision", "fp32"]
    return evaluate.main([*args, "--steps", "4", *extra])


@pytest.fixture(scope="module")
def report_dir(tiny_run: Path, held_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full evaluation (generating 6 samples), shared by the report tests."""
    out = tmp_path_factory.mktemp("report")
    assert _evaluate(tiny_run, out, "--data", str(held_out), "--num-samples", "6") == 0
    return out


def test_report_json_holds_every_metric(report_dir: Path) -> None:
    """report.json has the validation bound with both baselines, and for the samples: composition KL
    vs data, training unigram and EvoDiff UniRef50, lengths, diversity, novelty, low-complexity and
    homopolymer runs (samples and data), and the training curves."""
    report = json.loads((report_dir / "report.json").read_text())
    val = report["validation"]
    for key in ("nll_per_residue", "nll_stderr", "ppl_bound", "ppl_stderr", "num_sequences", "num_residues"):
        assert isinstance(val[key], (int, float)) and math.isfinite(val[key]), key
    assert val["num_sequences"] == len(HELD_OUT) and val["num_residues"] == sum(map(len, HELD_OUT.values()))
    assert val["ppl_bound"] == pytest.approx(math.exp(val["nll_per_residue"]))
    assert val["baselines"]["uniform_20_ppl"] == 20.0 and 10 < val["baselines"]["train_unigram_ppl"] < 30
    assert "O(eps)" in val["note"] and "windows" in val["windows"]
    control = val["shuffle_control"]
    assert control["computed"] and control["num_sequences"] == len(HELD_OUT)
    assert control["real_nll_per_residue"] == pytest.approx(val["nll_per_residue"])  # the same draws
    assert control["difference_per_residue"] == pytest.approx(
        control["shuffled_nll_per_residue"] - control["real_nll_per_residue"]
    )
    assert control["difference_stderr"] > 0 and math.isfinite(control["z"])
    assert "shuffle_control" in report["definitions"]
    samples = report["samples"]
    assert samples["num_sequences"] == 6
    composition = samples["composition"]
    for key in ("kl_samples_vs_data", "kl_samples_vs_train_unigram", "kl_samples_vs_evodiff_uniref50"):
        assert composition[key] >= 0 or composition[key] == "inf", key
    assert set(composition["frequencies"]) == {
        "samples",
        "held-out data",
        "training unigram",
        "EvoDiff UniRef50 test",
    }
    for name in ("samples", "data"):
        assert samples["length"][name]["mean"] > 0
        assert 0 <= samples["diversity"][name]["mean_pairwise_identity"] <= 1
        assert 0 <= samples["novelty"][name]["mean"] <= samples["novelty"][name]["max"] <= 1
        assert 0 <= samples["complexity"][name]["low_complexity_fraction"] <= 1
        assert samples["complexity"][name]["max_homopolymer_max"] >= 1
    assert samples["complexity"]["data"]["max_homopolymer_max"] == 30  # the poly-Q stretch
    assert samples["complexity"]["data"]["low_complexity_fraction"] > 0.2
    assert "embedded training set swissprot50 (first 35809 sequences)" == samples["novelty"]["reference"]
    training = report["training"]
    assert training["available"] and training["loss"]["step"] == [1, 2, 3, 4]
    assert training["validation_ppl_bound"]["step"] == [2, 4]
    assert "approximate" in report["definitions"]["novelty"]
    assert "approximate" in report["definitions"]["low_complexity_fraction"]


def test_nothing_is_labelled_a_structure_metric(report_dir: Path) -> None:
    """No pLDDT or structure score is reported (SEED_LESSONS item 11): no structure model was run."""
    text = (report_dir / "report.json").read_text().lower()
    assert "plddt" not in text and "foldab" not in text
    assert "No structure metric is reported" in (report_dir / "report.md").read_text()


def test_plots_are_written_and_non_empty(report_dir: Path) -> None:
    """Every plot named in the report is a non-trivial PNG, and report.md embeds them."""
    report = json.loads((report_dir / "report.json").read_text())
    assert sorted(report["plots"]) == sorted(PLOTS)
    markdown = (report_dir / "report.md").read_text()
    for name in PLOTS:
        data = (report_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"({name})" in markdown
    assert (report_dir / "samples.fasta").is_file()


def test_given_samples_and_a_lone_checkpoint_folder(
    tiny_run: Path, held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--samples is evaluated as given (nothing generated); a checkpoint folder copied out of its run
    still evaluates, saying the training curves are not available instead of failing."""
    samples = tmp_path / "samples.fasta"
    args = ["--checkpoint", str(tiny_run), "--out", str(samples), "--device", "cpu", "--precision", "fp32"]
    assert sample.main([*args, "--num", "3", "--length", "30", "--steps", "4"]) == 0
    lone = tmp_path / "elsewhere" / "step_00000004"
    shutil.copytree(ckpt.resolve_checkpoint(tiny_run), lone)
    out = tmp_path / "report"
    assert _evaluate(lone, out, "--data", str(held_out), "--samples", str(samples)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["samples_source"] == str(samples) and report["samples"]["num_sequences"] == 3
    assert report["samples"]["length"]["samples"]["mean"] == 30.0
    assert not (out / "samples.fasta").exists()
    assert not report["training"]["available"] and "metrics.jsonl" in report["training"]["reason"]
    assert "training_curves.png" not in report["plots"]
    assert "perplexity bound" in capsys.readouterr().out


def test_default_data_is_the_embedded_validation_sample(tiny_run: Path, tmp_path: Path) -> None:
    """Without --data the held-out set is the embedded random UniRef50 validation sample;
    --no-shuffle-control skips the control and the report says so."""
    out = tmp_path / "report"
    args = ("--max-data-sequences", "5", "--num-samples", "3", "--no-shuffle-control")
    assert _evaluate(tiny_run, out, *args) == 0
    validation = json.loads((out / "report.json").read_text())["validation"]
    assert validation["num_sequences"] == 5 and "embedded UniRef50 validation" in validation["data"]
    assert validation["shuffle_control"] == {"computed": False, "reason": "switched off (--no-shuffle-control)"}
    assert "Shuffled control: not computed" in (out / "report.md").read_text()


def test_novelty_reference_from_a_prepared_cache(tiny_run: Path, shared_cache_dir: Path) -> None:
    """--train-data may be a prepared cache directory: it gives the same sequences as the FASTA it was
    made from (the run's default reference)."""
    loaded = load_model(tiny_run, device="cpu", precision="fp32")
    (cache,) = sorted(shared_cache_dir.glob("train-swissprot50_train*"))  # the tiny run's (default) training data
    from_cache = training_reference(
        loaded, EvaluationOptions(train_data=str(cache), max_reference_sequences=50)
    )
    default = training_reference(loaded, EvaluationOptions(max_reference_sequences=50))
    assert from_cache[1] == default[1] and len(default[1]) == 50
    assert "first 50 sequences" in from_cache[0]


@pytest.mark.parametrize("which", ["checkpoint", "data", "samples"])
def test_bad_inputs_exit_2_with_one_line(
    tiny_run: Path, held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    """A missing checkpoint, a malformed --data FASTA or a missing --samples file: exit 2, one line."""
    bad = tmp_path / "bad.fasta"
    bad.write_text("MKT\n>x\nMK\n")
    checkpoint = tmp_path / "none" if which == "checkpoint" else tiny_run
    extra = {
        "checkpoint": [],
        "data": ["--data", str(bad)],
        "samples": ["--samples", str(tmp_path / "no.fa")],
    }
    assert _evaluate(checkpoint, tmp_path / "report", *extra[which]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    expected = {"checkpoint": "checkpoint not found", "data": "line 1", "samples": "file not found"}[which]
    assert len(err) == 1 and expected in err[0]


def test_module_entry_point_errors_without_traceback(tmp_path: Path) -> None:
    """`python -m protlig_dd.evaluate` with a missing checkpoint exits 2 with one stderr line."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "protlig_dd.evaluate", "--checkpoint", str(tmp_path / "none")]
    result = subprocess.run([*command, "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith(
        "error: checkpoint not found"
    )
