"""Data parallelism for the training loop: DDP or FSDP2 wrapping, gradient sync, full state dicts.

Strategies (``distributed.strategy``, used when more than one process runs):

* ``ddp``: DistributedDataParallel; every rank holds the whole model, gradients are averaged.
* ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``), each transformer block sharded on its
  own, then the root. Parameters become DTensor shards *in place*, so build the optimizer and the
  EMA after ``wrap_model``. Gradients are averaged over ranks exactly as with DDP.

Checkpoints are always full (unsharded) state dicts keyed by parameter name, gathered with
``torch.distributed.checkpoint.state_dict`` (full_state_dict, CPU offload) and loaded back with its
setters, so a checkpoint written under FSDP, DDP or a single process resumes under any of them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel

from protlig_dd.config import Config, ConfigError
from protlig_dd.model.ema import EMA
from protlig_dd.model.precision import compile_supported
from protlig_dd.training.distributed import DistInfo

logger = logging.getLogger(__name__)

# Gather for saving: full tensors, on the CPU, on rank 0 only (the other ranks get empty dicts).
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Load: every rank passes the full tensors; FSDP keeps its own shard of each.
_SCATTER = StateDictOptions(full_state_dict=True)


@dataclass
class ParallelModel:
    """The module the training step calls, plus the data-parallel wrapper that owns gradient sync.

    ``module`` is what forward/backward go through (DDP, FSDP and/or torch.compile around the
    plain model); ``strategy`` is ``single`` (one process), ``ddp`` or ``fsdp``.
    """

    module: torch.nn.Module
    strategy: str
    ddp: DistributedDataParallel | None = None
    fsdp_root: FSDPModule | None = None

    @property
    def sharded(self) -> bool:
        """Whether parameters are FSDP shards (forwards then need every rank)."""
        return self.fsdp_root is not None

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the cross-rank gradient reduction for the backward passes in the block when
        ``enabled`` is False (micro-steps of an accumulation); gradients then accumulate locally
        and the next synchronised backward reduces their sum once."""
        if enabled or self.strategy == "single":
            yield
        elif self.ddp is not None:
            with self.ddp.no_sync():
                yield
        elif self.fsdp_root is not None:
            self.fsdp_root.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.fsdp_root.set_requires_gradient_sync(True)
        else:
            raise AssertionError(f"strategy {self.strategy} has no wrapper")


def _shard_fsdp(model: torch.nn.Module, info: DistInfo) -> FSDPModule:
    """fully_shard every transformer block, then the root (embedding, conditioning, final layer)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) == 0:
        raise ValueError(
            f"distributed.strategy fsdp needs a model with a non-empty `blocks` list, got {type(model)}"
        )
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for block in blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def wrap_model(
    model: torch.nn.Module, cfg: Config, info: DistInfo, uses_grad_scaler: bool = False
) -> ParallelModel:
    """Wrap ``model`` for this run: DDP or FSDP2 across processes, then torch.compile if configured.

    With FSDP ``model`` itself is sharded in place (its parameters become DTensors), so the
    optimizer and EMA must be built afterwards, from ``model``. With DDP the wrapper shares the
    parameters of ``model``. ``uses_grad_scaler`` (fp16) is refused with FSDP: the scaler's overflow
    check would be per shard, and ranks could disagree on skipping a step.
    """
    strategy = cfg.distributed.strategy if info.enabled else "single"
    wrapped: torch.nn.Module = model
    parallel = ParallelModel(module=model, strategy=strategy)
    if strategy == "fsdp":
        if uses_grad_scaler:
            raise ConfigError(
                "distributed.strategy fsdp does not support training.precision fp16 (grad scaler); "
                "use bf16 or fp32"
            )
        parallel.fsdp_root = _shard_fsdp(model, info)
    elif strategy == "ddp":
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        parallel.ddp = DistributedDataParallel(model, device_ids=device_ids)
        wrapped = parallel.ddp
    if cfg.training.compile:
        if compile_supported(info.device):
            wrapped = torch.compile(wrapped)
        else:
            logger.warning(
                "training.compile is set but torch.compile is not supported on %s; running eagerly",
                info.device,
            )
    parallel.module = wrapped
    return parallel


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor for a (replicated) DTensor result such as FSDP's gradient norm; else as is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_tensors(tensors: dict[str, torch.Tensor], keep: bool, to_cpu: bool) -> dict[str, torch.Tensor]:
    """Unsharded copies of ``tensors`` (DTensor shards are all-gathered; call on every rank).

    Tensors are gathered one at a time, so the peak extra memory is one full tensor. With
    ``keep`` False the result is empty (ranks that only take part in the gathers).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor.detach()
        if keep:
            out[name] = full.cpu() if to_cpu else full.clone()
    return out


def shard_like(full: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``full`` tensors laid out like ``like``: shards of them where ``like`` holds DTensors.

    Names missing from ``like`` are passed through, so the caller's own checks report them.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in full.items():
        target = like.get(name)
        if isinstance(target, DTensor):
            tensor = distribute_tensor(
                tensor.to(device=target.device, dtype=target.dtype), target.device_mesh, target.placements
            )
        out[name] = tensor
    return out


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict on the CPU on rank 0 (empty elsewhere); call on every rank."""
    return get_model_state_dict(model, options=_GATHER)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state keyed by parameter name, on rank 0 (empty elsewhere); every rank calls."""
    return get_optimizer_state_dict(model, optimizer, options=_GATHER)


def load_full_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (from any strategy) into ``model``, sharded or not; strict."""
    set_model_state_dict(model, state, options=_SCATTER)


def load_full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a full, name-keyed optimizer state (from any strategy) into ``optimizer``."""
    set_optimizer_state_dict(model, optimizer, state, options=_SCATTER)


def gather_training_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None, keep: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model part, optimizer state) of a checkpoint, full and on the CPU where ``keep`` (rank 0).

    The model part is {"model": weights, "ema": EMA state (absent without EMA)}. Under FSDP every
    rank must call (each takes part in the gathers; the others get empty dicts).
    """
    model_state: dict[str, Any] = {"model": full_model_state(model)}
    if ema is not None:
        ema_state = ema.state_dict()
        ema_state["shadow"] = full_tensors(ema_state["shadow"], keep=keep, to_cpu=True)
        model_state["ema"] = ema_state
    return model_state, full_optimizer_state(model, optimizer)


def load_training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
) -> None:
    """Load the full states of ``gather_training_state`` into a (possibly sharded) run.

    Raises KeyError/ValueError/RuntimeError when they do not fit (the caller names the checkpoint).
    """
    load_full_model_state(model, model_state["model"])
    if ema is not None:
        if "ema" not in model_state:
            raise ValueError("the checkpoint has no EMA weights but training.ema_decay > 0")
        saved_ema = dict(model_state["ema"])
        saved_ema["shadow"] = shard_like(saved_ema["shadow"], ema.shadow)
        ema.load_state_dict(saved_ema)
    load_full_optimizer_state(model, optimizer, optimizer_state)
