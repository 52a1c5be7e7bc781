"""Config loading, the shipped YAMLs, CLI errors and exit codes, launchers (issue 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, TINY_CONFIG

from protlig_dd.config import Config, ConfigError, load_config
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training import run_train_uniref50_optimized as cli
from protlig_dd.training.builders import build_model
from protlig_dd.training.loop import RunOptions, TrainingError, train
from protlig_dd.training.run_dir import RunLock, RunLockedError

SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_yaml_loads_and_builds_a_model(path: Path) -> None:
    """Every YAML in configs/ loads (no unknown keys, right types) and builds its model."""
    cfg = load_config(path)
    model = build_model(cfg, Alphabet())
    tokens = torch.randint(0, 20, (1, 16))
    out = model(tokens, torch.tensor([1.0]))
    assert out.shape == (1, 16, Alphabet().num_residues + 1)


def test_stable_config_matches_the_design() -> None:
    """config_uniref50_stable.yaml is the design's model: 768 hidden, 12 heads, 8 blocks, cond 256, L 512."""
    cfg = load_config(REPO_ROOT / "configs" / "config_uniref50_stable.yaml")
    m = cfg.model
    assert (m.hidden_size, m.num_heads, m.num_blocks, m.cond_dim, m.max_length) == (768, 12, 8, 256, 512)
    assert (cfg.graph.type, cfg.noise.type) == ("absorbing", "loglinear")
    assert cfg.training.ema_decay > 0 and cfg.optim.warmup_steps > 0 and cfg.optim.schedule == "cosine"


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    """The resolved config written into a run dir loads back to the same Config."""
    cfg = load_config(TINY_CONFIG, ["optim.lr=3e-4", "data.packing=false"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # as the trainer writes it
    assert load_config(tmp_path / "c.yaml") == cfg
    assert cfg.optim.lr == 3e-4 and cfg.data.packing is False


def test_renamed_option_is_an_error_naming_the_new_one(tmp_path: Path) -> None:
    """eval.use_ema governs sampling too, so it became eval.use_ema_for_eval_and_sampling: the old
    name in an override or a YAML file is a ConfigError naming the new one, while the config stored
    in a checkpoint written before the rename still loads (upgraded)."""
    needle = "eval.use_ema was renamed to eval.use_ema_for_eval_and_sampling"
    with pytest.raises(ConfigError, match=needle):
        load_config(TINY_CONFIG, ["eval.use_ema=false"])
    old = tmp_path / "old.yaml"
    old.write_text("eval:\n  use_ema: false\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(old)
    renamed = load_config(TINY_CONFIG, ["eval.use_ema_for_eval_and_sampling=false"])
    assert renamed.eval.use_ema_for_eval_and_sampling is False
    checkpoint = tmp_path / "step_00000001"
    checkpoint.mkdir()
    (checkpoint / "config.yaml").write_text(old.read_text())
    assert ckpt.read_config(checkpoint).eval.use_ema_for_eval_and_sampling is False


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["model.hiden_size=3"], "'hiden_size'"),
        (["modle.hidden_size=3"], "'modle'"),
        (["model.hidden_size=abc"], "model.hidden_size: expected int"),
        (["training.compile=3"], "training.compile: expected bool"),
        (["noise.type=cosinus"], "noise.type"),
        (["model.num_heads=5"], "not divisible"),
        (["model.gelu=none"], "model.gelu"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], needle: str) -> None:
    """Unknown keys, wrong types and bad values raise ConfigError naming the key."""
    with pytest.raises(ConfigError, match=None) as err:
        load_config(TINY_CONFIG, overrides)
    assert needle in str(err.value)


def test_bad_yaml_file_names_file_and_key(tmp_path: Path) -> None:
    """An unknown key inside a YAML file is reported with the file path; a missing file too."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_size: 64\n  num_heads: 4\n  dropuot: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "dropuot" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_config_key_is_read_by_the_code() -> None:
    """Each config field name appears in the package code outside config.py (SEED_LESSONS item 9)."""
    sources = "\n".join(p.read_text() for p in (REPO_ROOT / "protlig_dd").rglob("*.py") if p.name != "config.py")
    unused = []
    for section, values in Config().to_dict().items():
        for key in values:
            if f".{key}" not in sources:
                unused.append(f"{section}.{key}")
    assert not unused, f"config keys never read: {unused}"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--config", "nope.yaml"], "config file not found"),
        (["--config", str(TINY_CONFIG), "--set", "model.bogus=1"], "'bogus'"),
        (["--config", str(TINY_CONFIG), "--set", "training.max_steps=ten"], "training.max_steps"),
        (["--resume", "no/such/checkpoint"], "checkpoint not found"),
    ],
)
def test_cli_bad_input_exits_2_with_message(tmp_path: Path, args: list[str], needle: str) -> None:
    """The entry point exits 2 with a one-line error naming the problem (no traceback)."""
    proc = subprocess.run(
        [sys.executable, "-m", "protlig_dd.training.run_train_uniref50_optimized", "--work_dir", str(tmp_path), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nonfinite_losses_stop_the_run(tmp_path: Path, tiny_overrides: list[str], monkeypatch) -> None:
    """NaN losses are skipped and counted; max_consecutive_nonfinite in a row stops with TrainingError,
    and the CLI turns that into exit code 1."""
    from protlig_dd.training import loop

    real = loop.score_entropy_loss

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(loop, "score_entropy_loss", nan_loss)
    cfg = load_config(TINY_CONFIG, [*tiny_overrides, "training.max_consecutive_nonfinite=3"])
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        train(cfg, RunOptions(work_dir=tmp_path / "a", device="cpu"))
    code = cli.main(
        ["--work_dir", str(tmp_path / "b"), "--config", str(TINY_CONFIG), "--device", "cpu", "--set", *tiny_overrides]
    )
    assert code == 1


def test_lock_stops_a_second_run(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """A second training process in the same work_dir is refused while the first holds the lock."""
    with RunLock(tmp_path):
        cfg = load_config(TINY_CONFIG, tiny_overrides)
        with pytest.raises(RunLockedError, match="another training run"):
            train(cfg, RunOptions(work_dir=tmp_path, device="cpu"))


def test_fresh_moves_the_earlier_run_aside(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """--fresh never deletes: the earlier run's checkpoints and metrics move to archived_runs/."""
    cfg = load_config(TINY_CONFIG, [*tiny_overrides, "training.max_steps=2"])
    train(cfg, RunOptions(work_dir=tmp_path, device="cpu"))
    first_metrics = (tmp_path / "metrics.jsonl").read_text()
    train(cfg, RunOptions(work_dir=tmp_path, device="cpu", mode="fresh"))
    archived = list((tmp_path / "archived_runs").iterdir())
    assert len(archived) == 1
    assert (archived[0] / "metrics.jsonl").read_text() == first_metrics
    assert (archived[0] / "checkpoints" / "step_00000002" / "model.pt").is_file()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]


