"""The fast path (bf16 autocast, torch.compile, the fused elementwise forms, sorted generation) is the
same model: loss curves match plain fp32, compiled equals eager, rewritten ops equal their reference.

No wall-clock assertion: speed is measured by scripts/benchmark.py, not by tests.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_CONFIG

from protlig_dd.config import Config, ModelConfig, load_config
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.batch import Batch
from protlig_dd.data.loader import build_train_stream
from protlig_dd.data.pipeline import prepare_splits
from protlig_dd.diffusion.loss import score_entropy_loss
from protlig_dd.diffusion.samplers import sample
from protlig_dd.diffusion.templates import template_batch, templates_from_lengths
from protlig_dd.generation import generate
from protlig_dd.model.fast_ops import (
    DROPOUT_LEVELS,
    apply_rotary,
    apply_rotary_rolled,
    dropout,
    dropout_reference,
    signed_sin,
)
from protlig_dd.model.rotary import RotaryEmbedding
from protlig_dd.model.score_function import batch_layout, make_score_fn
from protlig_dd.model.transformer import SEDDTransformer
from protlig_dd.training.builders import build_diffusion, build_model, build_optimizer

ALPHABET = Alphabet()
CURVE_STEPS = 40


def curve_config(cache_dir: Path) -> Config:
    """The tiny test config, widened a little so 40 steps visibly learn, without dropout (so the
    fp32 and bf16 runs differ only by precision)."""
    return load_config(
        TINY_CONFIG,
        [
            f"data.cache_dir={cache_dir}",
            "model.hidden_size=64",
            "model.num_heads=4",
            "model.num_blocks=2",
            "model.cond_dim=32",
            "model.dropout=0.0",
            "data.tokens_per_batch=512",
            "optim.lr=0.003",
            "optim.warmup_steps=0",
        ],
    )


def training_batches(cfg: Config, count: int) -> list[Batch]:
    """``count`` packed batches of real sequences from the embedded UniRef50 sample."""
    splits = prepare_splits(cfg.data, ALPHABET, cfg.data.cache_dir, progress=False)
    stream = build_train_stream(cfg.data, splits.train, cfg.model.max_length, ALPHABET.pad_id, seed=0)
    return [next(stream) for _ in range(count)]


def loss_curve(cfg: Config, batches: list[Batch], precision: str, compile_model: bool = False) -> list[float]:
    """Per-step losses of a plain training loop (loss, backward, clip, AdamW) from a fixed init.

    Every step draws its times and masks from a generator seeded by the step index, so two runs see
    the same noise and their curves differ only by numerics.
    """
    torch.manual_seed(0)
    model = build_model(cfg, ALPHABET).train()
    graph, noise = build_diffusion(cfg, ALPHABET)
    optimizer = build_optimizer(cfg.optim, model, torch.device("cpu"))
    network = torch.compile(model) if compile_model else model
    generator = torch.Generator()
    losses = []
    for step in range(CURVE_STEPS):
        batch = batches[step % len(batches)]
        segment_ids, positions = batch_layout(batch)
        generator.manual_seed(step)
        score = make_score_fn(network, segment_ids, positions, precision, torch.device("cpu"))
        out = score_entropy_loss(score, graph, noise, batch, generator=generator)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
    return losses


def assert_curves_match(reference: list[float], fast: list[float]) -> None:
    """Same noise, so step-by-step values agree to 1% on average (5% at worst; measured: 4e-5 and 1e-4
    on this CPU); both runs must have learned."""
    ref, new = torch.tensor(reference), torch.tensor(fast)
    assert torch.isfinite(new).all()
    relative = (new - ref).abs() / ref
    assert float(relative.mean()) < 0.01, relative
    assert float(relative.max()) < 0.05, relative
    # Learning happened (a broken update would leave the loss where it started): the last quarter's
    # mean is clearly below the first quarter's in both runs, by nearly the same amount.
    quarter = CURVE_STEPS // 4
    drop_ref = float(ref[:quarter].mean() - ref[-quarter:].mean())
    drop_new = float(new[:quarter].mean() - new[-quarter:].mean())
    assert drop_ref > 0.05 * float(ref[:quarter].mean())
    assert abs(drop_new - drop_ref) < 0.25 * drop_ref


def test_bf16_autocast_training_matches_fp32_loss_curve(shared_cache_dir: Path) -> None:
    """Guards the bf16 fast path: 40 optimizer steps under CPU bf16 autocast track the plain fp32 curve
    (same init, same data, same noise) within 1% per step on average, and both learn."""
    cfg = curve_config(shared_cache_dir)
    batches = training_batches(cfg, 4)
    reference = loss_curve(cfg, batches, "fp32")
    fast = loss_curve(cfg, batches, "bf16")
    assert reference != fast  # the bf16 run really ran in lower precision
    assert_curves_match(reference, fast)


def randomized_model(cfg: ModelConfig) -> SEDDTransformer:
    """A model whose zero-initialised weights (adaLN-Zero, output layer) are made random, so the
    output depends on every block."""
    torch.manual_seed(3)
    model = SEDDTransformer(cfg, ALPHABET.num_residues, absorbing=True)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.2)
    return model


def packed_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens, sigma, segment_ids, positions of two packed rows with padding and MASK tokens."""
    gen = torch.Generator().manual_seed(4)
    batch = Batch.from_packed_rows(
        [
            [
                torch.randint(0, 26, (9,), generator=gen).tolist(),
                torch.randint(0, 26, (12,), generator=gen).tolist(),
            ],
            [torch.randint(0, 26, (17,), generator=gen).tolist()],
        ],
        pad_id=ALPHABET.pad_id,
        length=24,
    )
    tokens = batch.tokens.clone()
    tokens[0, [1, 4, 13]] = ALPHABET.mask_id
    tokens[1, [0, 5]] = ALPHABET.mask_id
    return tokens, torch.tensor([0.3, 2.5]), batch.segment_ids, batch.positions


