"""Non-finite steps are skipped on the device (fused AdamW's found_inf, a masked EMA update) and
counted there; the host reads the counters at the logging cadence, never once per step.

The trainer takes that path on CUDA only (on a CPU a host sync is free); the ``device_skip``
fixture selects it on the CPU, so that it is checked here against the host path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONFIG

from protlig_dd.config import load_config
from protlig_dd.data.batch import Batch
from protlig_dd.model.ema import EMA
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training import loop
from protlig_dd.training.distributed import DistInfo
from protlig_dd.training.loop import RunOptions, Trainer, TrainingError, train
from protlig_dd.training.nonfinite import NonfiniteTracker
from protlig_dd.training.train_state import TrainState


@pytest.fixture
def device_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Select the CUDA path (skip non-finite steps on the device) whenever the optimizer is fused."""
    monkeypatch.setattr(
        loop, "skips_nonfinite_on_device", lambda optimizer, *_: bool(optimizer.defaults.get("fused"))
    )


def test_the_cpu_keeps_the_host_check(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """Without the fixture a CPU run checks on the host: there the sync is free."""
    cfg = load_config(TINY_CONFIG, tiny_overrides)
    trainer = Trainer(cfg, RunOptions(work_dir=tmp_path, device="cpu"), DistInfo(0, 1, 0, torch.device("cpu")))
    assert not trainer.defers_finite_check


def _record(tracker: NonfiniteTracker, flags: str) -> None:
    for flag in flags:  # "." finite, "x" non-finite
        tracker.record(torch.tensor(flag == "."))


def test_tracker_counts_streaks_and_carries_them_across_settles() -> None:
    """Streaks, skipped steps and the longest streak since the last settle; a streak still open at
    a settle goes on counting from its start, also after a resume from saved counters."""
    state = TrainState()
    tracker = NonfiniteTracker(torch.device("cpu"))
    _record(tracker, ".xx.xxx.x")
    assert tracker.settle(state, step=9) == 3
    assert (state.consecutive_nonfinite, state.total_nonfinite) == (1, 6)
    _record(tracker, "xx")  # the open streak of 1 grows to 3
    assert tracker.settle(state, step=11) == 3
    assert (state.consecutive_nonfinite, state.total_nonfinite) == (3, 8)
    _record(tracker, ".")
    assert tracker.settle(state, step=12) == 0
    assert (state.consecutive_nonfinite, state.total_nonfinite) == (0, 8)

    resumed = NonfiniteTracker(torch.device("cpu"))
    resumed.resume(TrainState(consecutive_nonfinite=2, total_nonfinite=5))
    _record(resumed, "x")
    saved = TrainState(consecutive_nonfinite=2, total_nonfinite=5)
    assert resumed.settle(saved, step=20) == 3
    assert (saved.consecutive_nonfinite, saved.total_nonfinite) == (3, 6)


def _adamw_with_grads(grad_value: float) -> tuple[torch.nn.Linear, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1, fused=True)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()  # some optimizer state to keep
    for param in model.parameters():
        param.grad = torch.full_like(param, grad_value)
    return model, optimizer


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for p in model.parameters()]
    for state in optimizer.state.values():
        tensors += [value.clone() for value in state.values()]
    return tensors


