"""Evaluation metrics against hand-computed values (issue 5): identity, KL, composition, complexity."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from protlig_dd.data.alphabet import STANDARD_AMINO_ACIDS
from protlig_dd.data.pipeline import EMBEDDED_COMPOSITION_REFERENCE
from protlig_dd.evaluation import metrics

UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"


def _random_protein(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(STANDARD_AMINO_ACIDS) for _ in range(length))


def test_blosum62_is_symmetric_with_known_entries() -> None:
    """The embedded BLOSUM62 is the NCBI matrix: symmetric, W-W 11, C-C 9, A-W -3, I-V 3."""
    assert np.array_equal(metrics.BLOSUM62, metrics.BLOSUM62.T)
    letters = "ARNDCQEGHILKMFPSTWYVBZX"

    def score(x: str, y: str) -> int:
        return int(metrics.BLOSUM62[letters.index(x), letters.index(y)])

    assert (score("W", "W"), score("C", "C"), score("A", "W"), score("I", "V")) == (11, 9, -3, 3)


def test_alignment_score_of_identical_sequences_is_the_blosum_diagonal() -> None:
    """MKTAYIAKQR with itself scores M5+K5+T5+A4+Y7+I4+A4+K5+Q5+R5 = 49 with 10 identities."""
    score, identical = metrics.alignment_scores("MKTAYIAKQR", ["MKTAYIAKQR"])
    assert (int(score[0]), int(identical[0])) == (49, 10)


def test_alignment_prefers_end_gaps_to_an_internal_gap() -> None:
    """ACD vs AD: an internal gap (A-A, gap, D-D = 4 - 11 + 6 = -1) loses to D-D alone with free end
    gaps (6), so one identity over the shorter length 2: identity 0.5."""
    score, identical = metrics.alignment_scores("ACD", ["AD"])
    assert (int(score[0]), int(identical[0])) == (6, 1)
    assert metrics.identity("ACD", "AD") == pytest.approx(0.5)


def test_identity_of_known_pairs() -> None:
    """Identical -> 1; one substitution in 10 -> 0.9; a contained fragment -> 1; unrelated -> 0."""
    assert metrics.identity("MKTAYIAKQR", "MKTAYIAKQR") == 1.0
    assert metrics.identity("MKTAYIAKQR", "MKTAWIAKQR") == pytest.approx(0.9)
    assert metrics.identity("YIAKQ", "MKTAYIAKQRQISF") == 1.0
    assert metrics.identity("AAAAAAAAAA", "WWWWWWWWWW") == 0.0  # A-W = -3: nothing aligns


def test_identity_is_symmetric_and_batching_changes_nothing() -> None:
    """identity(a, b) == identity(b, a), and batched pairs (padded) equal pairs aligned one by one."""
    rng = random.Random(0)
    queries = [_random_protein(rng, rng.randint(5, 60)) for _ in range(12)]
    targets = [q[: len(q) // 2] + _random_protein(rng, rng.randint(1, 30)) for q in queries]
    batched = metrics.pair_identities(queries, targets)
    single = [metrics.identity(q, t) for q, t in zip(queries, targets, strict=True)]
    reverse = metrics.pair_identities(targets, queries)
    np.testing.assert_allclose(batched, single)
    np.testing.assert_allclose(batched, reverse)
    tiny_batches = metrics.pair_identities(queries, targets, cell_budget=1)  # one pair per batch
    np.testing.assert_allclose(batched, tiny_batches)


def test_kl_divergence_of_known_distributions() -> None:
    """KL([.5,.5] || [.25,.75]) = .5 ln 2 + .5 ln(2/3); KL(p || p) = 0; zero q under p > 0 is inf."""
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75)
    assert metrics.kl_divergence(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert metrics.kl_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2.0))
    assert metrics.kl_divergence(np.array([0.2, 0.8]), np.array([0.2, 0.8])) == 0.0
    assert metrics.kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf
    with pytest.raises(ValueError):
        metrics.kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0, 0.0]))


def test_composition_counts_standard_letters_only() -> None:
    """AAC plus X and B: A 2/3, C 1/3; non-standard letters are left out, not counted as mass."""
    freq = metrics.composition(["AAC", "XB"])
    assert freq[STANDARD_AMINO_ACIDS.index("A")] == pytest.approx(2 / 3)
    assert freq[STANDARD_AMINO_ACIDS.index("C")] == pytest.approx(1 / 3)
    assert freq.sum() == pytest.approx(1.0)


def test_embedded_evodiff_reference_composition() -> None:
    """EvoDiff's UniRef50 counts give 20 frequencies summing to 1, leucine the most common."""
    freq = metrics.read_composition_reference(EMBEDDED_COMPOSITION_REFERENCE)
    assert freq.shape == (20,) and freq.sum() == pytest.approx(1.0)
    assert STANDARD_AMINO_ACIDS[int(np.argmax(freq))] == "L"
    # L count / the 20 standard counts of the file's second row (18,809,929 residues).
    assert freq[STANDARD_AMINO_ACIDS.index("L")] == pytest.approx(1812595 / 18809929)


