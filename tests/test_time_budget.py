"""training.max_minutes: a wall-clock budget ends the run as max_steps would (issue 12): final
validation, samples and a checkpoint. No wall-clock assertion: the budget is far below one step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from conftest import REPO_ROOT, TINY_CONFIG

from protlig_dd.config import ConfigError, load_config
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training.loop import RunOptions, train

# 50 steps would take a while; a budget of 1e-7 minutes (6 microseconds) is used up by the first.
BUDGET = ["training.max_steps=50", "training.max_minutes=1e-7", "eval.every=0", "sampling.every=0"]


def _rows(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]


def _assert_ended_early_like_max_steps(work: Path) -> None:
    latest = ckpt.latest_checkpoint(work)
    assert latest is not None and latest.step < 50
    rows = _rows(work)
    assert max(row["step"] for row in rows) == latest.step
    # The last step got what max_steps gives: a loss row, a validation row, samples, a checkpoint
    # holding the validation metrics.
    assert any("loss" in row and row["step"] == latest.step for row in rows)
    assert [row["step"] for row in rows if "val_nll_per_residue" in row] == [latest.step]
    assert "val_nll_per_residue" in latest.meta()["metrics"]
    assert (work / "samples" / f"step_{latest.step:08d}.fasta").is_file()


def test_budget_ends_the_run_with_final_validation_and_checkpoint(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """A budget used up after the first step: the run returns normally at that step with the final
    validation metrics, a checkpoint and a sample dump, long before max_steps."""
    cfg = load_config(TINY_CONFIG, [*tiny_overrides, *BUDGET])
    metrics = train(cfg, RunOptions(work_dir=tmp_path, device="cpu"))
    assert "val_nll_per_residue" in metrics
    _assert_ended_early_like_max_steps(tmp_path)


def test_budget_must_not_be_negative() -> None:
    """training.max_minutes is a number of minutes, 0 meaning no limit; below 0 is a ConfigError."""
    assert load_config(TINY_CONFIG).training.max_minutes == 0
    with pytest.raises(ConfigError, match="training.max_minutes must be >= 0"):
        load_config(TINY_CONFIG, ["training.max_minutes=-1"])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_budget_under_torchrun_stops_every_rank_together(tmp_path: Path, shared_cache_dir: Path) -> None:
    """Under torchrun (2 processes, gloo) rank 0's clock decides and the stop flag is summed over the
    ranks: both stop after the same step, the launch exits 0, and the run ends as at max_steps."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "protlig_dd.training.run_train_uniref50_optimized", "--work_dir", str(tmp_path)]
    command += ["--config", str(TINY_CONFIG), "--device", "cpu", "--set", f"data.cache_dir={shared_cache_dir}"]
    result = subprocess.run([*command, *BUDGET], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_ended_early_like_max_steps(tmp_path)
