"""Score-entropy training loss on a Batch: normalisation, padding, hand computation, sigma fed to score."""

from __future__ import annotations

import math

import pytest
import torch

from protlig_dd.data.batch import Batch
from protlig_dd.diffusion.graphs import Absorbing, Uniform
from protlig_dd.diffusion.loss import sample_times, score_entropy_loss
from protlig_dd.diffusion.noise import LogLinear

N = 5
PAD = N + 1


def table_score(dim: int, max_length: int = 64, seed: int = 0, requires_grad: bool = False):
    """A score function that depends only on the position and x_t (model-like overwrite rule)."""
    table = torch.randn(max_length, dim, generator=torch.Generator().manual_seed(seed)).requires_grad_(
        requires_grad
    )
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def score_fn(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        calls.append((x_t.clone(), sigma_bar.clone()))
        b, length = x_t.shape
        out = table[:length].unsqueeze(0).expand(b, length, dim)  # (B, L, dim)
        here = torch.nn.functional.one_hot(x_t.clamp(max=dim - 1), dim).bool() & (x_t < dim).unsqueeze(-1)
        return out.masked_fill(here, 0.0)

    return score_fn, calls, table


def test_appended_padding_does_not_change_the_loss() -> None:
    """A row padded further gives the same loss, row total and token count (pads never contribute)."""
    graph, noise = Absorbing(N), LogLinear(1e-3)
    seq = [0, 3, 1, 4, 2, 2, 1]
    score_fn, _, _ = table_score(graph.dim)
    t = torch.tensor([0.6])  # fixed so that some, not all, positions are masked
    out = []
    for length in (7, 15):
        batch = Batch.from_sequences([seq], pad_id=PAD, length=length)
        out.append(score_entropy_loss(score_fn, graph, noise, batch, torch.Generator().manual_seed(3), t=t))
    assert out[0].num_tokens == out[1].num_tokens == 7
    assert float(out[0].loss) > 0
    torch.testing.assert_close(out[0].loss, out[1].loss)
    torch.testing.assert_close(out[0].row_loss, out[1].row_loss)


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
def test_scores_at_padding_are_ignored(graph_cls) -> None:
    """Garbage log-scores at pad positions (B rows of different lengths) leave the loss unchanged."""
    graph, noise = graph_cls(N), LogLinear(1e-3)
    batch = Batch.from_sequences([[0, 1, 2, 3, 4, 0], [4, 3], [1, 1, 1, 1]], pad_id=PAD)
    score_fn, _, _ = table_score(graph.dim)
    pad = ~batch.real_mask

    def noisy_pad_score(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        return score_fn(x_t, sigma_bar) + 40.0 * pad.unsqueeze(-1)

    t = torch.tensor([0.7, 0.9, 0.5])
    clean = score_entropy_loss(score_fn, graph, noise, batch, torch.Generator().manual_seed(0), t=t)
    dirty = score_entropy_loss(noisy_pad_score, graph, noise, batch, torch.Generator().manual_seed(0), t=t)
    torch.testing.assert_close(clean.loss, dirty.loss)
    assert clean.num_tokens == 12


def test_loss_matches_hand_computation() -> None:
    """loss = sum over masked real positions of sigma'(t) [sum_y e^{s_y} - r s_{x0} + K(r)] / real tokens."""
    graph, noise = Absorbing(N), LogLinear(1e-3)
    seqs = [[0, 1, 2, 3, 4, 0, 1, 2], [4, 3, 2]]
    batch = Batch.from_sequences(seqs, pad_id=PAD)
    score_fn, calls, table = table_score(graph.dim)
    t = torch.tensor([0.6, 0.8])
    out = score_entropy_loss(score_fn, graph, noise, batch, torch.Generator().manual_seed(1), t=t)
    ((x_t, sigma_seen),) = calls
    total = 0.0
    num_masked = 0
    for b, seq in enumerate(seqs):
        sigma = -math.log(1 - (1 - 1e-3) * float(t[b]))
        rate = (1 - 1e-3) / (1 - (1 - 1e-3) * float(t[b]))
        r = 1 / (math.exp(sigma) - 1)
        for i, x0 in enumerate(seq):
            if int(x_t[b, i]) != N:
                assert int(x_t[b, i]) == x0
                continue
            num_masked += 1
            s = [float(table[i, y]) for y in range(N)]
            total += rate * (sum(math.exp(v) for v in s) - r * s[x0] + r * (math.log(r) - 1))
    assert 0 < num_masked < 11, "the example should mask some but not all positions"
    assert bool((x_t[~batch.real_mask] == PAD).all())
    assert out.num_tokens == 11
    assert out.loss.dtype == torch.float32
    assert math.isclose(float(out.loss), total / 11, rel_tol=1e-5)
    assert math.isclose(float(out.total), total, rel_tol=1e-5)
    torch.testing.assert_close(out.row_loss.sum(), out.total)
    torch.testing.assert_close(sigma_seen, noise.total(t))


def test_score_receives_sigma_bar_of_t() -> None:
    """The score function gets sigma_bar(t) per row, not t (SEED_LESSONS 5 and 10)."""
    graph, noise = Absorbing(N), LogLinear(1e-3)
    batch = Batch.from_sequences([[0, 1, 2], [3, 4, 0]], pad_id=PAD)
    score_fn, calls, _ = table_score(graph.dim)
    out = score_entropy_loss(score_fn, graph, noise, batch, torch.Generator().manual_seed(0))
    ((_, sigma_seen),) = calls
    assert sigma_seen.shape == (2,)
    torch.testing.assert_close(sigma_seen, noise.total(out.t))
    assert not torch.allclose(sigma_seen, out.t)


def test_sample_times_range_and_mean() -> None:
    """t = (1 - eps) U + eps lies in [eps, 1) with mean (1 + eps) / 2."""
    eps = 0.05
    t = sample_times(200000, eps, "cpu", torch.Generator().manual_seed(0))
    assert float(t.min()) >= eps and float(t.max()) < 1.0
    assert abs(float(t.mean()) - (1 + eps) / 2) < 4 * (1 - eps) / math.sqrt(12 * 200000)


def test_bf16_score_gives_fp32_loss_with_gradient() -> None:
    """A bf16 score is cast: the loss is fp32, finite, and backpropagates into the score's parameters."""
    graph, noise = Absorbing(N), LogLinear(1e-3)
    batch = Batch.from_sequences([[0, 1, 2, 3], [4, 3]], pad_id=PAD)
    score_fn, _, table = table_score(graph.dim, requires_grad=True)
    out = score_entropy_loss(
        lambda x, s: score_fn(x, s).to(torch.bfloat16),
        graph,
        noise,
        batch,
        torch.Generator().manual_seed(0),
        t=torch.tensor([0.9, 0.9]),
    )
    assert out.loss.dtype == torch.float32 and bool(torch.isfinite(out.loss))
    out.loss.backward()
    assert table.grad is not None and float(table.grad.abs().sum()) > 0


def test_token_count_without_host_count() -> None:
    """When the data pipeline left num_real_tokens unset, the loss counts real tokens itself."""
    graph, noise = Absorbing(N), LogLinear(1e-3)
    batch = Batch.from_sequences([[0, 1, 2, 3], [4, 3]], pad_id=PAD)
    batch.num_real_tokens = None
    score_fn, _, _ = table_score(graph.dim)
    assert score_entropy_loss(score_fn, graph, noise, batch, torch.Generator().manual_seed(0)).num_tokens == 6


def test_bad_inputs_raise() -> None:
    """Wrong t shape, wrong score shape and a batch without real tokens are ValueErrors."""
    graph, noise = Absorbing(N), LogLinear(1e-3)
    batch = Batch.from_sequences([[0, 1, 2, 3], [4, 3]], pad_id=PAD)
    score_fn, _, _ = table_score(graph.dim)
    with pytest.raises(ValueError, match="t must have shape"):
        score_entropy_loss(score_fn, graph, noise, batch, t=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="score_fn returned shape"):
        score_entropy_loss(lambda x, s: score_fn(x, s)[..., :N], graph, noise, batch)
    empty = Batch.from_sequences([[], []], pad_id=PAD, length=3)
    with pytest.raises(ValueError, match="no real tokens"):
        score_entropy_loss(score_fn, graph, noise, empty)