@pytest.mark.slow
def test_compiled_model_matches_eager() -> None:
    """Guards training.compile: torch.compile(model) gives the eager outputs and gradients (fp32),
    on a packed batch with padding (the masked SDPA path). Slow: inductor compiles for ~40 s here."""
    model = randomized_model(
        ModelConfig(hidden_size=32, num_heads=2, num_blocks=2, cond_dim=16, max_length=32, dropout=0.0)
    )
    compiled = torch.compile(model)
    inputs = packed_inputs()
    eager_out = model(*inputs)
    eager_out.square().mean().backward()
    eager_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled_out = compiled(*inputs)
    compiled_out.square().mean().backward()
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-4, atol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, eager_grads[name], rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.slow
def test_compiled_bf16_training_matches_fp32_loss_curve(shared_cache_dir: Path) -> None:
    """Guards the full fast path (compiled model under bf16 autocast) against the plain fp32 loss curve.
    Slow: compiling forward and backward takes about a minute on a 2-core CPU."""
    cfg = curve_config(shared_cache_dir)
    batches = training_batches(cfg, 4)
    assert_curves_match(
        loss_curve(cfg, batches, "fp32"), loss_curve(cfg, batches, "bf16", compile_model=True)
    )


def test_rolled_rotary_equals_rotate_half_form() -> None:
    """Guards the folded-sign rotary: roll(x, d/2) * [-sin1, sin2] equals rotate_half(x) * sin, and the
    block's rotation of q and k stacked as one (B, L, 2, H, Dh) view equals rotating each alone."""
    torch.manual_seed(5)
    rope = RotaryEmbedding(head_dim=16)
    x = torch.randn(3, 11, 4, 16, dtype=torch.float64)
    cos, sin = rope.table(11, torch.device("cpu"), torch.float64)
    cos, sin = cos[None, :, None], sin[None, :, None]
    torch.testing.assert_close(apply_rotary_rolled(x, cos, signed_sin(sin)), apply_rotary(x, cos, sin))
    positions = torch.randint(0, 11, (3, 11))
    angles = rope.angles(11, positions, torch.device("cpu"), torch.float64)
    q, k = torch.randn(2, 3, 11, 4, 16, dtype=torch.float64).unbind(0)
    stacked = rope.rotate(torch.stack((q, k), dim=2), angles)  # (B, L, 2, H, Dh)
    q_alone, k_alone = rope(q, k, angles)
    torch.testing.assert_close(stacked[:, :, 0], q_alone)
    torch.testing.assert_close(stacked[:, :, 1], k_alone)
    table_cos, table_sin = rope.table(11, torch.device("cpu"), torch.float64)
    reference = apply_rotary(q, table_cos[positions][:, :, None], table_sin[positions][:, :, None])
    torch.testing.assert_close(q_alone, reference)
    with pytest.raises(ValueError, match="does not match"):
        rope.rotate(torch.randn(3, 12, 2, 4, 16, dtype=torch.float64), angles)


