"""scripts/finetune_family_study.py on the tiny config (issue 14): the mechanics of the fine-tuning
measurement (family by GO term, split by accession, held-out members in no training set, the two
runs, paired scoring of three models, differences with standard errors and z in study.json)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
from conftest import REPO_ROOT

from protlig_dd.data.readers import SourceSpec, iter_records
from protlig_dd.training import checkpoint as ckpt

TERM = "GO:0004672"


def _script():
    spec = importlib.util.spec_from_file_location(
        "finetune_family_study", REPO_ROOT / "scripts" / "finetune_family_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_shared_data(root: Path) -> tuple[Path, Path, Path]:
    """A GO table (30 family members among 45 accessions), their sequences, and a 'general training set'
    holding 10 family members and 5 others."""
    rng = np.random.default_rng(0)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    accessions = [f"P{i:05d}" for i in range(45)]
    with gzip.open(root / "go.tsv.gz", "wt") as handle:
        handle.write("accession\tontology\tgo_terms\n")
        for i, accession in enumerate(accessions):
            terms = f"GO:0005524;{TERM}" if i < 30 else "GO:0003677"
            handle.write(f"{accession}\tmolecular_function\t{terms}\n")
            handle.write(f"{accession}\tbiological_process\tGO:0006468\n")
    with gzip.open(root / "reps.fasta.gz", "wt") as handle:
        for accession in accessions:
            handle.write(f">{accession} \n{'M' + ''.join(rng.choice(letters, size=int(rng.integers(20, 90))))}\n")
    general = root / "general.fasta"
    general.write_text("".join(f">{a}\nMKV\n" for a in accessions[:10] + accessions[40:]))
    return root / "go.tsv.gz", root / "reps.fasta.gz", general


def _ids(path: Path) -> set[str]:
    return {r.id for r in iter_records(SourceSpec(str(path), format="fasta"))}


def test_study_mechanics_on_the_tiny_config(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path, capsys) -> None:
    """Held-out members are family members outside the general training set and outside family-train;
    both runs train N steps (the fine-tuned one from the start model); study.json holds the three
    bounds and both paired differences with standard errors and z."""
    go_table, sequences, general = _fake_shared_data(tmp_path)
    out = tmp_path / "study"
    args = ["--start", str(tiny_run), "--steps", "2", "--out", str(out), "--go", TERM, "--go-table", str(go_table)]
    args += ["--sequences", str(sequences), "--exclude", str(general), "--heldout-fraction", "0.5"]
    assert _script().main([*args, "--samples-per-seq", "2", "--set", "training.grad_accum_steps=1"]) == 0
    heldout, family_train = _ids(out / "heldout.fasta"), _ids(out / "family_train.fasta")
    family = {f"P{i:05d}" for i in range(30)}
    assert heldout and heldout <= family and not heldout & _ids(general) and not heldout & family_train
    assert heldout | family_train == family
    result = json.loads((out / "study.json").read_text())
    assert result["counts"] == {
        "family_members": 30,
        "in_general_training": 10,
        "family_train": len(family_train),
        "heldout": len(heldout),
        "heldout_residues": result["counts"]["heldout_residues"],
    }
    assert set(result["models"]) == {"start", "fine-tuned", "scratch"}
    for key in ("start_minus_finetuned", "scratch_minus_finetuned"):
        assert set(result[key]) == {"difference_per_residue", "stderr", "z"} and result[key]["stderr"] > 0
    fine_tuned = ckpt.read_meta(ckpt.resolve_checkpoint(out / "finetune"))
    assert fine_tuned["train_state"]["step"] == 2 and fine_tuned["initialized_from"]["model"] == str(tiny_run)
    assert "initialized_from" not in ckpt.read_meta(ckpt.resolve_checkpoint(out / "scratch"))
    assert "start_minus_finetuned" in capsys.readouterr().out
