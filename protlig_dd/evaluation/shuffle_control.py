"""Does a model use residue order? Its bound on real sequences against the same sequences shuffled.

Shuffling the residues of each sequence keeps its length and composition and destroys its order. A
model that has learned only amino-acid composition (the first thing a protein model learns) scores
both alike; a model that uses order (neighbour preferences, the N-terminal Met, repeats) gives the
real sequences a lower bound. The perplexity bound alone cannot tell these apart: it falls below
the training-unigram baseline as soon as a model adapts to each sequence's own composition.

    >>> from protlig_dd.inference import load_model
    >>> from protlig_dd.evaluation.shuffle_control import shuffle_control
    >>> loaded = load_model("runs/quickstart")
    >>> control = shuffle_control(loaded, tokens, ids)      # tokens: encoded held-out sequences
    >>> print(control.describe())

The comparison is paired: both sets are scored with the same seed, so every sequence and its
shuffle get the same t draws and the same masked positions (common random numbers), and what is
left in the difference is what the model makes of the order. The standard error is that of a
ratio estimator over sequences, sum(d_k) / sum(n_k) with d_k = bound(shuffled_k) - bound(real_k),
so it covers the Monte-Carlo noise of the bound, the draw of each shuffle and the spread between
sequences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from protlig_dd.inference import LoadedModel
from protlig_dd.scoring import ScoreReport, score_tokens

SHUFFLE_CONTROL_NOTE = (
    "difference of likelihood bounds per residue, shuffled minus real, over the same sequences with "
    "each sequence's residues permuted (seeded); scored with the same noise draws (paired). Positive "
    "= the model prefers the real residue order; z = difference / standard error"
)


@dataclass
class ShuffleControl:
    """The bound per residue on real sequences, on the same sequences shuffled, and the difference."""

    real_nll_per_residue: float
    shuffled_nll_per_residue: float
    difference_per_residue: float  # shuffled - real, nats per residue (> 0: order is used)
    difference_stderr: float
    z: float  # difference / stderr
    num_sequences: int
    num_residues: int
    samples_per_sequence: int
    seed: int  # scoring seed (both sets)
    shuffle_seed: int
    note: str = SHUFFLE_CONTROL_NOTE

    def describe(self) -> str:
        """One line: both bounds, the difference with its standard error, and the verdict."""
        significant = self.z > 3.0
        verdict = "the model uses residue order" if significant else "no significant use of residue order"
        return (
            f"real {self.real_nll_per_residue:.4f} vs shuffled {self.shuffled_nll_per_residue:.4f} nats/residue: "
            f"difference {self.difference_per_residue:+.4f} +- {self.difference_stderr:.4f} (z = {self.z:.1f}; "
            f"{verdict}) over {self.num_sequences} sequences"
        )

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain data for JSON."""
        return asdict(self)


def shuffle_residues(tokens: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each sequence with its residues in a random order (one seeded generator for the whole list)."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.asarray(t)) for t in tokens]


def paired_difference(real: np.ndarray, shuffled: np.ndarray, lengths: np.ndarray) -> tuple[float, float]:
    """Ratio estimate sum(shuffled - real) / sum(lengths) and its standard error over sequences.

    With d_k = shuffled_k - real_k and D = sum d / sum n, the linearised variance of the ratio is
    n/(n-1) * sum (d_k - D n_k)^2 / (sum n)^2; a single sequence gives no standard error (nan).
    """
    if not (real.shape == shuffled.shape == lengths.shape) or real.ndim != 1:
        raise ValueError(f"paired_difference: shapes {real.shape}, {shuffled.shape}, {lengths.shape} differ")
    count = len(lengths)
    total = float(lengths.sum())
    d = shuffled - real
    difference = float(d.sum()) / total
    if count < 2:
        return difference, math.nan
    residuals = d - difference * lengths
    variance = count / (count - 1) * float((residuals**2).sum())
    return difference, math.sqrt(variance) / total


def shuffle_control(
    loaded: LoadedModel,
    tokens: Sequence[np.ndarray],
    ids: Sequence[str],
    *,
    samples_per_sequence: int = 4,
    batch_size: int = 32,
    seed: int = 0,
    shuffle_seed: int = 1,
    on_batch: Callable[[int], None] | None = None,
    real: ScoreReport | None = None,
) -> ShuffleControl:
    """Score ``tokens`` and their shuffles with the same seed and compare (see the module doc).

    ``real``: the ScoreReport of ``tokens`` already scored with these same settings (seed, samples
    per sequence, batch size), to save scoring them twice. ``on_batch(num_residues)`` is called
    after every scored batch.
    """
    settings = {"samples_per_sequence": samples_per_sequence, "batch_size": batch_size, "seed": seed}
    if real is None:
        real = score_tokens(loaded, tokens, ids, on_batch=on_batch, **settings)
    elif (real.seed, real.samples_per_sequence, len(real.scores)) != (seed, samples_per_sequence, len(tokens)):
        raise ValueError(
            f"shuffle_control: the given real scores used seed {real.seed}, {real.samples_per_sequence} samples "
            f"per sequence and {len(real.scores)} sequences; the control needs seed {seed}, "
            f"{samples_per_sequence} and {len(tokens)} (the pairing relies on the same noise draws)"
        )
    shuffled_tokens = shuffle_residues(tokens, shuffle_seed)
    shuffled = score_tokens(loaded, shuffled_tokens, ids, on_batch=on_batch, **settings)
    lengths = np.array([s.length for s in real.scores], dtype=np.float64)
    difference, stderr = paired_difference(
        np.array([s.nll for s in real.scores]), np.array([s.nll for s in shuffled.scores]), lengths
    )
    return ShuffleControl(
        real_nll_per_residue=real.total.nll_per_residue,
        shuffled_nll_per_residue=shuffled.total.nll_per_residue,
        difference_per_residue=difference,
        difference_stderr=stderr,
        z=difference / stderr if stderr > 0 else math.nan,
        num_sequences=len(lengths),
        num_residues=int(lengths.sum()),
        samples_per_sequence=samples_per_sequence,
        seed=seed,
        shuffle_seed=shuffle_seed,
    )
