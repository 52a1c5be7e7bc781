"""Likelihood bound: the factorised-oracle test of SEDD_MATH.md, packing, standard errors, the summary."""

from __future__ import annotations

import math

import pytest
import torch

from protlig_dd.data.batch import Batch
from protlig_dd.diffusion.graphs import Absorbing
from protlig_dd.diffusion.likelihood import likelihood_bound, summarize_bounds
from protlig_dd.diffusion.noise import Cosine, LogLinear

N = 5
PAD = N + 1


# The same oracle lives in test_samplers.py (test files own no shared helper module).
def random_factorised(num_positions: int, seed: int) -> torch.Tensor:
    """(L, N) float64 rows p_i: random distributions with every entry > 0."""
    logits = 1.5 * torch.randn(
        num_positions, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return torch.softmax(logits, dim=-1)


def absorbing_oracle(p: torch.Tensor, positions: torch.Tensor | None = None):
    """Exact absorbing log-score of p0 = prod_i p[pos_i]: log p_i(y) - log(e^sigma - 1) at MASK.

    At an unmasked x the exact ratios are p_i(y) / p_i(x) (residues) and (e^sigma - 1) / p_i(x) (MASK);
    the current state's entry is 0, as the model writes it. ``positions`` maps columns to rows of p.
    """
    log_p = p.log()  # (L, N)

    def score_fn(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        b, length = x_t.shape
        pos = positions if positions is not None else torch.arange(length).expand(b, length)
        log_pi = log_p[pos.clamp(max=len(p) - 1)]  # (B, L, N); padding columns are overwritten below
        sigma = sigma_bar.double().view(b, 1, 1)
        log_esm1 = sigma + torch.log(-torch.expm1(-sigma))
        masked = torch.cat([log_pi - log_esm1, torch.zeros(b, length, 1, dtype=torch.float64)], dim=-1)
        log_px = log_pi.gather(-1, x_t.clamp(max=N - 1).unsqueeze(-1))  # (B, L, 1)
        unmasked = torch.cat([log_pi - log_px, log_esm1.expand(b, length, 1) - log_px], dim=-1)
        out = torch.where((x_t == N).unsqueeze(-1), masked, unmasked)
        return torch.where((x_t > N).unsqueeze(-1), torch.zeros_like(out), out).float()

    return score_fn


def nll(p: torch.Tensor, seq: list[int], start: int = 0) -> float:
    return -sum(math.log(float(p[start + i, y])) for i, y in enumerate(seq))


@pytest.mark.parametrize("noise", [LogLinear(1e-3), Cosine(1e-3)], ids=["loglinear", "cosine"])
def test_oracle_bound_reproduces_true_nll(noise) -> None:
    """With the exact score of a factorised p0 the estimate equals c * (-log p0(x)) within 4 standard errors.

    c = exp(-sigma_bar(eps)) - exp(-sigma_bar(1)) (SEDD_MATH oracle test).
    """
    length = 6
    p = random_factorised(length, seed=0)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, N, (length,), generator=gen).tolist() for _ in range(4)]
    seqs.append(p.argmax(-1).tolist())  # the most likely sequence, a low-NLL case
    batch = Batch.from_sequences(seqs, pad_id=PAD)
    out = likelihood_bound(absorbing_oracle(p), Absorbing(N), noise, batch, num_samples=1000, generator=gen)
    c = math.exp(-float(noise.total(noise.eps))) - math.exp(-float(noise.total(1.0)))
    assert 0.99 < c < 1.0
    for k, seq in enumerate(seqs):
        want = c * nll(p, seq)
        got, se = float(out.bound[k]), float(out.stderr[k])
        assert 0 < se < 0.05 * want, (k, got, se, want)
        assert abs(got - want) < 4 * se, (k, got, se, want)
    assert out.num_residues.tolist() == [length] * len(seqs)


def test_oracle_bound_without_antithetic_and_with_packing() -> None:
    """Packed rows score each (row, segment) separately; plain (non-antithetic) draws are unbiased too."""
    p = random_factorised(8, seed=2)
    seqs = [[0, 1, 2, 3, 4, 0], [4, 4, 3], [1, 2, 0, 0, 1, 2, 3, 4], [2, 2]]
    rows = [[seqs[0], seqs[1]], [seqs[2]], [seqs[3]]]
    batch = Batch.from_packed_rows(rows, pad_id=PAD, length=10)
    noise = LogLinear(1e-3)
    out = likelihood_bound(
        absorbing_oracle(p, batch.positions),
        Absorbing(N),
        noise,
        batch,
        num_samples=1200,
        generator=torch.Generator().manual_seed(3),
        antithetic=False,
    )
    assert out.row.tolist() == [0, 0, 1, 2] and out.segment.tolist() == [1, 2, 1, 1]
    assert out.num_residues.tolist() == [6, 3, 8, 2]
    assert out.samples.shape == (4, 1200)
    c = (1 - 1e-3) ** 2  # exp(-sigma_bar(eps)) - exp(-sigma_bar(1)) for loglinear
    for k, seq in enumerate(seqs):
        want = c * nll(p, seq)
        assert abs(float(out.bound[k]) - want) < 4 * float(out.stderr[k]), (k, float(out.bound[k]), want)


def test_standard_error_shrinks_with_samples() -> None:
    """The Monte-Carlo standard error falls like 1/sqrt(num_samples) (16x samples -> about 1/4)."""
    p = random_factorised(6, seed=4)
    batch = Batch.from_sequences([[0, 1, 2, 3, 4, 0]], pad_id=PAD)
    args = (absorbing_oracle(p), Absorbing(N), LogLinear(1e-3), batch)
    small = likelihood_bound(*args, num_samples=100, generator=torch.Generator().manual_seed(5))
    large = likelihood_bound(*args, num_samples=1600, generator=torch.Generator().manual_seed(6))
    ratio = float(large.stderr[0] / small.stderr[0])
    assert 0.12 < ratio < 0.45, ratio


