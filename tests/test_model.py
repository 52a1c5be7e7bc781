"""SEDDTransformer: shapes, masking/packing invariance, per-row conditioning, score convention."""

from __future__ import annotations

import math

import pytest
import torch

from protlig_dd.config import ModelConfig
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.batch import Batch
from protlig_dd.model.transformer import SEDDTransformer, modulate

ALPHABET = Alphabet()
N = ALPHABET.num_residues
MASK = ALPHABET.mask_id
PAD = ALPHABET.pad_id


def small_config(dropout: float = 0.0, gelu: str = "tanh") -> ModelConfig:
    return ModelConfig(
        hidden_size=64, num_heads=4, num_blocks=2, cond_dim=32, max_length=64, dropout=dropout, gelu=gelu
    )


def randomized_model(
    absorbing: bool = True, dropout: float = 0.0, seed: int = 0, gelu: str = "tanh"
) -> SEDDTransformer:
    """A model whose zero-initialised (adaLN-Zero, output) weights are made random, so the output
    depends on the input, sigma and every block (a fresh model ignores all of them)."""
    torch.manual_seed(seed)
    model = SEDDTransformer(small_config(dropout, gelu), N, absorbing=absorbing)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.2)
    return model.eval()


def random_sequences(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, N, (n,), generator=gen) for n in lengths]


def run(model: SEDDTransformer, batch: Batch, sigma: torch.Tensor) -> torch.Tensor:
    return model(batch.tokens, sigma, batch.segment_ids, batch.positions)


def test_modulate_rejects_the_double_unsqueeze_broadcast() -> None:
    """Guards SEED_LESSONS item 1: a (B, 1, 1, D) shift must raise, not broadcast to (B, B, L, D)."""
    x = torch.randn(3, 5, 8)
    good = torch.randn(3, 1, 8)
    assert modulate(x, good, good).shape == (3, 5, 8)
    torch.testing.assert_close(modulate(x, good, good), x * (1 + good) + good)
    with pytest.raises(ValueError, match="shift/scale"):
        modulate(x, good[:, None], good[:, None])
    with pytest.raises(ValueError, match="shift/scale"):
        modulate(x, torch.randn(1, 1, 8), torch.randn(1, 1, 8))


