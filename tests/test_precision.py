"""Precision resolution, autocast contexts and grad-scaler decisions (capability probes monkeypatched)."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

from protlig_dd.model import precision
from protlig_dd.model.precision import autocast_context, needs_grad_scaler, resolve_precision

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


def test_fp32_is_always_fp32() -> None:
    """Guards the explicit fp32 request: honoured on every device."""
    for device in (CPU, CUDA, MPS):
        assert resolve_precision("fp32", device) == "fp32"


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    """Guards auto on CPU: bf16 only when the CPU runs bf16 natively (AVX512_BF16/AMX), else fp32."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_bf16_support(
    monkeypatch: pytest.MonkeyPatch, supported: bool, expected: str
) -> None:
    """Guards auto on CUDA: bf16 on Ampere+ (is_bf16_supported), fp32 on older GPUs."""
    monkeypatch.setattr(precision, "cuda_supports_bf16", lambda: supported)
    assert resolve_precision("auto", CUDA) == expected


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_mps_follows_bf16_support(
    monkeypatch: pytest.MonkeyPatch, supported: bool, expected: str
) -> None:
    """Guards auto on MPS: bf16 where torch and macOS support it, else fp32."""
    monkeypatch.setattr(precision, "mps_supports_bf16", lambda: supported)
    assert resolve_precision("auto", MPS) == expected


def test_auto_on_other_devices_is_fp32() -> None:
    """Guards auto on devices without a bf16 probe: fp32."""
    assert resolve_precision("auto", torch.device("meta")) == "fp32"


def test_fp16_only_on_cuda() -> None:
    """Guards fp16: accepted on CUDA, a ValueError naming the device elsewhere."""
    assert resolve_precision("fp16", CUDA) == "fp16"
    with pytest.raises(ValueError, match="device cpu"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="device mps"):
        resolve_precision("fp16", MPS)


def test_explicit_bf16(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Guards explicit bf16: an error on CUDA/MPS without support, allowed (with a warning) on a CPU
    that would emulate it."""
    monkeypatch.setattr(precision, "cuda_supports_bf16", lambda: False)
    monkeypatch.setattr(precision, "mps_supports_bf16", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="device cuda"):
        resolve_precision("bf16", CUDA)
    with pytest.raises(ValueError, match="device mps"):
        resolve_precision("bf16", MPS)
    with caplog.at_level(logging.WARNING, logger="protlig_dd.model.precision"):
        assert resolve_precision("bf16", CPU) == "bf16"
    assert "emulated" in caplog.text
    monkeypatch.setattr(precision, "cuda_supports_bf16", lambda: True)
    assert resolve_precision("bf16", CUDA) == "bf16"


def test_unknown_precision_raises() -> None:
    """Guards user errors: an unknown precision string names the bad value."""
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_precision("fp8", CPU)
    with pytest.raises(ValueError, match="'auto'"):
        autocast_context("auto", CPU)  # auto must be resolved first


def test_cpuinfo_flag_parsing() -> None:
    """Guards the /proc/cpuinfo probe: x86 'flags' and aarch64 'Features' lines are both read."""
    x86 = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"
    old = "processor\t: 0\nflags\t\t: fpu sse avx2\n"
    assert "avx512_bf16" in precision.cpuinfo_flags(x86)
    assert precision._has_bf16_flag(precision.cpuinfo_flags(x86))
    assert precision._has_bf16_flag(precision.cpuinfo_flags(arm))
    assert not precision._has_bf16_flag(precision.cpuinfo_flags(old))


def test_cpu_probe_falls_back_to_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Guards cpu_has_native_bf16 on builds without torch's CPU probes: /proc/cpuinfo decides."""
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "_CPUINFO", cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    assert not precision.cpu_has_native_bf16()
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512_bf16\n")
    assert precision.cpu_has_native_bf16()
    monkeypatch.setattr(precision, "_CPUINFO", tmp_path / "missing")
    assert not precision.cpu_has_native_bf16()


def test_cpu_probe_uses_torch_probe(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Guards the torch probe path: torch.cpu reporting AVX512_BF16 means native bf16."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(precision, "_CPUINFO", tmp_path / "missing")
    assert precision.cpu_has_native_bf16()


def test_autocast_context() -> None:
    """Guards the contexts: fp32 is a no-op, bf16 on CPU really autocasts matmuls, fp16 off CUDA raises."""
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    ctx = autocast_context("fp32", CPU)
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        assert (a @ b).dtype == torch.float32
    with autocast_context("bf16", CPU):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="device cpu"):
        autocast_context("fp16", CPU)


def test_needs_grad_scaler() -> None:
    """Guards the scaler decision: only fp16 on CUDA needs loss scaling."""
    assert needs_grad_scaler("fp16", CUDA)
    assert not needs_grad_scaler("bf16", CUDA)
    assert not needs_grad_scaler("fp32", CUDA)
    assert not needs_grad_scaler("bf16", CPU)
    assert not needs_grad_scaler("fp32", "cpu")
