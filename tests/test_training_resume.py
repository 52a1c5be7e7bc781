"""Resume equality, SIGTERM and kill -9 safety of the training application (issue 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_CONFIG

from protlig_dd.config import load_config
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training.loop import RunOptions, train


def _losses(work_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def _final_weights(work_dir: Path) -> dict[str, torch.Tensor]:
    latest = ckpt.latest_checkpoint(work_dir)
    assert latest is not None
    return ckpt.load_file(latest.path / "model.pt")


def _assert_same_weights(a: dict, b: dict) -> None:
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            torch.testing.assert_close(a[part][name], b[part][name], rtol=1e-5, atol=1e-6, msg=f"{part}.{name}")


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_resume_equals_straight_run(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """N steps straight == k steps, stop, resume, N-k steps: same losses and weights (fp32, CPU).

    Guards SEED_LESSONS item 7 (resume without EMA, RNG or data position).
    """
    cfg = load_config(TINY_CONFIG, tiny_overrides)
    train(cfg, RunOptions(work_dir=tmp_path / "straight", device="cpu"))
    train(cfg, RunOptions(work_dir=tmp_path / "split", device="cpu", stop_after_steps=3))
    first = _losses(tmp_path / "split")
    assert max(first) == 3
    train(cfg, RunOptions(work_dir=tmp_path / "split", device="cpu"))  # auto-resumes the step-3 checkpoint
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    assert sorted(straight) == sorted(split) == list(range(1, 7))
    for step in straight:
        assert straight[step] == pytest.approx(split[step], rel=1e-5, abs=1e-6), step
    _assert_same_weights(_final_weights(tmp_path / "straight"), _final_weights(tmp_path / "split"))


def test_checkpoints_hold_everything_and_load_weights_only(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """A checkpoint folder holds model, EMA, optimizer, scaler, RNG, data position, config, alphabet,
    length histogram; it loads with weights_only=True; only keep_last (+best) folders remain."""
    cfg = load_config(TINY_CONFIG, tiny_overrides)
    train(cfg, RunOptions(work_dir=tmp_path, device="cpu"))
    found = ckpt.list_checkpoints(tmp_path)
    steps = [c.step for c in found]
    assert 6 in steps and len(steps) <= cfg.checkpoint.keep_last + 1
    path = found[-1].path
    model_state = torch.load(path / "model.pt", weights_only=True)
    assert {"model", "ema"} <= set(model_state)
    train_state = torch.load(path / "train_state.pt", weights_only=True)
    assert {"optimizer", "scaler", "rng"} <= set(train_state)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 6
    assert meta["alphabet"]["residues"].startswith("ACDEFGHIKLMNPQRSTVWY")
    assert meta["data"] and meta["train_state"]["step"] == 6
    assert sum(meta["data_summary"]["length_histogram"]["counts"]) == 35809  # the embedded Swiss-Prot set
    assert "val_nll_per_residue" in meta["metrics"]
    assert (path / "config.yaml").is_file()
    assert list((tmp_path / "samples").glob("step_*.fasta"))


def _run_cli(work_dir: Path, extra: list[str], cache: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "protlig_dd.training.run_train_uniref50_optimized",
        "--work_dir",
        str(work_dir),
        "--config",
        str(TINY_CONFIG),
        "--device",
        "cpu",
        "--set",
        f"data.cache_dir={cache}",
        *extra,
    ]
    return subprocess.Popen(cmd, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(work_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = work_dir / "metrics.jsonl"
        if metrics.is_file() and any(s >= step for s in _losses(work_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("training did not reach the step in time")


def test_sigterm_saves_and_resume_matches_straight(tmp_path: Path, shared_cache_dir: Path) -> None:
    """SIGTERM mid-run saves a checkpoint and exits 143; resuming then equals an uninterrupted run."""
    steps = ["training.max_steps=40", "checkpoint.every=1000", "eval.every=0", "sampling.every=0"]
    straight = _run_cli(tmp_path / "straight", ["--set", *steps], shared_cache_dir)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    run = _run_cli(tmp_path / "split", ["--set", *steps], shared_cache_dir)
    _wait_for_step(tmp_path / "split", 3, run)
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 128 + signal.SIGTERM, output
    saved = ckpt.latest_checkpoint(tmp_path / "split")
    assert saved is not None and 3 <= saved.step < 40, output

    resumed = _run_cli(tmp_path / "split", ["--set", *steps], shared_cache_dir)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    _assert_same_weights(_final_weights(tmp_path / "straight"), _final_weights(tmp_path / "split"))
    straight_losses, split_losses = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    for step in straight_losses:
        assert straight_losses[step] == pytest.approx(split_losses[step], rel=1e-5, abs=1e-6), step


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from protlig_dd.config import load_config
    from protlig_dd.training import checkpoint as ckpt
    from protlig_dd.training.loop import RunOptions, train

    calls = {"n": 0}
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # second checkpoint, model.pt written, now in train_state.pt
            handle.write(b"partial")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, handle, *args, **kwargs)

    ckpt.torch.save = dying_save
    cfg = load_config(sys.argv[1], ["data.cache_dir=" + sys.argv[3]])
    train(cfg, RunOptions(work_dir=sys.argv[2], device="cpu"))
    """
)


def test_kill_9_during_checkpoint_write_keeps_previous(tmp_path: Path, shared_cache_dir: Path) -> None:
    """kill -9 in the middle of writing a checkpoint leaves the previous one loadable and the run resumable."""
    script = tmp_path / "die.py"
    script.write_text(KILL_DURING_SAVE)
    work = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), str(TINY_CONFIG), str(work), str(shared_cache_dir)],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p.name for p in (work / "checkpoints").iterdir()]
    assert any(name.startswith(".tmp-") for name in leftovers), leftovers
    found = ckpt.list_checkpoints(work)
    assert [c.step for c in found] == [2]
    ckpt.load_file(found[0].path / "model.pt")
    ckpt.load_file(found[0].path / "train_state.pt")

    cfg = load_config(TINY_CONFIG, [f"data.cache_dir={shared_cache_dir}"])
    train(cfg, RunOptions(work_dir=work, device="cpu"))
    assert ckpt.latest_checkpoint(work).step == 6
    assert not any(p.name.startswith(".tmp-") for p in (work / "checkpoints").iterdir())
