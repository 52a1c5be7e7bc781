"""Exponential moving average of model weights, kept in float32.

shadow <- d * shadow + (1 - d) * param after every applied optimizer step. Buffers are not
averaged: the latest ones are copied. The EMA weights are what validation and sampling during
training use (``eval.use_ema_for_eval_and_sampling``) and what inference loads; ``applied_to``
swaps them in temporarily.

Warm-up (``warmup=True``, what the trainer uses): d = min(decay, (1 + n) / (10 + n)) with n the
number of updates folded in so far, as in TensorFlow's ExponentialMovingAverage(num_updates) and
timm's ModelEmaV2 warm-up. A constant decay of 0.9999 leaves the average mostly at the initial
weights for the first ~10,000 steps (their weight after k steps is decay^k), so early validation
and samples would measure the initialisation; with the warm-up the average follows the live
weights at first (d = 0.1 at the first update, 0.5 at n = 8, 0.9 at n = 80) and settles at
``decay`` once n >= (10 * decay - 1) / (1 - decay) (about 90,000 updates for 0.9999, 1,790 for
0.995). ``warmup=False`` is the constant decay of SEDD.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


class EMA:
    """fp32 shadow copies of ``model``'s parameters (by name), updated with ``update()``.

    The parameters are tracked by reference, so wrapping the model later (DDP keeps the same
    parameter objects) does not break ``update()``. ``copy_to``/``applied_to`` match by name and
    take the unwrapped model. Build it after the model is on its device: the shadow lives on the
    parameters' device. ``state_dict()`` is {"decay", "num_updates", "shadow": {name: fp32 tensor},
    "buffers": {name: tensor}}.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup  # effective decay min(decay, (1 + n) / (10 + n)); see the module doc
        named = list(model.named_parameters())
        # Applied updates, counted on the parameters' device so that a masked update needs no sync.
        self._num_updates = torch.zeros((), dtype=torch.int64, device=named[0][1].device if named else "cpu")
        self._host_updates: int | None = 0  # the same count on the host, while it is known there
        self._names = [name for name, _ in named]
        self._params = [param for _, param in named]
        self.shadow: dict[str, torch.Tensor] = {name: param.detach().float().clone() for name, param in named}
        self.buffers: dict[str, torch.Tensor] = {
            name: buf.detach().clone() for name, buf in model.named_buffers()
        }
        self._model_buffers = dict(model.named_buffers())

    @torch.no_grad()
    def update(self, applied: torch.Tensor | None = None) -> None:
        """Fold the current parameters into the average; call after each optimizer step.

        ``applied``: a 0-d bool tensor on the parameters' device saying whether the optimizer step
        was applied; when False the average and buffers stay as they are. It lets a skipped step be
        decided on the device, without a host sync. ``num_updates`` counts applied updates only.
        """
        shadows = [self.shadow[name] for name in self._names]
        # Params may be bf16 (or fp32, then .float() is the same tensor): average in fp32.
        params = [param.detach().float() for param in self._params]
        if shadows and applied is None:
            # lerp: s + w * (p - s) == (1 - w) * s + w * p, with w = 1 - d
            torch._foreach_lerp_(shadows, params, self._host_weight())
        elif shadows:
            # The same lerp with a device weight w * applied: 0 leaves the shadow as it is (params
            # are finite: skipped steps never change them).
            torch._foreach_lerp_(shadows, params, [self._device_weight(applied)] * len(shadows))
        for name, buf in self._model_buffers.items():
            target = self.buffers[name]
            target.copy_(buf if applied is None else torch.where(applied, buf, target))
        self._num_updates += 1 if applied is None else applied.long()
        # Known on the host only while every update was a plain one (a masked one may be skipped).
        self._host_updates = self._host_updates + 1 if applied is None and self._host_updates is not None else None

    def _host_weight(self) -> float:
        """1 - d as a number: 1 - decay, or with the warm-up max(1 - decay, 9 / (10 + n))."""
        if not self.warmup:
            return 1.0 - self.decay
        # Plain updates keep n on the host, so this costs no sync (FSDP's DTensor shadows need a number).
        updates = self._host_updates if self._host_updates is not None else self.num_updates
        return max(1.0 - self.decay, 9.0 / (10.0 + updates))

    def _device_weight(self, applied: torch.Tensor) -> torch.Tensor:
        """(1 - d) * applied as a 0-d device tensor, n read on the device (no host sync)."""
        if not self.warmup:
            return applied.float() * (1.0 - self.decay)
        warm = torch.clamp(9.0 / (10.0 + self._num_updates.float()), min=1.0 - self.decay)
        return warm * applied.float()

    @property
    def num_updates(self) -> int:
        """How many updates were folded into the average (reading it syncs with the device)."""
        return int(self._num_updates)

    def _check_names(self, model: nn.Module) -> None:
        names = {name for name, _ in model.named_parameters()}
        missing, unexpected = sorted(set(self.shadow) - names), sorted(names - set(self.shadow))
        if missing or unexpected:
            raise ValueError(
                f"EMA does not match the model: EMA-only parameters {missing[:5]}, "
                f"model-only {unexpected[:5]}"
            )

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters with the EMA weights and its buffers with the EMA's copies."""
        self._check_names(model)
        for name, param in model.named_parameters():
            param.copy_(self.shadow[name])
        for name, buf in model.named_buffers():
            if name in self.buffers:
                buf.copy_(self.buffers[name])

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Swap the EMA weights into ``model`` for the block; the live weights come back on exit,
        also when the block raises."""
        self._check_names(model)
        with torch.no_grad():
            saved_params = {name: param.detach().clone() for name, param in model.named_parameters()}
            saved_buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.copy_(saved_params[name])
                for name, buf in model.named_buffers():
                    buf.copy_(saved_buffers[name])

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers only, so ``torch.load(weights_only=True)`` reads it."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {name: tensor.clone() for name, tensor in self.shadow.items()},
            "buffers": {name: tensor.clone() for name, tensor in self.buffers.items()},
        }

    @staticmethod
    def model_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The model weights held by a saved EMA ``state_dict`` (shadow parameters plus buffers),
        ready for ``model.load_state_dict`` at inference without building an EMA object."""
        for key in ("shadow", "buffers"):
            if key not in state:
                raise ValueError(f"EMA state is missing key {key!r}")
        return {**state["shadow"], **state["buffers"]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; names and shapes must match the tracked model exactly.

        The decay of this EMA (from the current config) is kept; a different saved decay is logged.
        """
        for key in ("shadow", "buffers", "num_updates"):
            if key not in state:
                raise ValueError(f"EMA state is missing key {key!r}")
        for section, own in (("shadow", self.shadow), ("buffers", self.buffers)):
            saved = state[section]
            missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
            if missing or unexpected:
                raise ValueError(f"EMA state {section}: missing {missing[:5]}, unexpected {unexpected[:5]}")
            for name, tensor in saved.items():
                if tuple(tensor.shape) != tuple(own[name].shape):
                    raise ValueError(
                        f"EMA state {section}[{name!r}] has shape {tuple(tensor.shape)}, "
                        f"expected {tuple(own[name].shape)}"
                    )
        for section, own in (("shadow", self.shadow), ("buffers", self.buffers)):
            for name, tensor in state[section].items():
                own[name].copy_(tensor)
        if "decay" in state and float(state["decay"]) != self.decay:
            logger.info("EMA state saved with decay %s; continuing with decay %s", state["decay"], self.decay)
        self._num_updates.fill_(int(state["num_updates"]))
        self._host_updates = int(state["num_updates"])
