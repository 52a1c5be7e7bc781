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
