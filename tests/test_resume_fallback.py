"""Resuming a run whose latest checkpoint cannot be read falls back to the newest one that can
(issue 12, the third fault); ``--resume PATH`` of an unreadable checkpoint stays an error."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_CONFIG

from protlig_dd.config import load_config
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training.loop import RunOptions, train

# Checkpoints at steps 2 and 4, all kept (retention must not hide what the fallback keeps).
RUN = ["training.max_steps=4", "eval.every=0", "sampling.every=0", "checkpoint.keep_last=5"]


def _tiny_run(work: Path, cache: Path) -> tuple[Path, Path]:
    train(load_config(TINY_CONFIG, [f"data.cache_dir={cache}", *RUN]), RunOptions(work_dir=work, device="cpu"))
    root = ckpt.checkpoint_root(work)
    return root / ckpt.step_dir_name(2), root / ckpt.step_dir_name(4)


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _losses(work: Path, step: int) -> list[float]:
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row.get("step") == step and "loss" in row]


def test_truncated_latest_model_falls_back_and_deletes_nothing(
    tmp_path: Path, shared_cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated model.pt in the latest checkpoint (step 4): the run resumes from step 2 with a
    warning naming both folders, trains step 3 exactly as the first time (same loss: the step-2
    state was really loaded), and the damaged checkpoint is left as it was."""
    work = tmp_path / "run"
    step2, step4 = _tiny_run(work, shared_cache_dir)
    model = step4 / "model.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    damaged, earlier = _fingerprint(step4), _fingerprint(step2)
    cfg = load_config(TINY_CONFIG, [f"data.cache_dir={shared_cache_dir}", *RUN])
    with caplog.at_level(logging.WARNING, logger="protlig_dd.training.checkpoint"):
        train(cfg, RunOptions(work_dir=work, device="cpu", stop_after_steps=1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(step4) in w and str(step2) in w and "cannot be loaded" in w for w in warnings), warnings
    first, again = _losses(work, 3)
    assert again == pytest.approx(first, rel=1e-6)
    assert [c.step for c in ckpt.list_checkpoints(work)] == [2, 3, 4]
    assert _fingerprint(step4) == damaged and _fingerprint(step2) == earlier


def _cli(work: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "protlig_dd.training.run_train_uniref50_optimized", "--work_dir", str(work)]
    command += ["--config", str(TINY_CONFIG), "--device", "cpu", *extra, "--set", f"data.cache_dir={cache}", *RUN]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_unreadable_meta_json_explicit_resume_is_an_error_auto_resume_falls_back(
    tmp_path: Path, shared_cache_dir: Path
) -> None:
    """An unreadable meta.json in the latest checkpoint: ``--resume`` naming that checkpoint exits 2
    with a one-line error naming the file and changes nothing; resuming the run directory exits 0,
    warns naming both checkpoints and trains on from step 2."""
    work = tmp_path / "run"
    step2, step4 = _tiny_run(work, shared_cache_dir)
    (step4 / "meta.json").write_text('{"step": 4, "train_st')
    before = {p.name: _fingerprint(p) for p in ckpt.checkpoint_root(work).iterdir()}

    explicit = _cli(work, shared_cache_dir, "--resume", str(step4))
    assert explicit.returncode == 2, explicit.stderr
    assert str(step4 / "meta.json") in explicit.stderr and "Traceback" not in explicit.stderr
    assert {p.name: _fingerprint(p) for p in ckpt.checkpoint_root(work).iterdir()} == before

    auto = _cli(work, shared_cache_dir)
    assert auto.returncode == 0, auto.stderr
    warning = next(line for line in auto.stderr.splitlines() if "cannot be loaded" in line)
    assert str(step4) in warning and str(step2) in warning and "WARNING" in warning
    assert f"resumed from {step2} at step 2" in auto.stderr
    assert _losses(work, 3)[0] == pytest.approx(_losses(work, 3)[1], rel=1e-6)
    assert ckpt.read_meta(step4)["step"] == 4  # step 4 trained again and saved whole
