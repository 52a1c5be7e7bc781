"""Numeric precision of training and inference: choose it, enter autocast, decide on a grad scaler.

Precisions: ``fp32`` (no autocast), ``bf16`` (autocast to bfloat16, fp32 weights, no scaler) and
``fp16`` (CUDA only: autocast to float16 with a GradScaler). ``auto`` picks bf16 where the
hardware runs it natively and fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# CPU feature flags (as in /proc/cpuinfo) that mean bfloat16 matmuls run natively.
_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX512/AMX, aarch64 FEAT_BF16
_CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_flags(text: str) -> set[str]:
    """CPU feature flags from /proc/cpuinfo text (x86 ``flags`` and aarch64 ``Features`` lines)."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def _has_bf16_flag(flags: Iterable[str]) -> bool:
    return not _CPU_BF16_FLAGS.isdisjoint(flags)


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bfloat16 matmuls in hardware (AVX512_BF16, AMX or ARM BF16).

    Asks torch's own CPU probes first (they exist on x86 builds), then /proc/cpuinfo (Linux,
    including aarch64). Elsewhere (e.g. macOS CPU) the answer is False, so ``auto`` means fp32.
    """
    probes = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if any(probe is not None and probe() for probe in probes):
        return True
    if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
        return True
    if _CPUINFO.is_file():
        return _has_bf16_flag(cpuinfo_flags(_CPUINFO.read_text(errors="replace")))
    return False


def mps_supports_bf16() -> bool:
    """True when bf16 autocast works on MPS: torch >= 2.6 (bf16 autocast) on macOS >= 14 (Metal bf16)."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 6):
        return False
    is_macos_or_newer = getattr(torch.backends.mps, "is_macos_or_newer", None)
    if is_macos_or_newer is not None:
        return bool(is_macos_or_newer(14, 0))
    release = platform.mac_ver()[0]
    return bool(release) and int(release.split(".")[0]) >= 14


def cuda_supports_bf16() -> bool:
    """True when the current CUDA device supports bfloat16 (Ampere or newer)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _as_device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _check_precision(precision: str, allowed: tuple[str, ...]) -> None:
    if precision not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}; got {precision!r}")


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """Turn a requested precision (auto, fp32, bf16, fp16) into the one used on ``device``.

    auto: bf16 on CUDA with bf16 support, on a CPU with native bf16, and on MPS where torch and
    macOS support it; fp32 otherwise. fp16 exists only on CUDA. An explicit bf16 on a CUDA or MPS
    device without bf16 is an error; on a CPU without native bf16 it runs (emulated, slower).
    """
    _check_precision(requested, PRECISIONS)
    device = _as_device(device)
    kind = device.type
    if requested == "fp32":
        return "fp32"
    if requested == "fp16":
        if kind != "cuda":
            raise ValueError(
                f"precision fp16 needs a CUDA device (it trains with a grad scaler); got device {device}"
            )
        return "fp16"
    if requested == "bf16":
        if kind == "cuda" and not cuda_supports_bf16():
            raise ValueError(f"precision bf16 is not supported on device {device}; use fp16 or fp32")
        if kind == "mps" and not mps_supports_bf16():
            raise ValueError(
                f"precision bf16 needs torch >= 2.6 and macOS >= 14 on device {device}; use fp32"
            )
        if kind == "cpu" and not cpu_has_native_bf16():
            logger.warning(
                "bf16 requested on a CPU without native bf16: it runs emulated, likely slower than fp32"
            )
        return "bf16"
    # auto
    native = {"cuda": cuda_supports_bf16, "cpu": cpu_has_native_bf16, "mps": mps_supports_bf16}.get(kind)
    chosen = "bf16" if native is not None and native() else "fp32"
    logger.info("precision auto -> %s on device %s", chosen, device)
    return chosen


def autocast_context(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The autocast context for a resolved precision: nullcontext for fp32, else torch.autocast."""
    _check_precision(precision, ("fp32", "bf16", "fp16"))
    device = _as_device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision fp16 needs a CUDA device; got device {device}")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_supported(device: torch.device | str) -> bool:
    """torch.compile needs a working inductor backend: CUDA or CPU (with a C++ compiler), not MPS."""
    return _as_device(device).type in ("cuda", "cpu")


def needs_grad_scaler(precision: str, device: torch.device | str) -> bool:
    """True for fp16 on CUDA: float16 gradients underflow without loss scaling (bf16 does not need it)."""
    _check_precision(precision, ("fp32", "bf16", "fp16"))
    return precision == "fp16" and _as_device(device).type == "cuda"
