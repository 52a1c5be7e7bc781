"""Absorbing and uniform graphs: forward marginals, score entropy vs brute force, reverse steps."""

from __future__ import annotations

import math

import pytest
import torch

from protlig_dd.config import GraphConfig
from protlig_dd.diffusion.graphs import Absorbing, Graph, Uniform, build_graph

SIGMAS = [1e-3, 0.3, 2.0, 9.0]


def kappa(a: float) -> float:
    return 0.0 if a == 0 else a * (math.log(a) - 1.0)


def brute_force_entropy(graph: Graph, log_score: torch.Tensor, sigma: float, x_t: int, x0: int) -> float:
    """l = sum_{y != x_t} w(x_t, y) [s_y - r_y log s_y + K(r_y)], r_y = p_t(y|x0)/p_t(x_t|x0), enumerated."""
    q = graph.rate_matrix().double()
    p = torch.linalg.matrix_exp(sigma * q)[x0]  # p_t(. | x0)
    total = 0.0
    for y in range(graph.dim):
        w = float(q[y, x_t])  # forward rate y -> x_t
        if y == x_t or w == 0.0:
            continue
        r = float(p[y] / p[x_t])
        s_hat = float(log_score[y])
        total += w * (math.exp(s_hat) - (r * s_hat if r > 0 else 0.0) + kappa(r))
    return total


def reachable_pairs(graph: Graph) -> list[tuple[int, int]]:
    """(x_t, x0) pairs with p_t(x_t | x0) > 0 and x0 a residue."""
    if graph.is_absorbing:
        return [(x0, x0) for x0 in range(graph.num_residues)] + [
            (graph.num_residues, x0) for x0 in range(graph.num_residues)
        ]
    return [(xt, x0) for xt in range(graph.dim) for x0 in range(graph.dim)]


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
@pytest.mark.parametrize("num_residues", [3, 5])
def test_score_entropy_matches_brute_force(graph_cls: type[Graph], num_residues: int) -> None:
    """The closed-form score entropy equals the generic definition enumerated on a tiny vocabulary."""
    graph = graph_cls(num_residues)
    gen = torch.Generator().manual_seed(0)
    pairs = reachable_pairs(graph)
    x_t = torch.tensor([[xt for xt, _ in pairs]])  # (1, P)
    x0 = torch.tensor([[x for _, x in pairs]])  # (1, P)
    for sigma in SIGMAS:
        log_score = torch.randn(1, len(pairs), graph.dim, generator=gen, dtype=torch.float64) * 1.5
        log_score.scatter_(-1, x_t.unsqueeze(-1), 0.0)  # the model's overwrite rule
        got = graph.score_entropy(log_score, torch.tensor([sigma]), x_t, x0)  # (1, P)
        want = torch.tensor(
            [[brute_force_entropy(graph, log_score[0, i], sigma, *pairs[i]) for i in range(len(pairs))]],
            dtype=torch.float64,
        )
        torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
def test_score_entropy_nonnegative_and_zero_at_true_score(graph_cls: type[Graph]) -> None:
    """l >= 0 for any score and l = 0 at s_y = r_y, the conditional ratios (score entropy is a divergence)."""
    graph = graph_cls(4)
    gen = torch.Generator().manual_seed(1)
    pairs = reachable_pairs(graph)
    x_t = torch.tensor([[xt for xt, _ in pairs]])
    x0 = torch.tensor([[x for _, x in pairs]])
    for sigma in SIGMAS:
        sig = torch.tensor([sigma])
        random_scores = torch.randn(1, len(pairs), graph.dim, generator=gen) * 3
        assert bool((graph.score_entropy(random_scores, sig, x_t, x0) >= -1e-5).all())

        p = graph.transition_probs(x0, sig).double()  # (1, P, dim)
        p_xt = p.gather(-1, x_t.unsqueeze(-1))
        true_log_score = torch.log(p / p_xt).float()  # -inf where the ratio is 0
        zero = graph.score_entropy(true_log_score, sig, x_t, x0)
        torch.testing.assert_close(zero, torch.zeros_like(zero), atol=2e-5 * max(1.0, 1 / sigma), rtol=0)


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
def test_score_entropy_zero_at_padding_and_finite_at_extremes(graph_cls: type[Graph]) -> None:
    """Positions whose x_t is PAD score 0; tiny and huge sigma_bar give finite values (expm1, no overflow)."""
    n = 5
    graph = graph_cls(n)
    x0 = torch.tensor([[0, 1, 2, n + 1], [3, 4, n + 1, n + 1]])
    x_t = torch.tensor([[n - 1, 1, 0, n + 1], [3, 0, n + 1, n + 1]])
    if graph.is_absorbing:
        x_t = torch.tensor([[n, 1, n, n + 1], [3, n, n + 1, n + 1]])
    log_score = torch.randn(2, 4, graph.dim)
    for sigma in [1e-7, 1.0, 60.0, 200.0]:
        out = graph.score_entropy(log_score, torch.tensor([sigma, sigma]), x_t, x0)
        assert out.shape == (2, 4)
        assert bool(torch.isfinite(out).all()), (sigma, out)
        assert float(out[0, 3]) == 0.0 and float(out[1, 2:].abs().sum()) == 0.0