@pytest.mark.parametrize("skip", [True, False])
def test_fused_adamw_found_inf_skips_the_whole_update(skip: bool) -> None:
    """The torch protocol the trainer relies on: with ``found_inf`` = 1 the fused AdamW leaves the
    weights (weight decay included), the moments and the step count exactly as they were, even with
    NaN gradients; with 0 it takes a normal step."""
    model, optimizer = _adamw_with_grads(float("nan") if skip else 0.5)
    before = _snapshot(model, optimizer)
    optimizer.found_inf = torch.tensor(1.0 if skip else 0.0)
    optimizer.step()
    del optimizer.found_inf
    after = _snapshot(model, optimizer)
    unchanged = [torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert all(unchanged) if skip else not any(unchanged)


def test_masked_ema_update_keeps_or_folds_in() -> None:
    """EMA.update(applied=False) leaves the average and buffers bit for bit; applied=True equals a
    plain update() bit for bit."""
    model = torch.nn.BatchNorm1d(3)  # parameters and buffers
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    plain, masked = EMA(model, decay=0.9), EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(4.0)
        model.running_mean.fill_(7.0)
    masked.update(applied=torch.tensor(False))
    assert torch.equal(masked.shadow["weight"], torch.full((3,), 2.0))
    assert torch.equal(masked.buffers["running_mean"], torch.full((3,), 5.0))
    masked.update(applied=torch.tensor(True))
    plain.update()
    assert torch.equal(masked.shadow["weight"], plain.shadow["weight"])
    torch.testing.assert_close(masked.shadow["weight"], torch.full((3,), 2.2))
    assert torch.equal(masked.buffers["running_mean"], torch.full((3,), 7.0))


def _nan_at_calls(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> None:
    """Make score_entropy_loss return NaN at the given (1-based) calls of the training loop."""
    real = loop.score_entropy_loss
    count = {"n": 0}

    def loss(*args, **kwargs):
        count["n"] += 1
        out = real(*args, **kwargs)
        if count["n"] in calls:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(loop, "score_entropy_loss", loss)


def _final(work_dir: Path) -> tuple[dict, dict]:
    latest = ckpt.latest_checkpoint(work_dir)
    assert latest is not None
    return ckpt.load_file(latest.path / "model.pt"), ckpt.read_meta(latest.path)["train_state"]


def test_device_skip_matches_the_host_skip(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, device_skip: None
) -> None:
    """A NaN in step 3 (its first micro-batch) is skipped alike by the device path (fused AdamW,
    checked at the logging cadence) and the host path (foreach AdamW, checked every step): same
    final weights and EMA, one skipped step counted, and the run goes on."""
    overrides = [*tiny_overrides, "eval.every=0", "sampling.every=0", "training.log_every=3"]
    results = {}
    for fused in (True, False):
        _nan_at_calls(monkeypatch, {5})  # 2 micro-batches per step: call 5 is step 3's first
        cfg = load_config(TINY_CONFIG, [*overrides, f"optim.fused={str(fused).lower()}"])
        train(cfg, RunOptions(work_dir=tmp_path / str(fused), device="cpu"))
        results[fused] = _final(tmp_path / str(fused))
    (deferred, deferred_state), (host, host_state) = results[True], results[False]
    for part in ("model", "ema"):
        for name, value in deferred[part].items():
            torch.testing.assert_close(value, host[part][name], rtol=1e-4, atol=1e-6, msg=f"{part}.{name}")
    assert deferred_state["step"] == host_state["step"] == 6
    assert deferred_state["total_nonfinite"] == host_state["total_nonfinite"] == 1
    assert deferred_state["consecutive_nonfinite"] == host_state["consecutive_nonfinite"] == 0
    logged = [json.loads(line) for line in (tmp_path / "True" / "metrics.jsonl").read_text().splitlines()]
    assert [row["nonfinite_total"] for row in logged if "nonfinite_total" in row] == [1, 1]


def test_deferred_streak_stops_the_run_at_the_logging_cadence(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, device_skip: None
) -> None:
    """Every loss NaN, max_consecutive_nonfinite=3, log_every=4: the device path finds the streak at
    step 4's settle and stops with TrainingError naming the streak and the limit."""
    _nan_at_calls(monkeypatch, set(range(1, 100)))
    overrides = [*tiny_overrides, "training.log_every=4", "training.max_consecutive_nonfinite=3"]
    overrides += ["checkpoint.every=100", "eval.every=0", "sampling.every=0"]
    cfg = load_config(TINY_CONFIG, overrides)
    with pytest.raises(TrainingError, match=r"4 non-finite losses in a row by step 4 .*=3\)"):
        train(cfg, RunOptions(work_dir=tmp_path / "run", device="cpu"))


def test_train_step_does_not_sync_with_the_host(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, device_skip: None
) -> None:
    """With the fused optimizer a training step reads no tensor value on the host (no item, bool,
    float, int or tolist), so a GPU's queue never drains between steps. The batch's layout check
    reads host-side tensors before they move to the device (no sync on a GPU); on this CPU-only
    test it is answered from values computed beforehand, so that every other read shows up."""
    cfg = load_config(TINY_CONFIG, tiny_overrides)
    trainer = Trainer(cfg, RunOptions(work_dir=tmp_path, device="cpu"), DistInfo(0, 1, 0, torch.device("cpu")))
    assert trainer.defers_finite_check
    stream = iter(trainer.stream)
    steps = [[next(stream) for _ in range(trainer.grad_accum)] for _ in range(3)]
    layout = {id(batch): batch.has_padding_or_packing() for step in steps for batch in step}
    monkeypatch.setattr(Batch, "has_padding_or_packing", lambda batch: layout[id(batch)])
    reads: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    for micro_batches in steps:
        trainer.train_step(micro_batches)
    assert reads == []
    monkeypatch.undo()
    trainer._settle_nonfinite()
    assert trainer.state.step == 3 and trainer.state.total_nonfinite == 0
