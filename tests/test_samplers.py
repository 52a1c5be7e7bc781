"""Samplers: oracle marginals (chi-square), fixed positions, padding, determinism, sigma, no resampling."""

from __future__ import annotations

import pytest
import torch

from protlig_dd.diffusion.graphs import Absorbing, Uniform
from protlig_dd.diffusion.noise import Cosine, Geometric, LogLinear
from protlig_dd.diffusion.samplers import sample, sample_categorical

N = 5
MASK = N
PAD = N + 1


# The same absorbing oracle lives in test_likelihood.py (test files own no shared helper module).
def random_factorised(num_positions: int, seed: int) -> torch.Tensor:
    """(L, N) float64 rows p_i: random distributions with every entry > 0."""
    logits = 1.5 * torch.randn(
        num_positions, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return torch.softmax(logits, dim=-1)


def absorbing_oracle(p: torch.Tensor):
    """Exact absorbing log-score of p0 = prod_i p_i: log p_i(y) - log(e^sigma - 1) at MASK, else ratios."""
    log_p = p.log()  # (L, N)

    def score_fn(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        b, length = x_t.shape
        log_pi = log_p[:length].unsqueeze(0).expand(b, length, N)
        sigma = sigma_bar.double().view(b, 1, 1)
        log_esm1 = sigma + torch.log(-torch.expm1(-sigma))
        masked = torch.cat([log_pi - log_esm1, torch.zeros(b, length, 1, dtype=torch.float64)], dim=-1)
        log_px = log_pi.gather(-1, x_t.clamp(max=N - 1).unsqueeze(-1))
        unmasked = torch.cat([log_pi - log_px, log_esm1.expand(b, length, 1) - log_px], dim=-1)
        out = torch.where((x_t == N).unsqueeze(-1), masked, unmasked)
        return torch.where((x_t > N).unsqueeze(-1), torch.zeros_like(out), out).float()

    return score_fn


def uniform_oracle(p: torch.Tensor):
    """Exact uniform-graph log-score log p_t,i(y) - log p_t,i(x), p_t,i = e^-sigma p_i + (1 - e^-sigma)/N."""

    def score_fn(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        b, length = x_t.shape
        keep = torch.exp(-sigma_bar.double()).view(b, 1, 1)
        log_pt = (keep * p[:length].unsqueeze(0) + (1 - keep) / N).log()  # (B, L, N)
        out = log_pt - log_pt.gather(-1, x_t.clamp(max=N - 1).unsqueeze(-1))
        return torch.where((x_t >= N).unsqueeze(-1), torch.zeros_like(out), out).float()

    return score_fn


def chi_square_pvalue(samples: torch.Tensor, p: torch.Tensor) -> float:
    """P-value of the per-position counts of ``samples`` (B, L) under independent marginals p (L, N)."""
    num = samples.shape[0]
    counts = torch.stack(
        [torch.bincount(samples[:, i], minlength=N) for i in range(samples.shape[1])]
    ).double()
    expected = num * p
    stat = ((counts - expected) ** 2 / expected).sum()
    dof = samples.shape[1] * (N - 1)
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2.0))


# (graph, predictor, steps, schedule). With loglinear noise the absorbing Euler step coincides with the
# analytic one under the oracle (both unmask with probability dt / t_k), so Euler also runs on cosine.
ORACLE_CASES = [
    ("absorbing", "euler", 16, "loglinear"),
    ("absorbing", "euler", 16, "cosine"),
    ("absorbing", "analytic", 16, "loglinear"),
    ("absorbing", "analytic", 16, "geometric"),
    ("absorbing", "analytic", 1, "loglinear"),
    ("uniform", "analytic", 16, "loglinear"),
    ("uniform", "euler", 32, "loglinear"),
]
SCHEDULES = {"loglinear": LogLinear(1e-3), "cosine": Cosine(1e-3), "geometric": Geometric(1e-4, 20.0, 1e-3)}


@pytest.mark.parametrize(("graph_name", "predictor", "steps", "schedule"), ORACLE_CASES)
def test_oracle_marginals_match(graph_name: str, predictor: str, steps: int, schedule: str) -> None:
    """Driven by the factorised oracle, 4000 samples have per-position marginals p_i (chi-square p > 1e-3).

    The same samples fail the test against a permuted p, so the test has power.
    """
    length, num = 4, 4000
    p = random_factorised(length, seed=0)
    graph = Absorbing(N) if graph_name == "absorbing" else Uniform(N)
    oracle = absorbing_oracle(p) if graph_name == "absorbing" else uniform_oracle(p)
    template = torch.full((num, length), MASK)
    gen = torch.Generator().manual_seed(1)
    out = sample(oracle, graph, SCHEDULES[schedule], template, steps, predictor, generator=gen)
    assert int(out.max()) < N
    assert chi_square_pvalue(out, p) > 1e-3
    assert chi_square_pvalue(out, p.roll(1, dims=-1)) < 1e-6


def test_no_mask_survives_denoise_and_rows_of_different_lengths() -> None:
    """Denoising leaves no MASK even after one coarse step; padding stays PAD in rows of any length."""
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(9, N + 1, generator=gen)

    def score_fn(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        # Scaled like the model (scale_by_sigma) but with total mass 0.3, so one step keeps ~70% masked.
        log_esm1 = torch.log(torch.expm1(sigma_bar)).view(-1, 1, 1)
        logits = table[: x_t.shape[1]].expand(x_t.shape[0], -1, -1)
        residues = torch.log_softmax(logits[..., :N], -1) - log_esm1 + torch.log(torch.tensor(0.3))
        return torch.nn.functional.pad(residues, (0, 1))  # MASK column 0

    template = torch.full((3, 9), PAD)
    for row, length in enumerate([9, 4, 1]):
        template[row, :length] = MASK
    for predictor in ("analytic", "euler"):
        out = sample(score_fn, Absorbing(N), LogLinear(1e-3), template, 1, predictor, generator=gen)
        assert bool((out[template == PAD] == PAD).all())
        assert bool((out[template == MASK] < N).all())
        undenoised = sample(score_fn, Absorbing(N), LogLinear(1e-3), template, 1, predictor, False, gen)
        assert bool((undenoised[template == MASK] == MASK).any()), "without denoise one step leaves MASKs"


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_fixed_positions_are_kept(graph_cls, predictor: str) -> None:
    """Prefix, suffix and middle motif residues are exactly the template's, at every call and at the end."""
    template = torch.tensor(
        [
            [0, 1, 2, MASK, MASK, MASK, MASK, MASK],  # prefix
            [MASK, MASK, MASK, MASK, MASK, 3, 4, 0],  # suffix
            [MASK, MASK, 2, 2, 4, MASK, MASK, PAD],  # middle motif, shorter row
        ]
    )
    fixed = template < N
    seen = []
    p = random_factorised(8, seed=3)
    oracle = absorbing_oracle(p) if graph_cls is Absorbing else uniform_oracle(p)

    def recording(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        seen.append(x_t.clone())
        return oracle(x_t, sigma_bar)

    out = sample(
        recording, graph_cls(N), LogLinear(1e-3), template, 8, predictor, generator=torch.Generator()
    )
    assert len(seen) == 9
    for x in [*seen, out]:
        assert torch.equal(x[fixed], template[fixed])
        assert bool((x[template == PAD] == PAD).all())
    assert bool((out[template == MASK] < N).all())


def test_same_seed_same_tokens() -> None:
    """The sampler is a deterministic function of the generator seed."""
    p = random_factorised(6, seed=4)
    template = torch.full((8, 6), MASK)
    args = (absorbing_oracle(p), Absorbing(N), LogLinear(1e-3), template, 10)
    for predictor in ("analytic", "euler"):
        a = sample(*args, predictor, generator=torch.Generator().manual_seed(7))
        b = sample(*args, predictor, generator=torch.Generator().manual_seed(7))
        c = sample(*args, predictor, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
    uniform = (uniform_oracle(p), Uniform(N), LogLinear(1e-3), template, 10)
    assert torch.equal(
        sample(*uniform, generator=torch.Generator().manual_seed(7)),
        sample(*uniform, generator=torch.Generator().manual_seed(7)),
    )


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_score_sees_sigma_bar_of_the_time_grid(predictor: str) -> None:
    """Step k calls the score with sigma_bar(t_k), t_k = linspace(1, eps, steps + 1); denoise: sigma_bar(eps).

    Guards SEED_LESSONS item 10 (the old sampler fed t instead of sigma); a geometric schedule makes the
    two very different.
    """
    noise = Geometric(1e-4, 20.0, 1e-3)
    steps = 6
    seen: list[torch.Tensor] = []
    p = random_factorised(5, seed=5)
    oracle = absorbing_oracle(p)

    def recording(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        seen.append(sigma_bar.clone())
        return oracle(x_t, sigma_bar)

    template = torch.full((3, 5), MASK)
    sample(
        recording, Absorbing(N), noise, template, steps, predictor, generator=torch.Generator().manual_seed(0)
    )
    times = torch.linspace(1.0, 1e-3, steps + 1, dtype=torch.float64)
    want = noise.total(times).float()  # steps grid values, then sigma_bar(eps) for denoise
    got = torch.stack(seen)  # (steps + 1, B)
    assert got.shape == (steps + 1, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got, want.unsqueeze(-1).expand(-1, 3))
    assert not torch.allclose(got[:, 0], times.float())


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_absorbing_chain_never_resamples_an_unmasked_position(predictor: str) -> None:
    """Once a position leaves MASK it keeps its token in every later step and the output (SEED_LESSONS 10)."""
    p = random_factorised(10, seed=6)
    oracle = absorbing_oracle(p)
    seen: list[torch.Tensor] = []

    def recording(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        seen.append(x_t.clone())
        # A score that pushes hard towards unmasking keeps changes frequent, so a re-sampling bug shows.
        return oracle(x_t, sigma_bar)

    template = torch.full((64, 10), MASK)
    out = sample(
        recording,
        Absorbing(N),
        LogLinear(1e-3),
        template,
        12,
        predictor,
        generator=torch.Generator().manual_seed(9),
    )
    history = torch.stack([*seen, out])  # (calls + 1, B, L)
    unmasked = history != MASK
    assert bool(unmasked[-2].any() & ~unmasked[1].all()), "the chain should unmask gradually"
    for k in range(1, history.shape[0]):
        was = unmasked[k - 1]
        assert torch.equal(history[k][was], history[k - 1][was])


def test_template_of_fixed_residues_only_is_returned_unchanged() -> None:
    """A template with nothing to generate comes back as it is (fixed residues and PAD)."""
    template = torch.tensor([[0, 1, 2, PAD], [4, 4, 4, 4]])
    out = sample(absorbing_oracle(random_factorised(4, 0)), Absorbing(N), LogLinear(1e-3), template, 3)
    assert torch.equal(out, template)


def test_bad_requests_raise() -> None:
    """Unknown predictor, steps < 1, bad template ids or dtype are ValueErrors; a NaN score is reported."""
    oracle = absorbing_oracle(random_factorised(3, 0))
    args = (oracle, Absorbing(N), LogLinear(1e-3))
    template = torch.full((2, 3), MASK)
    with pytest.raises(ValueError, match="predictor"):
        sample(*args, template, 4, "ancestral")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample(*args, template, 0)
    with pytest.raises(ValueError, match=r"row 1 position 2 holds id 9"):
        sample(*args, torch.tensor([[0, 1, 2], [MASK, MASK, 9]]), 4)
    with pytest.raises(ValueError, match="int64"):
        sample(*args, template.int(), 4)
    with pytest.raises(FloatingPointError, match="NaN"):
        sample(lambda x, s: torch.full((*x.shape, N + 1), float("nan")), *args[1:], template, 4)


def test_sample_categorical_frequencies() -> None:
    """Gumbel-max on unnormalised log-probs draws with the normalised probabilities; -inf is never drawn."""
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    log_probs = (probs.log() + 3.0).float().expand(20000, 4)
    draws = sample_categorical(log_probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / 20000
    assert int(freq[3]) == 0
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