def test_low_complexity_homopolymer_versus_real_sequence() -> None:
    """A homopolymer is entirely low-complexity; ubiquitin (a folded real protein) has no such window."""
    assert metrics.low_complexity_fraction(["Q" * 40]) == 1.0
    assert metrics.low_complexity_fraction([UBIQUITIN]) == 0.0
    # 12 distinct letters: entropy log2(12) = 3.58 bits; two letters 6 + 6: 1 bit.
    assert not metrics.low_complexity_mask("ACDEFGHIKLMN").any()
    assert metrics.low_complexity_mask("AAAAAACCCCCC").all()


def test_low_complexity_mask_matches_hand_computed_windows() -> None:
    """12 distinct letters + Q12 + the same 12 letters: windows starting at 7..17 have entropy below
    2.2 bits (start 7: 5 singletons + 7 Q = 1.95 bits; start 6: 6 + 6 Q = 2.29 bits), so residues
    7..28 (0-based) are flagged: 22 of 36."""
    sequence = "ACDEFGHIKLMN" + "Q" * 12 + "ACDEFGHIKLMN"
    mask = metrics.low_complexity_mask(sequence)
    assert np.flatnonzero(mask).tolist() == list(range(7, 29))
    assert metrics.low_complexity_fraction([sequence]) == pytest.approx(22 / 36)


def test_max_homopolymer_and_length_summary() -> None:
    """Longest run of one letter; lengths summarised as mean/median/min/max."""
    assert metrics.max_homopolymer("MKKKAAQQQQQW") == 5
    assert metrics.max_homopolymer("A") == 1
    summary = metrics.length_summary(["AA", "AAAA", "AAAAAA"])
    assert (summary["mean"], summary["median"], summary["min"], summary["max"]) == (4.0, 4.0, 2.0, 6.0)


def test_diversity_is_the_mean_pairwise_identity() -> None:
    """{s, s, t}: pairs (s,s)=1, (s,t)=(s,t)=x, so the mean is (1 + 2x) / 3; duplicates lower distinctness."""
    s, t = "MKTAYIAKQRQISFVKSHFSRQ", "MKTAWIAKQRQISFVKSHFSRQ"
    x = metrics.identity(s, t)
    result = metrics.diversity([s, s, t])
    assert result.mean_pairwise_identity == pytest.approx((1 + 2 * x) / 3)
    assert result.num_pairs == 3 and not result.subsampled
    assert result.distinct_fraction == pytest.approx(2 / 3)
    assert metrics.diversity([s] * 10, max_sequences=4).num_sequences == 4


def test_novelty_finds_a_mutated_training_sequence() -> None:
    """A query made from training sequence 7 with 2 substitutions in 50 is found (prefilter + alignment)
    with identity 48/50; a random query has a low highest identity."""
    rng = random.Random(1)
    reference = [_random_protein(rng, rng.randint(40, 400)) for _ in range(200)]
    reference[7] = _random_protein(rng, 50)
    mutated = list(reference[7])
    mutated[10] = "W" if mutated[10] != "W" else "C"
    mutated[30] = "W" if mutated[30] != "W" else "C"
    index = metrics.KmerIndex(reference)
    result = metrics.novelty(["".join(mutated), _random_protein(rng, 80)], index, num_candidates=5)
    assert result.nearest[0] == 7
    assert result.max_identity[0] == pytest.approx(48 / 50)
    assert result.max_identity[1] < 0.5
