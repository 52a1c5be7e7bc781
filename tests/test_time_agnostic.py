"""The time-agnostic absorbing parameterisation (model.time_conditioning: false) and what it enables:
the analytic score, its loss as MDLM's weighted cross-entropy, the oracle tests of SEDD_MATH.md for
this parameterisation, and the cached sampler (same tokens, at most one network pass per change)."""

from __future__ import annotations

import math

import pytest
import torch
from test_samplers import chi_square_pvalue

from protlig_dd.config import ConfigError, ModelConfig, load_config
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.batch import Batch
from protlig_dd.diffusion.cached_score import CachedCleanScore
from protlig_dd.diffusion.graphs import Absorbing, score_from_clean_log_probs
from protlig_dd.diffusion.likelihood import likelihood_bound
from protlig_dd.diffusion.loss import score_entropy_loss
from protlig_dd.diffusion.noise import Cosine, LogLinear
from protlig_dd.diffusion.samplers import sample
from protlig_dd.generation import generate
from protlig_dd.model.transformer import SEDDTransformer

N = 5
MASK = N
PAD = N + 1


def random_factorised(num_positions: int, seed: int) -> torch.Tensor:
    """(L, N) float64 rows p_i: random distributions with every entry > 0."""
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(1.5 * torch.randn(num_positions, N, generator=gen, dtype=torch.float64), dim=-1)


