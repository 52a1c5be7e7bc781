"""Rotary position embedding: parity with a naive complex RoPE, relative-position property, growth."""

from __future__ import annotations

import warnings

import pytest
import torch

from protlig_dd.model.rotary import RotaryEmbedding, fused_rotary_kernel


def naive_complex_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Reference RoPE: pair (x[i], x[i + d/2]) as a complex number, multiply by exp(1j p theta_i)."""
    head_dim = x.shape[-1]
    half = head_dim // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2.0 / head_dim)  # (half,)
    z = torch.complex(x[..., :half].double(), x[..., half:].double())  # (B, L, H, half)
    angles = positions.double()[:, :, None, None] * theta  # (B, L, 1, half)
    rot = torch.polar(torch.ones_like(angles), angles)  # exp(1j * angle)
    out = z * rot
    return torch.cat((out.real, out.imag), dim=-1)


def rotate(rope: RotaryEmbedding, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None):
    angles = rope.angles(q.shape[1], positions, q.device, q.dtype)
    return rope(q, k, angles)


def test_matches_naive_complex_rope() -> None:
    """Guards the rotate-half convention and the theta formula against a complex-number RoPE."""
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=16, base=10000.0)
    q = torch.randn(2, 37, 3, 16, dtype=torch.float64)
    k = torch.randn(2, 37, 3, 16, dtype=torch.float64)
    positions = torch.arange(37).expand(2, 37)
    q_rot, k_rot = rotate(rope, q, k, None)
    torch.testing.assert_close(q_rot, naive_complex_rope(q, positions, 10000.0), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(k_rot, naive_complex_rope(k, positions, 10000.0), rtol=1e-10, atol=1e-10)


def test_custom_base_matches_naive() -> None:
    """Guards that ModelConfig.rotary_base (theta) is actually used, not a hard-coded 10000."""
    torch.manual_seed(1)
    rope = RotaryEmbedding(head_dim=8, base=500.0)
    q = torch.randn(1, 20, 2, 8, dtype=torch.float64)
    positions = torch.arange(20)[None]
    q_rot, _ = rotate(rope, q, q.clone(), positions)
    torch.testing.assert_close(q_rot, naive_complex_rope(q, positions, 500.0), rtol=1e-10, atol=1e-10)


def test_dot_product_depends_only_on_offset() -> None:
    """Guards the defining RoPE property: <R_m q, R_n k> depends only on m - n."""
    torch.manual_seed(2)
    rope = RotaryEmbedding(head_dim=32)
    q = torch.randn(32, dtype=torch.float64)
    k = torch.randn(32, dtype=torch.float64)
    length = 64
    qs = q.expand(1, length, 1, 32).clone()
    ks = k.expand(1, length, 1, 32).clone()
    q_rot, k_rot = rotate(rope, qs, ks, None)
    scores = torch.einsum("id,jd->ij", q_rot[0, :, 0], k_rot[0, :, 0])  # (L, L)
    for offset in (-7, 0, 3, 20):
        diagonal = torch.diagonal(scores, offset=offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), rtol=1e-9, atol=1e-9)
    # and the score does change with the offset (the test could otherwise pass on an identity map)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 5)[0])


def test_all_lengths_and_growth_without_warnings() -> None:
    """Guards the old 'repeat the table to fit' bug: any length, including one longer than ever seen,
    gets its own table, without error or warning, and shorter lengths reuse the grown table exactly."""
    torch.manual_seed(3)
    rope = RotaryEmbedding(head_dim=8)
    max_length = 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for length in range(1, max_length + 1):
            q = torch.randn(2, length, 2, 8, dtype=torch.float64)
            q_rot, _ = rotate(rope, q, q, None)
            positions = torch.arange(length).expand(2, length)
            torch.testing.assert_close(
                q_rot, naive_complex_rope(q, positions, 10000.0), rtol=1e-10, atol=1e-10
            )
        long = 5 * max_length + 3
        q = torch.randn(1, long, 1, 8, dtype=torch.float64)
        q_rot, _ = rotate(rope, q, q, None)
        torch.testing.assert_close(
            q_rot, naive_complex_rope(q, torch.arange(long)[None], 10000.0), rtol=1e-10, atol=1e-10
        )
    cos, _ = rope.table(long, torch.device("cpu"), torch.float64)
    assert cos.shape == (long, 8)
    # Not periodic in the table length: positions max_length and 0 differ.
    assert not torch.allclose(cos[max_length], cos[0])


def test_packed_positions_restart() -> None:
    """Guards packing: a sequence packed after another, positions restarting at 0, is rotated exactly
    as when it is alone in its row."""
    torch.manual_seed(4)
    rope = RotaryEmbedding(head_dim=8)
    a = torch.randn(1, 5, 2, 8)
    b = torch.randn(1, 7, 2, 8)
    packed = torch.cat((a, b), dim=1)  # (1, 12, 2, 8)
    positions = torch.cat((torch.arange(5), torch.arange(7)))[None]  # (1, 12)
    packed_rot, _ = rotate(rope, packed, packed, positions)
    a_rot, _ = rotate(rope, a, a, None)
    b_rot, _ = rotate(rope, b, b, None)
    torch.testing.assert_close(packed_rot[:, :5], a_rot, rtol=0, atol=0)
    torch.testing.assert_close(packed_rot[:, 5:], b_rot, rtol=0, atol=0)


def test_per_row_positions() -> None:
    """Guards per-row indexing: each row of a (B, L) positions tensor uses its own positions."""
    torch.manual_seed(5)
    rope = RotaryEmbedding(head_dim=8)
    q = torch.randn(2, 6, 1, 8, dtype=torch.float64)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 1, 0, 1, 2, 0]])
    q_rot, _ = rotate(rope, q, q, positions)
    torch.testing.assert_close(q_rot, naive_complex_rope(q, positions, 10000.0), rtol=1e-10, atol=1e-10)


def test_shape_mismatch_raises() -> None:
    """Guards 'raise, never reshape': wrong position or q/k shapes are errors."""
    rope = RotaryEmbedding(head_dim=8)
    q = torch.randn(2, 6, 1, 8)
    with pytest.raises(ValueError, match="positions"):
        rope.angles(6, torch.zeros(2, 5, dtype=torch.long), q.device, q.dtype)
    with pytest.raises(ValueError, match="integer"):
        rope.angles(6, torch.zeros(2, 6), q.device, q.dtype)
    angles = rope.angles(6, None, q.device, q.dtype)
    with pytest.raises(ValueError, match="rotary"):
        rope(torch.randn(2, 6, 1, 4), torch.randn(2, 6, 1, 4), angles)
    with pytest.raises(ValueError, match="does not match"):
        rope(torch.randn(2, 7, 1, 8), torch.randn(2, 7, 1, 8), angles)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(head_dim=7)


def test_cache_per_device_and_dtype() -> None:
    """Guards the cache key: a bf16 table and an fp32 table coexist and each has its own dtype."""
    rope = RotaryEmbedding(head_dim=8)
    cos32, _ = rope.table(10, torch.device("cpu"), torch.float32)
    cos16, _ = rope.table(10, torch.device("cpu"), torch.bfloat16)
    assert cos32.dtype == torch.float32 and cos16.dtype == torch.bfloat16
    torch.testing.assert_close(cos16.float(), cos32, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(
    fused_rotary_kernel() is None or not torch.cuda.is_available(),
    reason="flash-attn rotary kernel or CUDA absent",
)
def test_fused_kernel_matches_plain_path() -> None:
    """Guards SEED_LESSONS item 2: the optional fused kernel equals the plain PyTorch path."""
    torch.manual_seed(6)
    device = torch.device("cuda")
    fused = RotaryEmbedding(head_dim=64, use_fused_kernel=True)
    plain = RotaryEmbedding(head_dim=64, use_fused_kernel=False)
    q = torch.randn(2, 100, 4, 64, device=device)
    k = torch.randn(2, 100, 4, 64, device=device)
    fused_angles = fused.angles(100, None, device, q.dtype)
    assert fused_angles.fused
    q_f, k_f = fused(q, k, fused_angles)
    q_p, k_p = plain(q, k, plain.angles(100, None, device, q.dtype))
    torch.testing.assert_close(q_f, q_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_f, k_p, rtol=1e-5, atol=1e-5)


def test_fused_kernel_not_used_on_cpu_or_with_positions() -> None:
    """Guards the fused-path selection: never on CPU tensors and never for per-token positions."""
    rope = RotaryEmbedding(head_dim=8, use_fused_kernel=True)
    assert not rope.angles(4, None, torch.device("cpu"), torch.float32).fused
    assert not rope.angles(4, torch.zeros(1, 4, dtype=torch.long), torch.device("cpu"), torch.float32).fused
