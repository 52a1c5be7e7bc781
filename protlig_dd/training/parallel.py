"""Wrap the model for the run: torch.compile (config switch) and DDP across processes."""

from __future__ import annotations

import logging

import torch
from torch.nn.parallel import DistributedDataParallel

from protlig_dd.config import Config
from protlig_dd.training.distributed import DistInfo

logger = logging.getLogger(__name__)


def compile_supported(device: torch.device) -> bool:
    """torch.compile needs a working inductor backend: CUDA or CPU (with a C++ compiler), not MPS."""
    return device.type in ("cuda", "cpu")


def wrap_model(model: torch.nn.Module, cfg: Config, info: DistInfo) -> torch.nn.Module:
    """The module the training step calls: compiled and/or DDP-wrapped as configured.

    Parameters are shared with ``model`` (the wrappers hold it), so optimizer, EMA and
    checkpoints keep working on the plain module.
    """
    wrapped = model
    if info.enabled:
        if cfg.distributed.strategy == "fsdp":
            raise ValueError("distributed.strategy fsdp is not available in this build; use ddp")
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=device_ids)
    if cfg.training.compile:
        if compile_supported(info.device):
            wrapped = torch.compile(wrapped)
        else:
            logger.warning(
                "training.compile is set but torch.compile is not supported on %s; running eagerly", info.device
            )
    return wrapped