def clean_oracle(p: torch.Tensor):
    """A time-agnostic oracle of the factorised p0 = prod_i p_i: clean log-probs (B, L, N) = log p_i."""

    def clean(x_t: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        b, length = x_t.shape
        return p.log()[:length].float().expand(b, length, N)

    return clean


def oracle_score_fn(p: torch.Tensor):
    """ScoreFn of the clean oracle through the analytic score (the parameterisation under test)."""
    clean = clean_oracle(p)
    return lambda x_t, sigma_bar: score_from_clean_log_probs(clean(x_t), x_t, sigma_bar, N)


def tiny_model(seed: int = 0, max_length: int = 64) -> SEDDTransformer:
    """A randomly initialised time-agnostic model over the protein alphabet (weights made non-trivial)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        hidden_size=32, num_heads=2, num_blocks=2, cond_dim=16, max_length=max_length, dropout=0.0,
        time_conditioning=False,
    )
    model = SEDDTransformer(cfg, num_residues=Alphabet().num_residues, absorbing=True).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model


def test_derived_score_equals_the_ratio_definition() -> None:
    """s(MASK -> y) = p_t(y) / p_t(MASK), with p_t from the forward transition of a known p0 (brute force)."""
    graph = Absorbing(N)
    p0 = random_factorised(1, 3)[0]  # (N,)
    for sigma in (1e-3, 0.3, 2.0, 30.0, 200.0):
        sigma_bar = torch.tensor([sigma], dtype=torch.float64)
        p_t = sum(p0[x] * graph.transition_probs(torch.tensor([[x]]), sigma_bar)[0, 0].double() for x in range(N))
        expected = torch.log(p0) + (-sigma) - math.log(-math.expm1(-sigma))  # log p_t(y) - log p_t(MASK)
        got = score_from_clean_log_probs(p0.log().view(1, 1, N), torch.tensor([[MASK]]), sigma_bar, N)[0, 0]
        torch.testing.assert_close(got[:N].double(), expected, rtol=1e-5, atol=1e-5)
        assert float(got[MASK]) == 0.0  # the current state's entry
        if sigma < 20:  # p_t itself underflows in float32 beyond that; the closed form does not
            torch.testing.assert_close(got[:N].double(), (p_t[:N] / p_t[MASK]).log(), rtol=1e-4, atol=1e-4)
        assert torch.isfinite(got).all()


def test_loss_equals_weighted_cross_entropy() -> None:
    """Score entropy of the time-agnostic model = sigma'(t) / (e^sigma - 1) * sum over MASK of -log p(x0)
    (RADD / MDLM): checked row by row on random inputs, with padding and packing."""
    model = tiny_model(1)
    graph, noise = Absorbing(model.num_residues), LogLinear(1e-3)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.num_residues, (4, 24), generator=gen)
    tokens[2, 15:] = model.pad_id
    segment_ids = torch.ones(4, 24, dtype=torch.int32)
    segment_ids[2, 15:] = 0
    segment_ids[3, 10:] = 2  # two sequences packed in row 3
    positions = torch.arange(24).expand(4, 24).clone()
    positions[3, 10:] -= 10
    batch = Batch(tokens=tokens, segment_ids=segment_ids, positions=positions)
    t = torch.tensor([0.05, 0.3, 0.7, 0.95])

    def score(x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        score.x_t = x_t
        return model(x_t, sigma_bar, segment_ids, positions)

    out = score_entropy_loss(score, graph, noise, batch, generator=torch.Generator().manual_seed(5), t=t)
    x_t = score.x_t
    log_p = model.clean_log_probs(x_t, segment_ids, positions).double()
    sigma = noise.total(t.double())
    at_x0 = log_p.gather(-1, tokens.clamp(max=model.num_residues - 1).unsqueeze(-1)).squeeze(-1)
    masked = (x_t == model.num_residues) & (segment_ids > 0)
    weight = noise.rate(t.double()) / torch.expm1(sigma)
    expected = weight * torch.where(masked, -at_x0, torch.zeros_like(at_x0)).sum(dim=1)
    torch.testing.assert_close(out.row_loss.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("noise", [LogLinear(1e-3), Cosine(1e-3)], ids=["loglinear", "cosine"])
def test_oracle_bound_reproduces_true_nll(noise) -> None:
    """SEDD_MATH oracle test for this parameterisation: with the exact clean conditional of a factorised
    p0, the bound estimate equals c * (-log p0(x)) within 4 standard errors."""
    p = random_factorised(6, 0)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, N, (6,), generator=gen).tolist() for _ in range(3)] + [p.argmax(-1).tolist()]
    batch = Batch.from_sequences(seqs, pad_id=PAD)
    out = likelihood_bound(oracle_score_fn(p), Absorbing(N), noise, batch, num_samples=1000, generator=gen)
    c = math.exp(-float(noise.total(noise.eps))) - math.exp(-float(noise.total(1.0)))
    for k, seq in enumerate(seqs):
        want = -c * sum(math.log(float(p[i, y])) for i, y in enumerate(seq))
        got, se = float(out.bound[k]), float(out.stderr[k])
        assert 0 < se < 0.05 * want and abs(got - want) < 4 * se, (k, got, se, want)


@pytest.mark.parametrize("cached", [False, True])
def test_oracle_sampler_marginals(cached: bool) -> None:
    """Driven by the clean oracle (directly or through the cache), 4000 samples have marginals p_i
    (chi-square p > 1e-3 at every position)."""
    p = random_factorised(3, 1)
    template = torch.full((4000, 3), MASK, dtype=torch.int64)
    if cached:
        score = CachedCleanScore(clean_oracle(p), lambda lp, x, s: score_from_clean_log_probs(lp, x, s, N), MASK)
    else:
        score = oracle_score_fn(p)
    out = sample(score, Absorbing(N), LogLinear(1e-3), template, 64, generator=torch.Generator().manual_seed(0))
    assert chi_square_pvalue(out, p) > 1e-3  # the same check as the time-conditioned oracle (N = 5 there too)
    assert chi_square_pvalue(out, p.roll(1, dims=-1)) < 1e-6


def test_cached_sampling_is_identical_and_runs_at_most_once_per_change() -> None:
    """Same seed, same tokens with and without the cache; with 4x more steps than residues the cached
    sampler runs the network at most once per residue per row (a row only changes by unmasking)."""
    model = tiny_model(2)
    graph, noise, alphabet = Absorbing(model.num_residues), LogLinear(1e-3), Alphabet()
    lengths = [32, 20, 32, 7]
    results = {}
    for cache in (True, False):
        results[cache] = generate(
            model, graph, noise, alphabet, lengths=lengths, steps=128, cache=cache,
            generator=torch.Generator().manual_seed(4), batch_size=3,
        )
    assert torch.equal(results[True].tokens, results[False].tokens)
    assert results[False].network_passes.tolist() == [129] * 4  # 128 steps + the denoising step
    cached_passes = results[True].network_passes
    assert (cached_passes <= torch.tensor(lengths)).all(), cached_passes
    assert (cached_passes >= 1).all()
    assert not (results[True].tokens == alphabet.mask_id).any()


def test_cached_sampling_keeps_template_residues() -> None:
    """A motif fixed in the template is kept, and the cache gives the uncached tokens around it."""
    model = tiny_model(3)
    graph, noise, alphabet = Absorbing(model.num_residues), LogLinear(1e-3), Alphabet()
    template = torch.full((2, 16), alphabet.mask_id, dtype=torch.int64)
    template[:, 5:9] = torch.as_tensor(alphabet.encode("WCHW"), dtype=torch.int64)
    out = {
        cache: generate(
            model, graph, noise, alphabet, templates=template, steps=40, cache=cache,
            generator=torch.Generator().manual_seed(1),
        )
        for cache in (True, False)
    }
    assert torch.equal(out[True].tokens, out[False].tokens)
    assert all(s[5:9] == "WCHW" for s in out[True].sequences)


def test_time_agnostic_network_ignores_the_noise_level() -> None:
    """The network output (clean log-probs) does not depend on sigma; the log-score moves only by the
    analytic shift -log(e^sigma - 1), finite even at sigma = 100 (geometric schedules reach it)."""
    model = tiny_model(4)
    tokens = torch.randint(0, model.num_residues + 1, (2, 12), generator=torch.Generator().manual_seed(0))
    low = model(tokens, torch.tensor([0.01, 0.01]))
    high = model(tokens, torch.tensor([100.0, 100.0]))
    assert torch.isfinite(high).all()
    masked = tokens == model.num_residues
    shift = (-math.log(math.expm1(0.01))) - (-100.0)
    diff = (low - high)[..., : model.num_residues][masked]
    torch.testing.assert_close(diff, torch.full_like(diff, shift), rtol=1e-4, atol=1e-3)
    assert model.sigma_embedder is None


def test_time_agnostic_needs_the_absorbing_graph() -> None:
    """model.time_conditioning: false with the uniform graph is a config error naming both keys."""
    with pytest.raises(ConfigError, match="time_conditioning.*absorbing"):
        load_config(None, ["model.time_conditioning=false", "graph.type=uniform"])


def test_local_mixing_stays_inside_each_packed_sequence() -> None:
    """The local convolution (model.local_mixing_kernel) never mixes across packed sequences or from
    padding: a packed row gives each sequence the output it has alone (brute force per segment)."""
    from protlig_dd.model.local_mixing import LocalMixing, neighbour_masks

    torch.manual_seed(0)
    mixing = LocalMixing(4, 5)
    with torch.no_grad():
        mixing.weight.normal_()
    x = torch.randn(1, 10, 4)
    segment_ids = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0]])
    packed = mixing(x, neighbour_masks(segment_ids, 1, 10, 2, x.device))
    for start, end in ((0, 4), (4, 9)):
        alone = mixing(x[:, start:end], neighbour_masks(None, 1, end - start, 2, x.device))
        torch.testing.assert_close(packed[:, start:end], alone)
    # Brute force at one position: sum over offsets within the segment.
    expected = sum(mixing.weight[o + 2] * x[0, 5 + o] for o in range(-1, 3))  # position 5: offsets -1..2
    torch.testing.assert_close(packed[0, 5], expected)


def test_local_mixing_model_starts_as_the_plain_model() -> None:
    """Zero-initialised local mixing leaves a fresh model's output unchanged, and it learns (gradient)."""
    torch.manual_seed(0)
    plain_cfg = ModelConfig(hidden_size=32, num_heads=2, num_blocks=2, cond_dim=16, max_length=32,
                            dropout=0.0, time_conditioning=False)
    mixed_cfg = ModelConfig(**{**plain_cfg.__dict__, "local_mixing_kernel": 7})
    plain = SEDDTransformer(plain_cfg, num_residues=Alphabet().num_residues, absorbing=True)
    mixed = SEDDTransformer(mixed_cfg, num_residues=Alphabet().num_residues, absorbing=True)
    mixed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        for model in (plain, mixed):
            for name, param in model.named_parameters():
                if "local" not in name:
                    param.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(hash(name) % 1000))
    tokens = torch.randint(0, 26, (2, 20), generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.5, 2.0])
    torch.testing.assert_close(plain(tokens, sigma), mixed(tokens, sigma))
    mixed(tokens, sigma).sum().backward()
    assert all(float(block.local.weight.grad.abs().sum()) > 0 for block in mixed.blocks)