@pytest.mark.parametrize("absorbing, out_dim", [(True, N + 1), (False, N)])
def test_output_shape_mixed_lengths(absorbing: bool, out_dim: int) -> None:
    """Guards the (B, L, V) output contract on a padded batch of mixed lengths (no (B, B, ...) blow-up),
    float32, with N+1 states for absorbing (MASK last) and N for uniform."""
    model = randomized_model(absorbing)
    batch = Batch.from_sequences(random_sequences([3, 9, 14, 1]), pad_id=PAD)
    out = run(model, batch, torch.rand(4) + 0.1)
    assert out.shape == (4, 14, out_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # pad positions score nothing
    assert (out[~batch.real_mask] == 0).all()


def test_padding_does_not_change_real_outputs() -> None:
    """Guards SEED_LESSONS item 3 (pad attended to): appending padding leaves real outputs unchanged."""
    model = randomized_model()
    sequences = random_sequences([6, 11])
    sigma = torch.tensor([0.3, 2.0])
    short = Batch.from_sequences(sequences, pad_id=PAD)
    long = Batch.from_sequences(sequences, pad_id=PAD, length=30)
    out_short = run(model, short, sigma)
    out_long = run(model, long, sigma)
    mask = short.real_mask
    torch.testing.assert_close(out_long[:, :11][mask], out_short[mask], rtol=1e-5, atol=1e-5)


def test_packing_matches_sequences_alone() -> None:
    """Guards packing: sequences packed in one row (segment mask, restarting positions) score exactly
    as each alone, given the same sigma (one sigma per row)."""
    model = randomized_model()
    a, b, c = random_sequences([5, 8, 4], seed=1)
    sigma = torch.tensor([1.3])
    packed = Batch.from_packed_rows([[a, b, c]], pad_id=PAD, length=20)
    out_packed = run(model, packed, sigma)[0]  # (20, V)
    start = 0
    for seq in (a, b, c):
        alone = run(model, Batch.from_sequences([seq], pad_id=PAD), sigma)[0]
        torch.testing.assert_close(out_packed[start : start + len(seq)], alone, rtol=1e-5, atol=1e-5)
        start += len(seq)
    assert (out_packed[start:] == 0).all()


def test_without_segment_ids_equals_full_segment_mask() -> None:
    """Guards the no-mask fast path: segment_ids=None, positions=None equals an all-ones segment."""
    model = randomized_model()
    batch = Batch.from_sequences(random_sequences([10, 10]), pad_id=PAD)
    sigma = torch.tensor([0.5, 3.0])
    torch.testing.assert_close(model(batch.tokens, sigma), run(model, batch, sigma), rtol=1e-5, atol=1e-5)


def test_each_row_depends_only_on_its_own_sigma() -> None:
    """Guards SEED_LESSONS item 1: changing sigma of row 0 leaves rows 1.. unchanged (and changes row 0)."""
    model = randomized_model()
    batch = Batch.from_sequences(random_sequences([7, 7, 5]), pad_id=PAD)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    out = run(model, batch, sigma)
    changed = sigma.clone()
    changed[0] = 4.0
    out_changed = run(model, batch, changed)
    torch.testing.assert_close(out_changed[1:], out[1:], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out_changed[0], out[0], atol=1e-3)


def test_gradients_finite_and_reach_every_parameter() -> None:
    """Guards training health: backward gives finite gradients, nonzero for every parameter."""
    model = randomized_model(dropout=0.1).train()
    batch = Batch.from_packed_rows(
        [[*random_sequences([4, 6])], random_sequences([9])], pad_id=PAD, length=12
    )
    tokens = batch.tokens.clone()
    tokens[0, 1] = MASK
    out = model(tokens, torch.tensor([0.2, 1.5]), batch.segment_ids, batch.positions)
    (out.square().mean()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_fresh_model_gives_uniform_initial_score() -> None:
    """Guards scale_by_sigma and the zero-initialised output: at init every non-current entry equals
    -log(expm1(sigma)) - log N (computed with expm1, accurate for tiny sigma) and x_t's entry is 0."""
    torch.manual_seed(0)
    model = SEDDTransformer(small_config(), N, absorbing=True).eval()
    batch = Batch.from_sequences(random_sequences([6, 6, 6]), pad_id=PAD)
    tokens = batch.tokens.clone()
    tokens[:, 2] = MASK
    sigma = torch.tensor([1e-6, 0.7, 6.9])
    out = model(tokens, sigma, batch.segment_ids, batch.positions)
    expected = -torch.log(torch.expm1(sigma.double())) - math.log(N)  # (B,)
    current = torch.nn.functional.one_hot(tokens, N + 2)[..., : N + 1].bool()  # (B, L, N+1)
    assert (out[current] == 0).all()
    others = out.masked_fill(current, float("nan"))
    for row in range(3):
        values = others[row][~current[row]]
        torch.testing.assert_close(values.double(), expected[row].expand_as(values), rtol=1e-6, atol=1e-6)
    assert math.isfinite(float(expected[0])) and float(expected[0]) > 10  # log(1/1e-6) - log 26


def test_mask_column_behaviour() -> None:
    """Guards the absorbing output layout: MASK is the last column; at a MASK position it is the
    current state (0), at residue positions the residue's own entry is 0 and MASK's is a finite score."""
    model = randomized_model()
    batch = Batch.from_sequences(random_sequences([8]), pad_id=PAD, length=10)
    tokens = batch.tokens.clone()
    tokens[0, [1, 4]] = MASK
    out = model(tokens, torch.tensor([1.0]), batch.segment_ids, batch.positions)[0]  # (10, N+1)
    assert out.shape[-1] == MASK + 1
    assert (out[[1, 4], MASK] == 0).all()
    assert (out[[1, 4], :MASK] != 0).all()
    residue_positions = [0, 2, 3, 5, 6, 7]
    for i in residue_positions:
        assert out[i, tokens[0, i]] == 0
        assert torch.isfinite(out[i, MASK]) and out[i, MASK] != 0
    assert (out[8:] == 0).all()


def test_uniform_graph_has_no_sigma_scaling() -> None:
    """Guards the uniform branch: no scale_by_sigma (a fresh model gives all zeros), N outputs,
    and the current token's entry is 0 with a random model."""
    torch.manual_seed(0)
    fresh = SEDDTransformer(small_config(), N, absorbing=False).eval()
    batch = Batch.from_sequences(random_sequences([5, 3]), pad_id=PAD)
    out = run(fresh, batch, torch.tensor([0.5, 2.0]))
    assert out.shape == (2, 5, N) and (out == 0).all()
    model = randomized_model(absorbing=False)
    out = run(model, batch, torch.tensor([0.5, 2.0]))
    real = batch.real_mask
    current = out.gather(-1, batch.tokens.clamp(max=N - 1)[..., None])[..., 0]
    assert (current[real] == 0).all()
    assert (out[~real] == 0).all()


def test_dropout_only_in_train_mode() -> None:
    """Guards cfg.dropout: used in train mode (outputs vary), off in eval mode (deterministic)."""
    model = randomized_model(dropout=0.3)
    batch = Batch.from_sequences(random_sequences([12]), pad_id=PAD)
    sigma = torch.tensor([1.0])
    model.eval()
    torch.testing.assert_close(run(model, batch, sigma), run(model, batch, sigma), rtol=0, atol=0)
    model.train()
    assert not torch.allclose(run(model, batch, sigma), run(model, batch, sigma))
    no_dropout = randomized_model(dropout=0.0).train()
    torch.testing.assert_close(run(no_dropout, batch, sigma), run(no_dropout, batch, sigma), rtol=0, atol=0)


def test_bf16_autocast_returns_float32_close_to_fp32() -> None:
    """Guards mixed precision: under CPU bf16 autocast the output is float32 and close to fp32."""
    model = randomized_model()
    batch = Batch.from_sequences(random_sequences([16, 9]), pad_id=PAD)
    sigma = torch.tensor([0.5, 2.0])
    reference = run(model, batch, sigma)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, batch, sigma)
    assert out.dtype == torch.float32
    scale = reference.abs().max()
    assert (out - reference).abs().max() < 0.05 * scale
    assert not torch.equal(out, reference)  # autocast really ran in bf16


def test_gelu_variants_are_the_named_functions_and_nearly_equal() -> None:
    """Guards model.gelu: "tanh" is GELU's tanh approximation, "erf" the exact GELU; with the same
    weights the two models differ by far less than bf16 autocast changes either (they are
    interchangeable in bf16 training, which is why the CPU configs may pick the cheaper erf)."""
    x = torch.linspace(-6.0, 6.0, 1001)
    for variant, approximate in (("tanh", "tanh"), ("erf", "none")):
        activation = randomized_model(gelu=variant).blocks[0].mlp[1]
        torch.testing.assert_close(activation(x), torch.nn.functional.gelu(x, approximate=approximate))
    tanh_model, erf_model = randomized_model(gelu="tanh"), randomized_model(gelu="erf")
    batch = Batch.from_sequences(random_sequences([16, 9]), pad_id=PAD)
    sigma = torch.tensor([0.5, 2.0])
    reference = run(tanh_model, batch, sigma)
    variant_gap = (run(erf_model, batch, sigma) - reference).abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_gap = (run(tanh_model, batch, sigma) - reference).abs().max()
    assert 0 < variant_gap < 0.1 * bf16_gap


def test_bad_input_shapes_raise() -> None:
    """Guards 'raise, never reshape' at the model boundary: sigma (B,), matching segment/position shapes."""
    model = randomized_model()
    tokens = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="sigma_bar"):
        model(tokens, torch.ones(2, 1))
    with pytest.raises(ValueError, match="sigma_bar"):
        model(tokens, torch.ones(3))
    with pytest.raises(ValueError, match="segment_ids"):
        model(tokens, torch.ones(2), torch.ones(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="positions"):
        model(tokens, torch.ones(2), None, torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens"):
        model(torch.zeros(10, dtype=torch.long), torch.ones(1))


def test_parameter_and_flop_counts() -> None:
    """Guards the MFU inputs: num_parameters counts everything; flops_per_token = 6 * per-token matmul
    weights + 12 * blocks * hidden * L, computed by hand for the small config."""
    cfg = small_config()
    model = SEDDTransformer(cfg, N, absorbing=True)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    d, f = cfg.hidden_size, cfg.mlp_ratio * cfg.hidden_size
    per_block = 3 * d * d + d * d + (d * f + f) + (f * d + d)
    output = d * (N + 1) + (N + 1)
    matmul = cfg.num_blocks * per_block + output
    assert model.flops_per_token(100) == 6 * matmul + 12 * cfg.num_blocks * d * 100
    with pytest.raises(ValueError):
        model.flops_per_token(0)