@pytest.mark.parametrize("script", ["start_fresh_training.sh", "run_train_uniref50_optimized.sh"])
def test_launchers_return_the_training_exit_code(tmp_path: Path, script: str, shared_cache_dir: Path) -> None:
    """Launchers create their log folder, pass arguments through, and fail when training fails."""
    env = {**_env(), "LOG_DIR": str(tmp_path / "logs"), "PYTHON": sys.executable}

    def launch(*args: str, timeout: int) -> subprocess.CompletedProcess:
        command = ["bash", str(REPO_ROOT / script), "--work_dir", str(tmp_path / "w"), "--config", str(TINY_CONFIG)]
        return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)

    bad = launch("--set", "model.bogus=1", timeout=120)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert list((tmp_path / "logs").glob("*.log"))
    good = launch("--device", "cpu", "--set", f"data.cache_dir={shared_cache_dir}", "training.max_steps=2", timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr
    assert (tmp_path / "w" / "checkpoints" / "step_00000002").is_dir()


def test_training_reads_a_cache_made_by_prepare(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """A cache directory written by `python -m protlig_dd.data.prepare` works as --datafile (no re-tokenising)."""
    from protlig_dd.data.pipeline import EMBEDDED_TRAIN_COUNTS  # noqa: F401  (the embedded data exists)

    source = REPO_ROOT / "protlig_dd" / "data" / "embedded" / "x001.csv"
    prepared = tmp_path / "prepared"
    proc = subprocess.run(
        [sys.executable, "-m", "protlig_dd.data.prepare", "--source", str(source), "--out", str(prepared)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(
        TINY_CONFIG,
        [*tiny_overrides, f"data.source={prepared}", "data.validation_fraction=0.1", "training.max_steps=2"],
    )
    train(cfg, RunOptions(work_dir=tmp_path / "run", device="cpu"))
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step_00000002" / "meta.json").read_text())
    assert meta["data_summary"]["caches"]["train"] == str(prepared)
    assert meta["data_summary"]["num_train"] + meta["data_summary"]["num_validation"] == 498
