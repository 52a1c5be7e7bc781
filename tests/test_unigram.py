"""The one training-unigram baseline (data.unigram), shared by the training log and the report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protlig_dd.data.unigram import smoothed_frequencies, unigram_perplexity


def test_uniform_composition_gives_perplexity_twenty() -> None:
    """Uniform training frequencies over 20 residues stay uniform after add-one smoothing: every
    residue costs ln 20, so the perplexity is 20 whatever the evaluated counts."""
    assert unigram_perplexity(np.full(20, 0.05), 10_000, np.arange(1, 21)) == pytest.approx(20.0)


def test_add_one_smoothing_against_hand_computed_values() -> None:
    """Counts (3, 1, 0) over 4 training residues become (4, 2, 1) / 7; a residue never seen in
    training stays finite (that is why the baseline is smoothed)."""
    probs = smoothed_frequencies(np.array([0.75, 0.25, 0.0]), 4)
    np.testing.assert_allclose(probs, [4 / 7, 2 / 7, 1 / 7])
    expected = math.exp(-(2 * math.log(4 / 7) + 1 * math.log(1 / 7)) / 3)
    assert unigram_perplexity(np.array([0.75, 0.25, 0.0]), 4, np.array([2, 0, 1])) == pytest.approx(expected)


def test_bad_inputs_are_errors() -> None:
    """No residues to evaluate, or counts that do not match the alphabet, raise ValueError."""
    with pytest.raises(ValueError, match="no residues"):
        unigram_perplexity(np.full(20, 0.05), 100, np.zeros(20))
    with pytest.raises(ValueError, match="3 residue counts for 20"):
        unigram_perplexity(np.full(20, 0.05), 100, np.ones(3))
