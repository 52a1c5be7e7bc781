"""EMA of weights: closed form, swap-in/restore, checkpoint round trip."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from protlig_dd.model.ema import EMA


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("counter", torch.zeros(1))


def test_closed_form_after_k_updates() -> None:
    """Guards the update rule: with params held at c after starting from p0, the shadow after k
    updates equals c + decay^k (p0 - c), kept in float32."""
    torch.manual_seed(0)
    model = TinyModel()
    p0 = {name: p.detach().clone() for name, p in model.named_parameters()}
    decay, k = 0.9, 7
    ema = EMA(model, decay)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.5)
    for _ in range(k):
        ema.update()
    assert ema.num_updates == k
    for name, shadow in ema.shadow.items():
        assert shadow.dtype == torch.float32
        expected = 2.5 + decay**k * (p0[name] - 2.5)
        torch.testing.assert_close(shadow, expected, rtol=1e-6, atol=1e-6)


def test_bf16_model_gets_fp32_shadow() -> None:
    """Guards the fp32 shadow: a bf16 model's small updates are not rounded away in the average."""
    model = nn.Linear(4, 4).to(torch.bfloat16)
    ema = EMA(model, 0.999)
    before = {name: s.clone() for name, s in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    for name, shadow in ema.shadow.items():
        assert shadow.dtype == torch.float32
        torch.testing.assert_close(
            shadow - before[name], torch.full_like(shadow, 0.001), rtol=1e-3, atol=1e-5
        )


def test_buffers_are_copied_not_averaged() -> None:
    """Guards buffer handling: after update the EMA holds the model's latest buffer values."""
    model = TinyModel()
    ema = EMA(model, 0.9)
    model.counter.fill_(5.0)
    ema.update()
    assert ema.buffers["counter"].item() == 5.0


def test_applied_to_swaps_in_and_restores() -> None:
    """Guards evaluation with EMA weights: inside the context the model holds the EMA weights,
    afterwards the live (training) weights are back, also when the block raises."""
    torch.manual_seed(1)
    model = TinyModel()
    ema = EMA(model, 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(10.0)
    ema.update()
    live = {name: p.detach().clone() for name, p in model.named_parameters()}
    with ema.applied_to(model):
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), ema.shadow[name])
            assert not torch.equal(p.detach(), live[name])
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), live[name])
    with pytest.raises(RuntimeError, match="boom"), ema.applied_to(model):
        raise RuntimeError("boom")
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), live[name])


def test_copy_to_overwrites_model() -> None:
    """Guards copy_to: a second model receives the EMA weights (e.g. for sampling/export)."""
    torch.manual_seed(2)
    model = TinyModel()
    ema = EMA(model, 0.0)  # decay 0: the shadow follows the params exactly
    with torch.no_grad():
        model.linear.weight.mul_(3.0)
    ema.update()
    other = TinyModel()
    ema.copy_to(other)
    torch.testing.assert_close(other.linear.weight, model.linear.weight)


def test_state_dict_round_trip_weights_only() -> None:
    """Guards resume: the EMA state saves as plain tensors, loads with weights_only=True and restores
    the shadow and update count exactly."""
    torch.manual_seed(3)
    model = TinyModel()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)
    ema.update()
    ema.update()
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = EMA(TinyModel(), 0.9)
    fresh.load_state_dict(state)
    assert fresh.num_updates == 2
    for name, shadow in ema.shadow.items():
        assert torch.equal(fresh.shadow[name], shadow)
    # inference loads the EMA weights straight into a model
    inference = TinyModel()
    inference.load_state_dict(EMA.model_state_dict(state))
    torch.testing.assert_close(inference.linear.weight, ema.shadow["linear.weight"])
    # the state dict is a copy, not a live view of the shadow
    state["shadow"]["linear.bias"].fill_(123.0)
    assert not (fresh.shadow["linear.bias"] == 123.0).any()


def test_mismatched_state_or_model_raises() -> None:
    """Guards against half-loaded EMAs: wrong names or shapes raise ValueError naming the key."""
    ema = EMA(TinyModel(), 0.9)
    state = ema.state_dict()
    state["shadow"]["linear.weight"] = torch.zeros(5, 5)
    with pytest.raises(ValueError, match="linear.weight"):
        ema.load_state_dict(state)
    state = ema.state_dict()
    del state["shadow"]["linear.bias"]
    with pytest.raises(ValueError, match="linear.bias"):
        ema.load_state_dict(state)
    with pytest.raises(ValueError, match="does not match"):
        ema.copy_to(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="decay"):
        EMA(TinyModel(), 1.0)


def _held_at(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_warmup_follows_min_decay_formula() -> None:
    """Guards the EMA warm-up (issue 12, hazard 4): update n (0-based) uses the effective decay
    d_n = min(decay, (1 + n) / (10 + n)), so with params held at c the shadow after k updates is
    c + prod d_n (p0 - c). With decay 0.9 the warm-up rules until n = 80, the constant after: 100
    updates cover both. The first update already moves 90% of the way (d_0 = 0.1)."""
    torch.manual_seed(4)
    model = TinyModel()
    p0 = {name: p.detach().clone() for name, p in model.named_parameters()}
    decay = 0.9
    ema = EMA(model, decay, warmup=True)
    _held_at(model, 2.5)
    ema.update()
    for name, shadow in ema.shadow.items():
        torch.testing.assert_close(shadow, 2.5 + 0.1 * (p0[name] - 2.5))
    factor = 0.1
    for n in range(1, 100):
        ema.update()
        factor *= min(decay, (1 + n) / (10 + n))
    assert ema.num_updates == 100
    for name, shadow in ema.shadow.items():
        torch.testing.assert_close(shadow, 2.5 + factor * (p0[name] - 2.5), rtol=1e-6, atol=1e-6)


def test_warmup_device_path_skips_and_matches_the_host_path() -> None:
    """The masked (device-side) update with the warm-up: a skipped step changes nothing and does not
    advance n; applied steps match the plain update; a resumed EMA continues the warm-up from the
    saved count."""
    torch.manual_seed(5)
    model = TinyModel()
    plain, masked = EMA(model, 0.99, warmup=True), EMA(model, 0.99, warmup=True)
    for step in range(6):
        _held_at(model, float(step))
        masked.update(applied=torch.tensor(False))  # skipped: n stays
        masked.update(applied=torch.tensor(True))
        plain.update()
    assert masked.num_updates == plain.num_updates == 6
    for name, shadow in plain.shadow.items():
        torch.testing.assert_close(masked.shadow[name], shadow, rtol=1e-6, atol=1e-7)
    other = TinyModel()
    resumed = EMA(other, 0.99, warmup=True)
    resumed.load_state_dict(plain.state_dict())
    _held_at(model, 7.0)
    _held_at(other, 7.0)
    plain.update()
    resumed.update()
    for name, shadow in plain.shadow.items():
        torch.testing.assert_close(resumed.shadow[name], shadow)
