"""The shuffled control of the evaluation report: shuffling, the paired estimator, the pairing itself."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from protlig_dd.evaluation import shuffle_control as control_module
from protlig_dd.evaluation.shuffle_control import paired_difference, shuffle_control, shuffle_residues
from protlig_dd.inference import load_model
from protlig_dd.scoring import score_tokens

SEQUENCES = [
    "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
    "MSTNPKPQRKTKRNTNRRPQDVKFPGG",
    "MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRR",
]


def test_shuffle_keeps_each_composition_and_is_seeded() -> None:
    tokens = [np.arange(50) % 7, np.arange(3), np.array([5])]
    first, again, other = (shuffle_residues(tokens, seed) for seed in (3, 3, 4))
    for original, shuffled in zip(tokens, first, strict=True):
        assert sorted(shuffled.tolist()) == sorted(original.tolist())
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], tokens[0])  # 50 residues: the identity has probability 1/50!-ish


def test_paired_difference_against_the_closed_form() -> None:
    """D = sum(d) / sum(n); SE^2 = n/(n-1) sum (d_k - D n_k)^2 / (sum n)^2, written out by hand."""
    real = np.array([10.0, 20.0, 31.0])
    shuffled = np.array([11.0, 20.5, 33.0])
    lengths = np.array([4.0, 6.0, 10.0])
    difference, stderr = paired_difference(real, shuffled, lengths)
    assert difference == pytest.approx(3.5 / 20)
    residuals = [1.0 - 0.175 * 4, 0.5 - 0.175 * 6, 2.0 - 0.175 * 10]
    assert stderr == pytest.approx(math.sqrt(1.5 * sum(r * r for r in residuals)) / 20)
    one = paired_difference(real[:1], shuffled[:1], lengths[:1])
    assert one[0] == pytest.approx(0.25) and math.isnan(one[1])
    with pytest.raises(ValueError, match="shapes"):
        paired_difference(real, shuffled[:2], lengths)


def test_pairing_uses_the_same_noise_draws(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an identity "shuffle" both sets get the same t draws and masks, so the difference is exactly
    0: anything left in a real control comes from the residue order, not from the noise."""
    loaded = load_model(tiny_run, device="cpu", precision="fp32")
    tokens = [loaded.alphabet.encode(s) for s in SEQUENCES]
    ids = [f"s{i}" for i in range(len(tokens))]
    monkeypatch.setattr(control_module, "shuffle_residues", lambda tokens, seed: [t.copy() for t in tokens])
    control = shuffle_control(loaded, tokens, ids, samples_per_sequence=4, seed=5)
    assert control.difference_per_residue == 0.0 and control.difference_stderr == 0.0
    assert control.real_nll_per_residue == control.shuffled_nll_per_residue
    assert control.num_sequences == 3 and control.num_residues == sum(map(len, SEQUENCES))


def test_given_real_scores_are_reused_and_checked(tiny_run: Path) -> None:
    """Passing the real ScoreReport gives the same control as scoring it inside; scores made with other
    settings are refused (the pairing would be lost)."""
    loaded = load_model(tiny_run, device="cpu", precision="fp32")
    tokens = [loaded.alphabet.encode(s) for s in SEQUENCES]
    ids = [f"s{i}" for i in range(len(tokens))]
    real = score_tokens(loaded, tokens, ids, samples_per_sequence=2, seed=7)
    inside = shuffle_control(loaded, tokens, ids, samples_per_sequence=2, seed=7)
    reused = shuffle_control(loaded, tokens, ids, samples_per_sequence=2, seed=7, real=real)
    assert reused == inside
    assert "real" in inside.describe() and "z =" in inside.describe()
    with pytest.raises(ValueError, match="seed 7"):
        shuffle_control(loaded, tokens, ids, samples_per_sequence=2, seed=8, real=real)
