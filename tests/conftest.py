"""Shared fixtures: the tiny training config and a data cache shared by the whole session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The suite runs tiny models: one intra-op thread avoids oversubscription (2 cores, subprocess tests
# running beside the main process) and keeps timings steady. Benchmarks live in scripts/, not here.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = Path(__file__).resolve().parent / "tiny_config.yaml"


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared-data cache for every training test (preparation runs once)."""
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture
def tiny_overrides(shared_cache_dir: Path) -> list[str]:
    """--set overrides that point the tiny config at the shared cache."""
    return [f"data.cache_dir={shared_cache_dir}"]


def train_tiny_run(work_dir: Path, cache_dir: Path, overrides: list[str]) -> Path:
    """Train the tiny config in ``work_dir`` (CPU, seconds) with extra ``--set`` overrides."""
    from protlig_dd.config import load_config
    from protlig_dd.training.loop import RunOptions, train

    config = load_config(TINY_CONFIG, [f"data.cache_dir={cache_dir}", *overrides])
    train(config, RunOptions(work_dir=work_dir, device="cpu"))
    return work_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shared_cache_dir: Path) -> Path:
    """A run directory holding a 2-step checkpoint of the tiny config (seconds), shared by the CLI tests."""
    overrides = ["training.max_steps=2", "eval.every=0", "sampling.every=0", "checkpoint.every=2"]
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"), shared_cache_dir, overrides)