def test_generation_in_length_order_keeps_caller_order() -> None:
    """Guards generate()'s longest-first chunking: row b of the result has exactly lengths[b] residues
    (no MASK, PAD after), and with equal lengths the tokens are those of sampling each chunk in order."""
    cfg = ModelConfig(hidden_size=32, num_heads=2, num_blocks=1, cond_dim=16, max_length=40)
    model = randomized_model(cfg).eval()
    graph, noise = build_diffusion(Config(model=cfg), ALPHABET)
    lengths = [7, 33, 12, 40, 7, 21]
    result = generate(
        model,
        graph,
        noise,
        ALPHABET,
        lengths=lengths,
        steps=6,
        batch_size=4,
        generator=torch.Generator().manual_seed(1),
    )
    for row, length in zip(result.tokens, lengths, strict=True):
        assert bool((row[:length] < ALPHABET.num_residues).all())
        assert bool((row[length:] == ALPHABET.pad_id).all())
    assert [len(s) for s in result.sequences] == lengths

    equal = [20] * 6
    generator = torch.Generator().manual_seed(2)
    fast = generate(model, graph, noise, ALPHABET, lengths=equal, steps=6, batch_size=4, generator=generator)
    generator.manual_seed(2)
    templates = templates_from_lengths(equal, ALPHABET)
    chunks = []
    for start in (0, 4):
        layout = template_batch(templates[start : start + 4], ALPHABET.pad_id)
        score = make_score_fn(model, *batch_layout(layout), "fp32", torch.device("cpu"))
        chunks.append(sample(score, graph, noise, layout.tokens, 6, generator=generator))
    assert torch.equal(fast.tokens, torch.cat(chunks))


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_cpu_dropout_drops_with_probability_p_and_stays_unbiased(p: float) -> None:
    """Guards the 16-bit CPU dropout mask: drop rate p (to 1/65536), kept values scaled so the mean is
    kept, gradients masked the same way, reproducible under the torch seed, identity when off."""
    x = torch.full((400, 1000), 2.0, requires_grad=True)
    torch.manual_seed(11)
    y = dropout(x, p, True)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p) < 4 * (p * (1 - p) / y.numel()) ** 0.5  # within 4 binomial sigmas
    effective = round(p * DROPOUT_LEVELS) / DROPOUT_LEVELS
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 2.0 / (1 - effective)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach() / 2.0)
    torch.manual_seed(11)
    assert torch.equal(dropout(x, p, True), y)
    assert dropout(x, p, False) is x and dropout(x, 0.0, True) is x
    # The plain reference drops at the same rate and scales kept values the same way.
    torch.manual_seed(11)
    reference = dropout_reference(x.detach(), p, True)
    assert abs(float((reference == 0).float().mean()) - p) < 4 * (p * (1 - p) / reference.numel()) ** 0.5
    ref_kept = reference[reference != 0]
    torch.testing.assert_close(ref_kept, torch.full_like(ref_kept, 2.0 / (1 - p)))
    assert abs(2.0 / (1 - p) - 2.0 / (1 - effective)) < 1e-4  # the same scale up to the 16-bit rounding of p


def _load_benchmark_module():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO_ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_script_end_to_end(tmp_path: Path) -> None:
    """Guards scripts/benchmark.py: one timed step per packing mode, sampling and scoring on the tiny
    config run through the real training step and write the documented JSON fields."""
    benchmark = _load_benchmark_module()
    out = tmp_path / "bench.json"
    lines: list[str] = []
    code = benchmark.main(
        [
            "--config",
            str(TINY_CONFIG),
            "--set",
            "training.ema_decay=0.9",
            "--micro-batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--packing",
            "all",
            "--sample-steps",
            "2",
            "--sample-length",
            "16",
            "--sample-batch",
            "2",
            "--score-sequences",
            "4",
            "--peak-size",
            "256",
            "--peak-repeats",
            "1",
            "--out",
            str(out),
        ],
        emit=lines.append,
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["training"]) == {"on", "off", "trim", "bucket"}
    for stats in result["training"].values():
        assert stats["tokens_per_s"] >= stats["residues_per_s"] > 0
        assert 0 < stats["mfu_bf16"] and 0 < stats["mfu_fp32"]
        assert stats["timed_steps"] == 1 and stats["cpu_seconds"] > 0
    assert result["training"]["on"]["padding_fraction"] <= result["training"]["off"]["padding_fraction"]
    assert result["packing_speedup"] > 0
    assert result["sampling"]["residues_per_s"] > 0 and result["scoring"]["residues_per_s"] > 0
    assert result["peaks"]["fp32"] > 0 and result["peak_rss_mb"] > 0
    assert any("packing speed-up" in line for line in lines)
    assert result["vs_earlier"] == {}  # the tiny config has no earlier numbers
    assert benchmark.main(["--config", "no_such_config"], emit=lines.append) == 2


def test_benchmark_compares_shipped_configs_with_the_earlier_numbers() -> None:
    """Guards the speed-up lines: the small/stable aliases map to the shipped YAMLs, and the ratio is
    ours over the earlier implementation's (4,900 tokens/s and 147 residues/s for small)."""
    benchmark = _load_benchmark_module()
    path = benchmark.resolve_config_path("small")
    assert path == REPO_ROOT / "configs" / "config_small_cpu.yaml"
    assert benchmark.config_alias(path) == "small" and benchmark.config_alias(TINY_CONFIG) is None
    fake = {
        "training": {"off": {"tokens_per_s": 2450.0}, "on": {"tokens_per_s": 9800.0}},
        "sampling": {"residues_per_s": 294.0},
    }
    versus = benchmark.compare_with_earlier("small", fake)
    assert versus["training_mode"] == "on"
    assert versus["training_speedup"] == pytest.approx(2.0)
    assert versus["sampling_speedup"] == pytest.approx(2.0)