def test_score_entropy_casts_bf16_to_fp32() -> None:
    """A bf16 score yields an fp32 loss equal to the fp32 computation on the same values."""
    graph = Absorbing(4)
    log_score = torch.randn(2, 3, 5).to(torch.bfloat16)
    x_t = torch.tensor([[4, 4, 1], [0, 4, 4]])
    x0 = torch.tensor([[2, 3, 1], [0, 1, 2]])
    sigma = torch.tensor([0.5, 1.5])
    out = graph.score_entropy(log_score, sigma, x_t, x0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, graph.score_entropy(log_score.float(), sigma, x_t, x0))


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
def test_transition_probs_equal_matrix_exponential(graph_cls: type[Graph]) -> None:
    """Closed-form p_t(y|x0) equals exp(sigma_bar Q)[x0] of the graph's rate matrix."""
    graph = graph_cls(4)
    x0 = torch.arange(4).unsqueeze(0)  # (1, 4)
    for sigma in SIGMAS:
        want = torch.linalg.matrix_exp(sigma * graph.rate_matrix().double())[x0]
        got = graph.transition_probs(x0, torch.tensor([sigma]))
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_rate_matrices() -> None:
    """Absorbing: residue -> MASK at rate 1; uniform: Q = (1/N) 11^T - I. Rows sum to 0."""
    absorbing, uniform = Absorbing(3), Uniform(3)
    expected = torch.tensor([[-1.0, 0, 0, 1], [0, -1, 0, 1], [0, 0, -1, 1], [0, 0, 0, 0]])
    torch.testing.assert_close(absorbing.rate_matrix(), expected)
    torch.testing.assert_close(uniform.rate_matrix(), torch.full((3, 3), 1 / 3) - torch.eye(3))
    for graph in (absorbing, uniform):
        torch.testing.assert_close(graph.rate_matrix().sum(-1), torch.zeros(graph.dim))


def test_absorbing_forward_marginal() -> None:
    """Absorbing corruption masks each real token with probability 1 - exp(-sigma_bar), else keeps it."""
    graph = Absorbing(5)
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 5, (4, 20000), generator=gen)
    sigma = torch.tensor([0.05, 0.5, 1.5, 4.0])
    x_t = graph.sample_transition(x0, sigma, torch.ones_like(x0, dtype=torch.bool), gen)
    masked = x_t == graph.mask_id
    assert bool(((x_t == x0) | masked).all())
    p = -torch.expm1(-sigma)
    se = torch.sqrt(p * (1 - p) / x0.shape[1])
    assert bool(((masked.float().mean(1) - p).abs() < 4 * se).all())


