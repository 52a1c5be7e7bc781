"""Noise schedules: sigma_bar and its rate, masking probabilities, and the full-masking requirement."""

from __future__ import annotations

import math

import pytest
import torch

from protlig_dd.config import NoiseConfig
from protlig_dd.diffusion.noise import Cosine, Geometric, LogLinear, NoiseSchedule, build_noise

SCHEDULES = {
    "loglinear": LogLinear(1e-3),
    "geometric": Geometric(1e-4, 20.0, 1e-3),
    "cosine": Cosine(1e-3),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_rate_is_derivative_of_total(name: str) -> None:
    """rate(t) equals a central finite difference of total(t) (SEDD_MATH: sigma_bar' vs sigma_bar)."""
    noise = SCHEDULES[name]
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    h = 1e-6
    numeric = (noise.total(t + h) - noise.total(t - h)) / (2 * h)
    torch.testing.assert_close(noise.rate(t), numeric, rtol=1e-5, atol=1e-6)


def test_loglinear_mask_probability_is_linear() -> None:
    """LogLinear masks a token with probability (1 - eps) t exactly."""
    eps = 1e-3
    noise = LogLinear(eps)
    t = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    torch.testing.assert_close(noise.corruption_probability(t), (1 - eps) * t)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_reaches_near_full_masking(name: str) -> None:
    """At t = 1 every schedule masks >= 1 - eps of tokens (SEED_LESSONS 4: cosine that masked only 39%)."""
    noise = SCHEDULES[name]
    assert float(noise.corruption_probability(1.0)) >= 1 - 1e-3 - 1e-12
    # Monotone: more noise at later times, none at t = 0 for the schedules that start clean.
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    assert bool((noise.total(t).diff() > 0).all())


def test_cosine_shape() -> None:
    """Cosine mask probability is (1 - eps)(1 - cos(pi t / 2)), slower than linear early on."""
    eps = 1e-3
    noise = Cosine(eps)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    expected = (1 - eps) * (1 - torch.cos(math.pi * t / 2))
    torch.testing.assert_close(noise.corruption_probability(t), expected)
    assert float(noise.corruption_probability(0.25)) < 0.25 * (1 - eps)


def test_geometric_closed_form() -> None:
    """Geometric sigma_bar = smin^(1-t) smax^t, hitting smin at 0 and smax at 1."""
    noise = Geometric(1e-4, 20.0, 1e-3)
    torch.testing.assert_close(noise.total(0.0), torch.tensor(1e-4, dtype=torch.float64))
    torch.testing.assert_close(noise.total(1.0), torch.tensor(20.0, dtype=torch.float64))


def test_geometric_rejects_low_sigma_max() -> None:
    """A geometric schedule that cannot mask nearly everything at t = 1 is an error naming the fraction."""
    with pytest.raises(ValueError, match="corrupts only 0.3935"):
        Geometric(1e-4, 0.5, 1e-3)


def test_float32_times_stay_float32() -> None:
    """Schedules keep the dtype of float32 inputs (the loss and model run in fp32)."""
    t = torch.rand(7)
    for noise in SCHEDULES.values():
        assert noise.total(t).dtype == torch.float32
        assert noise.rate(t).dtype == torch.float32
        assert bool(torch.isfinite(noise.rate(t)).all())


@pytest.mark.parametrize("kind", ["loglinear", "geometric", "cosine"])
def test_build_noise_from_config(kind: str) -> None:
    """build_noise maps each NoiseConfig.type to its schedule and carries eps."""
    noise = build_noise(NoiseConfig(type=kind, eps=5e-4))
    assert isinstance(noise, NoiseSchedule)
    assert type(noise).__name__.lower() == kind
    assert noise.eps == 5e-4
