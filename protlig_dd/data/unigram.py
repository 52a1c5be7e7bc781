"""The training-unigram baseline: the perplexity that the amino-acid composition of the training data
alone reaches on held-out residues. One definition, used by the training log (``unigram_ppl``) and by
the evaluation report (``train_unigram_ppl``), so the two always agree.

The training frequencies are add-one smoothed (every residue of the alphabet gets one more count),
so a residue never seen in training (a rare letter such as U or O) gives a finite perplexity.
"""

from __future__ import annotations

import math

import numpy as np


def smoothed_frequencies(train_frequencies: np.ndarray, train_residues: int) -> np.ndarray:
    """(N,) add-one smoothed training frequencies: (count + 1) / (total + N), counts = frequency * total."""
    counts = np.asarray(train_frequencies, dtype=np.float64) * float(train_residues)
    return (counts + 1.0) / (counts.sum() + len(counts))


def unigram_perplexity(train_frequencies: np.ndarray, train_residues: int, eval_counts: np.ndarray) -> float:
    """exp of the cross-entropy of the residues counted in ``eval_counts`` ((N,) per residue id) under
    the add-one smoothed training composition (``train_residues`` residues with ``train_frequencies``)."""
    probs = smoothed_frequencies(train_frequencies, train_residues)
    counts = np.asarray(eval_counts, dtype=np.float64)
    if counts.shape != probs.shape:
        raise ValueError(f"unigram_perplexity: {len(counts)} residue counts for {len(probs)} frequencies")
    total = counts.sum()
    if total <= 0:
        raise ValueError("unigram_perplexity: no residues to evaluate")
    return math.exp(-float((counts * np.log(probs)).sum()) / total)
