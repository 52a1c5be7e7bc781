"""Noise schedules: the total noise sigma_bar(t) and its rate sigma_bar'(t) for t in [0, 1].

The forward process masks (absorbing) or resamples (uniform) a token with probability
1 - exp(-sigma_bar(t)). Every sampler starts from the t = 1 limit (all MASK, or uniform
residues), so every schedule here must reach near-full corruption at t = 1: a schedule that
does not is rejected at construction (SEED_LESSONS item 4: a cosine schedule with sigma_max 0.5
masked at most 39% of tokens while the samplers started from 100% MASK).

Each schedule also carries ``eps``: training draws t ~ U[eps, 1] and sampling stops at t = eps.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Protocol

import torch

# Samplers start from the fully corrupted state: the corruption probability at t = 1 must reach this
# (less a rounding allowance: the log-linear schedule with eps = 1e-3 corrupts exactly 0.999).
MIN_FINAL_CORRUPTION = 0.999
_ROUNDING = 1e-9
NOISE_TYPES = ("loglinear", "geometric", "cosine")


class NoiseSpec(Protocol):
    """What ``build_noise`` reads (``config.NoiseConfig`` has these fields)."""

    type: str
    eps: float
    sigma_min: float
    sigma_max: float


def _as_float_tensor(t: torch.Tensor | float) -> torch.Tensor:
    """Times as a floating tensor (python floats become float64 so tests keep full precision)."""
    if not isinstance(t, torch.Tensor):
        return torch.tensor(t, dtype=torch.float64)
    return t if t.is_floating_point() else t.to(torch.float32)


class NoiseSchedule(ABC):
    """sigma_bar(t) (``total``) and sigma_bar'(t) (``rate``), elementwise on a tensor of times."""

    def __init__(self, eps: float) -> None:
        if not 0.0 < eps < 0.5:
            raise ValueError(f"noise eps must be in (0, 0.5), got {eps}")
        self.eps = float(eps)

    @abstractmethod
    def total(self, t: torch.Tensor | float) -> torch.Tensor:
        """sigma_bar(t), same shape and dtype as ``t``."""

    @abstractmethod
    def rate(self, t: torch.Tensor | float) -> torch.Tensor:
        """sigma_bar'(t) = d sigma_bar / dt, same shape and dtype as ``t``."""

    def corruption_probability(self, t: torch.Tensor | float) -> torch.Tensor:
        """1 - exp(-sigma_bar(t)): the chance that a token has been masked/resampled by time t."""
        return -torch.expm1(-self.total(t))

    def _check_final_corruption(self, name: str, fix: str) -> None:
        """Every schedule calls this from its constructor: t = 1 must corrupt (almost) everything."""
        final = float(self.corruption_probability(1.0))
        if final < MIN_FINAL_CORRUPTION - _ROUNDING:
            raise ValueError(
                f"{name} schedule corrupts only {final:.4f} of tokens at t=1 (< {MIN_FINAL_CORRUPTION}); "
                f"samplers start from the fully corrupted state: {fix}"
            )


class LogLinear(NoiseSchedule):
    """sigma_bar = -log(1 - (1-eps) t): the mask probability (1-eps) t is linear in t (SEDD default)."""

    def __init__(self, eps: float) -> None:
        super().__init__(eps)
        self._check_final_corruption("loglinear", f"use noise.eps <= {1 - MIN_FINAL_CORRUPTION:g}")

    def total(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_float_tensor(t)
        return -torch.log1p(-(1.0 - self.eps) * t)

    def rate(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_float_tensor(t)
        return (1.0 - self.eps) / (1.0 - (1.0 - self.eps) * t)


class Geometric(NoiseSchedule):
    """sigma_bar = sigma_min^(1-t) sigma_max^t (SEDD's geometric schedule)."""

    def __init__(self, sigma_min: float, sigma_max: float, eps: float) -> None:
        super().__init__(eps)
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(f"geometric noise needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._check_final_corruption("geometric", "use noise.sigma_max >= 7")

    def total(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_float_tensor(t)
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def rate(self, t: torch.Tensor | float) -> torch.Tensor:
        return self.total(t) * math.log(self.sigma_max / self.sigma_min)


class Cosine(NoiseSchedule):
    """Mask probability (1-eps)(1 - cos(pi t / 2)): slow corruption early, 1 - eps at t = 1.

    sigma_bar = -log(1 - (1-eps)(1 - cos(pi t / 2))).
    """

    def __init__(self, eps: float) -> None:
        super().__init__(eps)
        self._check_final_corruption("cosine", f"use noise.eps <= {1 - MIN_FINAL_CORRUPTION:g}")

    def total(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_float_tensor(t)
        return -torch.log1p(-(1.0 - self.eps) * (1.0 - torch.cos(0.5 * math.pi * t)))

    def rate(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_float_tensor(t)
        masked = (1.0 - self.eps) * (1.0 - torch.cos(0.5 * math.pi * t))
        return (1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t) / (1.0 - masked)


def build_noise(cfg: NoiseSpec) -> NoiseSchedule:
    """The schedule named by ``cfg.type`` (loglinear, geometric or cosine)."""
    if cfg.type == "loglinear":
        return LogLinear(cfg.eps)
    if cfg.type == "geometric":
        return Geometric(cfg.sigma_min, cfg.sigma_max, cfg.eps)
    if cfg.type == "cosine":
        return Cosine(cfg.eps)
    raise ValueError(f"noise.type must be one of {NOISE_TYPES}, got {cfg.type!r}")