def test_uniform_forward_marginal() -> None:
    """Uniform corruption: P(x_t = y) = exp(-sigma) [y = x0] + (1 - exp(-sigma)) / N."""
    n = 4
    graph = Uniform(n)
    gen = torch.Generator().manual_seed(3)
    num = 40000
    x0 = torch.full((1, num), 2)
    for sigma in [0.2, 1.0, 3.0]:
        x_t = graph.sample_transition(x0, torch.tensor([sigma]), torch.ones_like(x0, dtype=torch.bool), gen)
        freq = torch.bincount(x_t[0], minlength=n).double() / num
        want = graph.transition_probs(torch.tensor([[2]]), torch.tensor([sigma]))[0, 0].double()
        se = torch.sqrt(want * (1 - want) / num)
        assert bool(((freq - want).abs() < 4 * se).all()), (sigma, freq, want)


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
def test_pads_are_never_noised(graph_cls: type[Graph]) -> None:
    """Positions outside real_mask keep their token (PAD) even at huge noise (SEED_LESSONS 3)."""
    n = 5
    graph = graph_cls(n)
    x0 = torch.tensor([[0, 1, 2, n + 1, n + 1], [3, 4, 0, 1, n + 1]])
    real = x0 != n + 1
    x_t = graph.sample_transition(x0, torch.tensor([50.0, 50.0]), real, torch.Generator().manual_seed(0))
    assert bool((x_t[~real] == n + 1).all())
    if graph.is_absorbing:
        assert bool((x_t[real] == n).all())
    else:
        assert bool((x_t[real] < n).all())


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
def test_analytic_step_is_exact_posterior(graph_cls: type[Graph]) -> None:
    """Driven by the exact one-position score, the analytic step samples q(y) p_d(x_t|y) / p_t(x_t) exactly.

    q is any distribution at the earlier time, p_t = q exp(dQ): Tweedie tau-leaping's defining property.
    """
    graph = graph_cls(4)
    gen = torch.Generator().manual_seed(4)
    q = torch.rand(graph.dim, generator=gen, dtype=torch.float64)
    q = q / q.sum()
    for d in [1e-3, 0.4, 3.0]:
        trans = torch.linalg.matrix_exp(d * graph.rate_matrix().double())  # trans[y, x] = p_d(x | y)
        p_t = q @ trans
        states = [graph.num_residues] if graph.is_absorbing else list(range(graph.dim))
        for x in states:
            log_score = torch.log(p_t / p_t[x]).float().view(1, 1, -1)
            log_probs = graph.analytic_log_probs(log_score, torch.tensor([[x]]), torch.tensor([d]))
            got = torch.softmax(log_probs.double(), dim=-1)[0, 0]
            want = q * trans[:, x] / p_t[x]
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("graph_cls", [Absorbing, Uniform])
def test_euler_step_matches_rate_formula(graph_cls: type[Graph]) -> None:
    """Euler probs equal e_{x_t} + step * R_hat with R_hat[y] = Q[y, x_t] s_y, diagonal = -row sum."""
    graph = graph_cls(4)
    gen = torch.Generator().manual_seed(5)
    x_t = torch.arange(graph.dim).unsqueeze(0)  # (1, dim)
    log_score = torch.randn(1, graph.dim, graph.dim, generator=gen)
    log_score.scatter_(-1, x_t.unsqueeze(-1), 0.0)
    step = 0.05
    got = torch.softmax(graph.euler_log_probs(log_score, x_t, torch.tensor([step])).double(), -1)
    q = graph.rate_matrix().double()
    for i in range(graph.dim):
        rate = q[:, i] * log_score[0, i].double().exp()
        rate[i] = 0.0
        rate[i] = -rate.sum()
        want = torch.nn.functional.one_hot(torch.tensor(i), graph.dim).double() + step * rate
        torch.testing.assert_close(got[0, i], want, rtol=1e-5, atol=1e-7)


def test_euler_and_analytic_clamp_stay_probability() -> None:
    """A step that would give the stay state negative mass clamps it at 0 instead of producing NaN."""
    graph = Absorbing(3)
    log_score = torch.full((1, 1, 4), 5.0)
    x_t = torch.tensor([[3]])
    for log_probs in (
        graph.euler_log_probs(log_score, x_t, torch.tensor([1.0])),
        graph.analytic_log_probs(log_score, x_t, torch.tensor([2.0])),
    ):
        assert not bool(torch.isnan(log_probs).any())
        assert float(log_probs[0, 0, 3]) == -math.inf


def test_absorbing_unmasked_positions_stay() -> None:
    """Euler and analytic steps keep every non-MASK position with probability 1."""
    graph = Absorbing(4)
    x_t = torch.tensor([[0, 1, 2, 3]])
    log_score = torch.randn(1, 4, 5)
    for log_probs in (
        graph.euler_log_probs(log_score, x_t, torch.tensor([0.5])),
        graph.analytic_log_probs(log_score, x_t, torch.tensor([0.5])),
    ):
        probs = torch.softmax(log_probs, -1)
        torch.testing.assert_close(probs, torch.nn.functional.one_hot(x_t, 5).float())


def test_denoise_drops_mask_column() -> None:
    """The absorbing denoising distribution covers residues only and is proportional to s at MASK."""
    graph = Absorbing(4)
    log_score = torch.randn(1, 1, 5)
    out = graph.denoise_log_probs(log_score, torch.tensor([[4]]), torch.tensor([1e-3]))
    assert out.shape == (1, 1, 4)
    torch.testing.assert_close(torch.softmax(out, -1), torch.softmax(log_score[..., :4], -1))


def test_sample_limit_and_build_graph() -> None:
    """build_graph maps GraphConfig.type; limits are all-MASK (absorbing) or residues (uniform)."""
    absorbing = build_graph(GraphConfig(type="absorbing"), 26)
    uniform = build_graph(GraphConfig(type="uniform"), 26)
    assert isinstance(absorbing, Absorbing) and absorbing.dim == 27 and absorbing.mask_id == 26
    assert isinstance(uniform, Uniform) and uniform.dim == 26
    assert bool((absorbing.sample_limit((2, 3), "cpu") == 26).all())
    limit = uniform.sample_limit((50, 50), "cpu", torch.Generator().manual_seed(0))
    assert limit.dtype == torch.int64 and int(limit.min()) >= 0 and int(limit.max()) <= 25
    assert len(limit.unique()) == 26
