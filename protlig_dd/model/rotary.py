"""Rotary position embedding (RoPE) for the attention queries and keys.

Standard RoPE with the rotate-half (GPT-NeoX) convention: a head vector x = [x1, x2] (two halves
of head_dim / 2) at position p becomes [x1 cos - x2 sin, x2 cos + x1 sin] with angles
p * base^(-2i / head_dim), i = 0 .. head_dim/2 - 1. Positions come from the Batch and restart at 0
in every packed segment, so the cos/sin table is indexed by a (B, L) position tensor.

The table is cached per (device, dtype) and grown to the length at hand; it is never repeated or
truncated to fit a tensor (SEED_LESSONS item 1). A shape that does not match raises.

An optional fused kernel (flash-attn's Triton rotary) is chosen once, at construction, and used
only when it imports, the tensors are on CUDA, and positions are the plain 0..L-1 of every row
(the kernel takes one offset per row, not per-token positions).

The plain path folds rotate-half into the sine: rotate_half(x) * sin == roll(x, d/2) * sin_signed
with sin_signed = [-sin1, sin2], so a rotation is one roll and one multiply-add instead of a
chunk, a negation, a concatenation, two products and a sum. ``rotate`` works on any tensor whose
last axis is head_dim and whose first two are (B, L), so the attention block rotates q and k
together, as one (B, L, 2, H, head_dim) view of the fused qkv projection.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from protlig_dd.model.fast_ops import apply_rotary_rolled, signed_sin

logger = logging.getLogger(__name__)

FusedRotaryFn = Callable[..., torch.Tensor]


@cache
def fused_rotary_kernel() -> FusedRotaryFn | None:
    """flash-attn's ``apply_rotary_emb`` when the package is installed and imports, else None.

    Looked up once per process. A missing package is the normal CPU case; an installed package
    that fails to import (e.g. a CUDA mismatch) is logged as a warning with its error.
    """
    if importlib.util.find_spec("flash_attn") is None:
        return None
    try:
        module = importlib.import_module("flash_attn.layers.rotary")
    except ImportError as err:
        logger.warning("flash_attn is installed but its rotary kernel does not import (%s); plain RoPE", err)
        return None
    return module.apply_rotary_emb


@dataclass
class RotaryAngles:
    """cos/sin for one forward pass, computed once and shared by every block.

    Plain path: ``cos`` and ``sin`` are (B or 1, L, head_dim); ``sin`` holds ``signed_sin`` of the
    sine (first half negated), the form ``apply_rotary_rolled`` takes.
    Fused path: (L, head_dim / 2) cos and sin tables in the format flash-attn's kernel expects.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    fused: bool