def test_antithetic_pairs_and_their_standard_error() -> None:
    """Antithetic draws come in (u, 1 - u) pairs; the stderr is that of the pair means; one pair gives nan."""
    p = random_factorised(4, seed=7)
    batch = Batch.from_sequences([[0, 1, 2, 3]], pad_id=PAD)
    args = (absorbing_oracle(p), Absorbing(N), LogLinear(1e-3), batch)
    out = likelihood_bound(*args, num_samples=6, generator=torch.Generator().manual_seed(8))
    pairs = out.samples[0].reshape(3, 2).mean(-1)
    torch.testing.assert_close(out.bound[0], pairs.mean())
    torch.testing.assert_close(out.stderr[0], pairs.std() / math.sqrt(3))
    one_pair = likelihood_bound(*args, num_samples=2, generator=torch.Generator().manual_seed(8))
    assert math.isnan(float(one_pair.stderr[0]))
    with pytest.raises(ValueError, match="even num_samples"):
        likelihood_bound(*args, num_samples=3)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        likelihood_bound(*args, num_samples=0, antithetic=False)


def test_pads_do_not_change_the_bound() -> None:
    """Appended padding leaves a draw unchanged, and garbage scores at pad positions are never counted."""
    p = random_factorised(6, seed=9)
    seq = [3, 1, 4, 1, 0, 2]
    oracle = absorbing_oracle(p)
    args = (Absorbing(N), LogLinear(1e-3))
    short = Batch.from_sequences([seq], pad_id=PAD)
    padded = Batch.from_sequences([seq, [1, 2]], pad_id=PAD, length=12)
    # One draw of one row: the random stream for the real positions is the same with or without padding.
    one = [
        likelihood_bound(oracle, *args, b, 1, torch.Generator().manual_seed(0), antithetic=False)
        for b in (short, Batch.from_sequences([seq], pad_id=PAD, length=12))
    ]
    torch.testing.assert_close(one[0].samples, one[1].samples)
    assert float(one[0].samples[0, 0]) > 0

    pad = ~padded.real_mask

    def garbage_at_pads(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        return oracle(x_t, sigma_bar) + 30.0 * pad.unsqueeze(-1)

    clean = likelihood_bound(oracle, *args, padded, 8, torch.Generator().manual_seed(0))
    dirty = likelihood_bound(garbage_at_pads, *args, padded, 8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(clean.samples, dirty.samples)
    assert clean.num_residues.tolist() == [6, 2]


def test_summary_is_residue_weighted() -> None:
    """nll_per_residue = sum of bounds / residues, ppl = exp of it, stderrs of independent rows combine
    as independent sums."""
    p = random_factorised(8, seed=10)
    args = (absorbing_oracle(p), Absorbing(N), LogLinear(1e-3))
    gen = torch.Generator().manual_seed(11)
    parts = [
        likelihood_bound(
            *args, Batch.from_sequences([[0, 1, 2], [4, 4, 4, 1, 2, 3, 0, 1]], pad_id=PAD), 8, gen
        ),
        likelihood_bound(*args, Batch.from_sequences([[2, 2, 2, 2, 2]], pad_id=PAD), 8, gen),
    ]
    summary = summarize_bounds(parts)
    bounds = torch.cat([q.bound for q in parts])
    assert summary.num_sequences == 3 and summary.num_residues == 16
    assert math.isclose(summary.nll_per_residue, float(bounds.sum()) / 16, rel_tol=1e-12)
    assert math.isclose(summary.ppl_bound, math.exp(summary.nll_per_residue), rel_tol=1e-12)
    # One sequence per row: rows are independent, so the per-sequence variances of the pair means add.
    variance = sum(float(q.samples.reshape(len(q.bound), -1, 2).mean(-1).var(dim=1).sum()) / 4 for q in parts)
    assert math.isclose(summary.nll_stderr, math.sqrt(variance) / 16, rel_tol=1e-9)
    assert math.isclose(summary.ppl_stderr, summary.ppl_bound * summary.nll_stderr, rel_tol=1e-12)
    assert "O(eps) prior and reconstruction terms" in summary.describe()
    with pytest.raises(ValueError, match="no sequence bounds"):
        summarize_bounds([])


def test_summary_stderr_accounts_for_sequences_sharing_t() -> None:
    """Packed sequences share t, so their errors correlate: the summary stderr exceeds the naive
    independent-sequence combination sqrt(sum se_i^2) instead of understating the uncertainty."""
    p = random_factorised(6, seed=12)
    seq = [0, 1, 2, 3, 4, 0]
    batch = Batch.from_packed_rows([[seq, seq]], pad_id=PAD)
    log_p = torch.nn.functional.pad(p.log().float(), (0, 1))[batch.positions]  # (1, 12, N + 1)

    def unscaled_score(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        # Not scaled by sigma: the estimate's mean then depends on t, which the two sequences share.
        return log_p

    out = likelihood_bound(
        unscaled_score, Absorbing(N), LogLinear(1e-3), batch, 400, torch.Generator().manual_seed(0)
    )
    summary = summarize_bounds(out)
    naive = math.sqrt(float((out.stderr**2).sum())) / 12
    assert float(torch.corrcoef(out.units())[0, 1]) > 0.3
    assert summary.nll_stderr > 1.1 * naive
