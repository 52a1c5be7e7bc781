"""Process-group setup from the torchrun environment, and the collectives the loop needs.

Single-process runs (no torchrun) get world_size 1 and every helper is a cheap no-op, so the
same training code runs alone and under ``torchrun --nproc_per_node=N``.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from protlig_dd.config import DistributedConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # A gloo group over the same ranks for host-side numbers (token counts, the stop flag): summing
    # them there involves no device, so it never waits for the GPU's queue. None alone.
    host_group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """Map --device auto|cpu|cuda|mps to a torch.device (auto prefers CUDA, then MPS, then CPU)."""
    if requested not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"--device must be auto, cpu, cuda or mps, got {requested!r}")
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if requested == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("--device mps requested but MPS is not available")
    return torch.device(requested)


def init_distributed(cfg: DistributedConfig, requested_device: str) -> DistInfo:
    """Join the torchrun process group if launched by torchrun; otherwise a 1-process DistInfo."""
    if not launched_by_torchrun():
        return DistInfo(0, 1, 0, resolve_device(requested_device))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"distributed.backend nccl needs CUDA devices, got {device}")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=cfg.timeout_minutes),
            device_id=device if device.type == "cuda" else None,
        )
        if rank == 0:
            logger.info(
                "process group: %d processes, backend %s, collective timeout %d min",
                world_size,
                backend,
                cfg.timeout_minutes,
            )
    host_group = None
    if world_size > 1:
        host_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(minutes=cfg.timeout_minutes))
    return DistInfo(rank, world_size, local_rank, device, host_group)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op alone) and return it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def host_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum host numbers over ranks through the gloo host group (alone: the values themselves).

    Nothing touches the device, so unlike ``all_reduce_sum`` on a GPU tensor it never waits for
    queued GPU work. float64 holds integers exactly up to 2**53.
    """
    if not info.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=info.host_group)
    return tensor.tolist()


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's value of ``obj`` on every rank."""
    if not info.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