class RotaryEmbedding(nn.Module):
    """RoPE on q and k, with a cos/sin table cached per (device, dtype) and grown on demand.

    The table is not a buffer: it is derived data, so it stays out of state_dict and follows
    whatever device the activations are on.
    """

    def __init__(self, head_dim: int, base: float = 10000.0, use_fused_kernel: bool = False) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2 != 0:
            raise ValueError(f"rotary head_dim must be a positive even number, got {head_dim}")
        if base <= 0:
            raise ValueError(f"rotary base must be > 0, got {base}")
        self.head_dim = head_dim
        self.base = float(base)
        # Chosen once: the kernel (or None) for the whole life of the module.
        self._fused_fn: FusedRotaryFn | None = fused_rotary_kernel() if use_fused_kernel else None
        # (device, dtype) -> (cos, sin, signed sin), each (cached_length, head_dim).
        self._tables: dict[
            tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
        ] = {}

    def table(
        self, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (length, head_dim) for positions 0 .. length - 1.

        Returned as views of the cached table, which is rebuilt (never tiled) when a longer
        length is asked for than any seen before on this (device, dtype).
        """
        cos, sin, _ = self._cached(length, device, dtype)
        return cos[:length], sin[:length]

    def _cached(
        self, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cached (cos, sin, signed sin) tables of at least ``length`` rows on (device, dtype)."""
        if length <= 0:
            raise ValueError(f"rotary table length must be > 0, got {length}")
        key = (torch.device(device), dtype)
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < length:
            cached = self._build(length, key[0], dtype)
            self._tables[key] = cached
        return cached

    def _build(
        self, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Angles in float64: p * theta_i loses digits in fp32 at long lengths.
        half = self.head_dim // 2
        inv_freq = self.base ** (
            -torch.arange(half, dtype=torch.float64, device=device) * 2.0 / self.head_dim
        )
        angles = torch.arange(length, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)  # (length, head_dim): same angle for both halves
        sin = angles.sin()
        return angles.cos().to(dtype), sin.to(dtype), signed_sin(sin).to(dtype)

    def angles(
        self,
        length: int,
        positions: torch.Tensor | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> RotaryAngles:
        """cos/sin for a (B, length) batch; ``positions`` (B, length) int or None for 0..length-1.

        Positions inside a row of ``length`` tokens are < length (they restart per segment), so a
        table of ``length`` rows always suffices; an out-of-range position is an indexing error.
        """
        if positions is not None:
            if positions.dim() != 2 or positions.shape[1] != length:
                raise ValueError(
                    f"rotary positions must be (B, {length}), got shape {tuple(positions.shape)}"
                )
            if positions.dtype.is_floating_point or positions.dtype == torch.bool:
                raise ValueError(f"rotary positions must be an integer tensor, got {positions.dtype}")
        if self._fused_fn is not None and positions is None and torch.device(device).type == "cuda":
            cos, sin = self.table(length, device, dtype)
            half = self.head_dim // 2
            return RotaryAngles(cos[:, :half].contiguous(), sin[:, :half].contiguous(), fused=True)
        cos, _, sin_signed = self._cached(length, device, dtype)
        if positions is None:
            return RotaryAngles(cos[None, :length], sin_signed[None, :length], fused=False)  # (1, L, Dh)
        # Gathered per token: (B, L, Dh).
        return RotaryAngles(cos[positions], sin_signed[positions], fused=False)

    def rotate(self, x: torch.Tensor, angles: RotaryAngles) -> torch.Tensor:
        """Rotate ``x`` of shape (B, L, ..., head_dim), e.g. q and k stacked as (B, L, 2, H, head_dim).

        Plain path only (the fused kernel takes q and k separately, see ``forward``).
        """
        if angles.fused:
            raise ValueError("rotate() takes plain-path angles; fused ones go through forward(q, k, angles)")
        cos, sin_signed = angles.cos, angles.sin  # (B or 1, L, Dh)
        if (
            x.dim() < 3
            or x.shape[-1] != self.head_dim
            or cos.shape[1] != x.shape[1]
            or cos.shape[0] not in (1, x.shape[0])
            or cos.shape[-1] != self.head_dim
        ):
            raise ValueError(f"rotary table {tuple(cos.shape)} does not match x {tuple(x.shape)}")
        # (B or 1, L, Dh) -> (B or 1, L, 1, ..., 1, Dh): broadcast over the middle axes (heads, q/k).
        shape = (cos.shape[0], cos.shape[1], *([1] * (x.dim() - 3)), self.head_dim)
        return apply_rotary_rolled(x, cos.view(shape).to(x.dtype), sin_signed.view(shape).to(x.dtype))

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, angles: RotaryAngles
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q and k, both (B, L, H, head_dim), by precomputed ``angles``."""
        if q.shape != k.shape or q.dim() != 4 or q.shape[-1] != self.head_dim:
            raise ValueError(
                f"rotary expects q and k of shape (B, L, H, {self.head_dim}), got {tuple(q.shape)} "
                f"and {tuple(k.shape)}"
            )
        if angles.fused:
            assert self._fused_fn is not None  # internal: fused angles only come from a fused module
            if angles.cos.shape != (q.shape[1], self.head_dim // 2):
                raise ValueError(
                    f"fused rotary table {tuple(angles.cos.shape)} does not match q {tuple(q.shape)}"
                )
            cos, sin = angles.cos.to(q.dtype), angles.sin.to(q.dtype)
            return self._fused_fn(q, cos, sin, interleaved=False), self._fused_fn(
                k, cos, sin, interleaved=False
            )
        return self.rotate(q, angles), self.rotate(k, angles)
