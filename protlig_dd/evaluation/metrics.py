"""Sequence-level metrics of the evaluation report: composition, identity, diversity, novelty, complexity.

Pure functions of residue strings (and numpy arrays), no model. Definitions, as printed in the report:

* composition: frequencies of the 20 standard amino acids, other letters (X, B, Z, U, O, J) left out
  and the rest renormalised. Divergences are KL(p || q) in nats.
* identity(a, b): residues that are identical in an optimal alignment of a and b, divided by the
  length of the shorter sequence. The alignment is global with free end gaps (a short sequence
  may sit anywhere inside a long one), BLOSUM62 scores and affine gaps (a gap of n residues
  scores -(GAP_OPEN + (n - 1) * GAP_EXTEND)); among equally scoring alignments the one with the
  most identical pairs counts. Identical sequences, or one contained in the other, give 1.0.
* diversity: mean identity over all pairs of a (random, seeded) subsample of the set.
* novelty: for each sequence, the highest identity to a reference (training) set. Only the
  reference sequences ranked best by a k-mer prefilter are aligned, so the value is a lower bound
  on the true maximum (approximate: a homolog sharing few exact k-mers can be missed).
* low complexity (SEG-like): a residue is low-complexity when it lies in a window of
  LOW_COMPLEXITY_WINDOW residues whose Shannon entropy of letter counts is below
  LOW_COMPLEXITY_BITS (SEG's trigger window and K1). A sequence shorter than the window is one
  window. This flags the trigger windows only (SEG also extends and merges them), so it is an
  approximation of SEG, not SEG itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protlig_dd.data.alphabet import STANDARD_AMINO_ACIDS

GAP_OPEN = 11  # score lost by the first residue of a gap
GAP_EXTEND = 1  # score lost by each further residue of the same gap
LOW_COMPLEXITY_WINDOW = 12
LOW_COMPLEXITY_BITS = 2.2
DEFAULT_KMER = 3
DEFAULT_CANDIDATES = 20

# BLOSUM62 (NCBI), rows and columns in _BLOSUM_LETTERS order. Letters outside it (U, O, J, any
# other) score as X.
_BLOSUM_LETTERS = "ARNDCQEGHILKMFPSTWYVBZX"
_BLOSUM62_ROWS = """
4 -1 -2 -2 0 -1 -1 0 -2 -1 -1 -1 -1 -2 -1 1 0 -3 -2 0 -2 -1 0
-1 5 0 -2 -3 1 0 -2 0 -3 -2 2 -1 -3 -2 -1 -1 -3 -2 -3 -1 0 -1
-2 0 6 1 -3 0 0 0 1 -3 -3 0 -2 -3 -2 1 0 -4 -2 -3 3 0 -1
-2 -2 1 6 -3 0 2 -1 -1 -3 -4 -1 -3 -3 -1 0 -1 -4 -3 -3 4 1 -1
0 -3 -3 -3 9 -3 -4 -3 -3 -1 -1 -3 -1 -2 -3 -1 -1 -2 -2 -1 -3 -3 -2
-1 1 0 0 -3 5 2 -2 0 -3 -2 1 0 -3 -1 0 -1 -2 -1 -2 0 3 -1
-1 0 0 2 -4 2 5 -2 0 -3 -3 1 -2 -3 -1 0 -1 -3 -2 -2 1 4 -1
0 -2 0 -1 -3 -2 -2 6 -2 -4 -4 -2 -3 -3 -2 0 -2 -2 -3 -3 -1 -2 -1
-2 0 1 -1 -3 0 0 -2 8 -3 -3 -1 -2 -1 -2 -1 -2 -2 2 -3 0 0 -1
-1 -3 -3 -3 -1 -3 -3 -4 -3 4 2 -3 1 0 -3 -2 -1 -3 -1 3 -3 -3 -1
-1 -2 -3 -4 -1 -2 -3 -4 -3 2 4 -2 2 0 -3 -2 -1 -2 -1 1 -4 -3 -1
-1 2 0 -1 -3 1 1 -2 -1 -3 -2 5 -1 -3 -1 0 -1 -3 -2 -2 0 1 -1
-1 -1 -2 -3 -1 0 -2 -3 -2 1 2 -1 5 0 -2 -1 -1 -1 -1 1 -3 -1 -1
-2 -3 -3 -3 -2 -3 -3 -3 -1 0 0 -3 0 6 -4 -2 -2 1 3 -1 -3 -3 -1
-1 -2 -2 -1 -3 -1 -1 -2 -2 -3 -3 -1 -2 -4 7 -1 -1 -4 -3 -2 -2 -1 -2
1 -1 1 0 -1 0 0 0 -1 -2 -2 0 -1 -2 -1 4 1 -3 -2 -2 0 0 0
0 -1 0 -1 -1 -1 -1 -2 -2 -1 -1 -1 -1 -2 -1 1 5 -2 -2 0 -1 -1 0
-3 -3 -4 -4 -2 -2 -3 -2 -2 -3 -2 -3 -1 1 -4 -3 -2 11 2 -3 -4 -3 -2
-2 -2 -2 -3 -2 -1 -2 -3 2 -1 -1 -2 -1 3 -3 -2 -2 2 7 -1 -3 -2 -1
0 -3 -3 -3 -1 -2 -2 -3 -3 3 1 -2 1 -1 -2 -2 0 -3 -1 4 -3 -2 -1
-2 -1 3 4 -3 0 1 -1 0 -3 -4 0 -3 -3 -2 0 -1 -4 -3 -3 4 1 -1
-1 0 0 1 -3 3 4 -2 0 -3 -3 1 -1 -3 -1 0 -1 -3 -2 -2 1 4 -1
0 -1 -1 -1 -2 -1 -1 -1 -1 -1 -1 -1 -1 -1 -2 0 0 -2 -1 -1 -1 -1 -1
"""
BLOSUM62 = np.array([row.split() for row in _BLOSUM62_ROWS.strip().splitlines()], dtype=np.int64)

# Alignment keys pack (score, identical pairs) into one int64: score * _KEY + identities. Maximising
# the key maximises the score and, among equal scores, the identities (identities < _KEY always).
_KEY = 1 << 24
_NEG = -(1 << 58)  # "minus infinity" that survives additions without overflow
# U, O and J get codes of their own (so U never counts as identical to O) but score as X.
_CODE_LETTERS = _BLOSUM_LETTERS + "UOJ"
_SCORE_ROW = np.array([_BLOSUM_LETTERS.index(c if c in _BLOSUM_LETTERS else "X") for c in _CODE_LETTERS])
_CODE_OF = np.full(256, _CODE_LETTERS.index("X"), dtype=np.int64)
for _i, _letter in enumerate(_CODE_LETTERS):
    _CODE_OF[ord(_letter)] = _i
    _CODE_OF[ord(_letter.lower())] = _i
# (26, 26) keys of aligning letter codes x and y: BLOSUM62 score and 1 identical pair when x == y.
_PAIR_KEYS = BLOSUM62[np.ix_(_SCORE_ROW, _SCORE_ROW)] * _KEY + np.eye(len(_CODE_LETTERS), dtype=np.int64)


def _codes(sequence: str) -> np.ndarray:
    """(L,) int64 letter codes (index into _CODE_LETTERS; letters outside it -> X)."""
    return _CODE_OF[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]


# ------------------------------------------------------------------------------------ composition


def composition(sequences: Sequence[str], letters: str = STANDARD_AMINO_ACIDS) -> np.ndarray:
    """(len(letters),) frequencies of ``letters`` over all ``sequences`` (other letters left out)."""
    counts = np.zeros(256, dtype=np.int64)
    for sequence in sequences:
        counts += np.bincount(np.frombuffer(sequence.upper().encode("ascii"), dtype=np.uint8), minlength=256)
    selected = counts[[ord(letter) for letter in letters]].astype(np.float64)
    total = selected.sum()
    if total == 0:
        raise ValueError(f"composition: the sequences hold none of the letters {letters!r}")
    return selected / total


def restrict_frequencies(
    frequencies: np.ndarray, residues: str, letters: str = STANDARD_AMINO_ACIDS
) -> np.ndarray:
    """Frequencies over ``residues`` (e.g. a model alphabet) restricted to ``letters``, renormalised."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    if frequencies.shape != (len(residues),):
        raise ValueError(f"{frequencies.shape[0]} frequencies for the {len(residues)} residues {residues!r}")
    missing = [letter for letter in letters if letter not in residues]
    if missing:
        raise ValueError(f"residues {residues!r} lack the letters {missing}")
    selected = frequencies[[residues.index(letter) for letter in letters]]
    if selected.sum() <= 0:
        raise ValueError(f"the frequencies give no weight to the letters {letters!r}")
    return selected / selected.sum()


def read_composition_reference(path: str | Path, letters: str = STANDARD_AMINO_ACIDS) -> np.ndarray:
    """Frequencies of ``letters`` from a two-row CSV: a header of letters, then their counts.

    This is the layout of EvoDiff's ``uniref50_aa_ref_test.csv`` (embedded with the package).
    """
    rows = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(rows) != 2:
        raise ValueError(f"{path}: expected a header of letters and a row of counts, got {len(rows)} rows")
    header = [h.strip() for h in rows[0].split(",")]
    try:
        counts = [float(v) for v in rows[1].split(",")]
    except ValueError:
        raise ValueError(f"{path} line 2: counts must be numbers: {rows[1]!r}") from None
    if len(header) != len(counts):
        raise ValueError(f"{path}: {len(header)} letters but {len(counts)} counts")
    by_letter = dict(zip(header, counts, strict=True))
    missing = [letter for letter in letters if letter not in by_letter]
    if missing:
        raise ValueError(f"{path}: no count for the letters {missing}")
    selected = np.array([by_letter[letter] for letter in letters], dtype=np.float64)
    return selected / selected.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for two distributions on the same support (each normalised here).

    Terms with p = 0 are 0; p > 0 where q = 0 gives inf (no smoothing is applied).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"kl_divergence: shapes {p.shape} and {q.shape} differ or are not 1-D")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("kl_divergence: distributions must be non-negative with positive mass")
    p, q = p / p.sum(), q / q.sum()
    support = p > 0
    if (q[support] == 0).any():
        return math.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


# ------------------------------------------------------------------------------------ alignment


def _padded_codes(sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(P, max length) int64 letter codes right-padded with X, and (P,) int64 lengths."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    padded = np.full((len(sequences), int(lengths.max())), _CODE_LETTERS.index("X"), dtype=np.int64)
    for p, sequence in enumerate(sequences):
        padded[p, : len(sequence)] = _codes(sequence)
    return padded, lengths


def pair_alignment_scores(queries: Sequence[str], targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Optimal score of aligning queries[p] with targets[p], and its identical pairs: two (P,) int64.

    Row-by-row Gotoh dynamic programming over the query positions, vectorised over the pairs and
    the target positions: the horizontal-gap recurrence of a row is a running maximum
    (np.maximum.accumulate). Sequences are right-padded; a padded cell never influences a cell
    above or left of it, so each pair is read at its own last row and column.
    """
    if len(queries) != len(targets):
        raise ValueError(f"pair_alignment_scores: {len(queries)} queries but {len(targets)} targets")
    if not queries:
        raise ValueError("pair_alignment_scores: no pairs")
    if any(not s for s in (*queries, *targets)):
        raise ValueError("pair_alignment_scores: sequences must be non-empty")
    query_codes, query_lengths = _padded_codes(queries)  # (P, m), (P,)
    target_codes, target_lengths = _padded_codes(targets)  # (P, n), (P,)
    num_pairs, width = target_codes.shape
    open_key, extend_key = GAP_OPEN * _KEY, GAP_EXTEND * _KEY
    columns = np.arange(width + 1, dtype=np.int64)  # (n + 1,)
    pairs = np.arange(num_pairs)
    beyond = columns[None, :] > target_lengths[:, None]  # (P, n + 1) padding columns of each target
    gap_cost = open_key + extend_key * (columns[1:] - 1)  # (n,) horizontal gap of length j - k
    h_prev = np.zeros((num_pairs, width + 1), dtype=np.int64)  # row 0: leading gaps are free
    f_prev = np.full((num_pairs, width), _NEG, dtype=np.int64)  # (P, n) vertical gaps, columns 1..n
    best = np.zeros(num_pairs, dtype=np.int64)  # free trailing gaps: best over last column and row
    # (P, letters, n) key of each query letter against each target position: one row gather per step.
    profile = _PAIR_KEYS[:, target_codes].transpose(1, 0, 2).copy()
    for i in range(query_codes.shape[1]):
        pair_keys = profile[pairs, query_codes[:, i]]  # (P, n)
        f_row = np.maximum(h_prev[:, 1:] - open_key, f_prev - extend_key)  # (P, n)
        g_row = np.zeros((num_pairs, width + 1), dtype=np.int64)  # column 0: leading gap in target, free
        np.maximum(h_prev[:, :-1] + pair_keys, f_row, out=g_row[:, 1:])
        # Horizontal gap ending at j: max_{k<j} g[k] - open - extend * (j - 1 - k), as a running max.
        running = np.maximum.accumulate(g_row + extend_key * columns, axis=1)  # (P, n + 1)
        h_row = g_row
        np.maximum(g_row[:, 1:], running[:, :-1] - gap_cost, out=h_row[:, 1:])
        active = i < query_lengths  # (P,) pairs whose query still has residue i
        # Trailing gap in the query is free: the last column of every row counts.
        best = np.where(active, np.maximum(best, h_row[pairs, target_lengths]), best)
        last = i + 1 == query_lengths
        if last.any():  # trailing gap in the target is free: the query's last row counts
            best[last] = np.maximum(best[last], np.where(beyond[last], _NEG, h_row[last]).max(axis=1))
        h_prev, f_prev = h_row, f_row
    return np.floor_divide(best, _KEY), np.mod(best, _KEY)


def alignment_scores(query: str, targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Optimal alignment score of ``query`` to each target and its identical pairs: two (P,) int64."""
    return pair_alignment_scores([query] * len(targets), targets)


def pair_identities(queries: Sequence[str], targets: Sequence[str], cell_budget: int = 1 << 15) -> np.ndarray:
    """(P,) identity of queries[p] and targets[p] (see the module doc).

    Identity is symmetric, so each pair is aligned with its longer sequence along the rows and its
    shorter one along the vectorised columns. Pairs are batched in order of row length, each batch
    holding at most ``cell_budget`` (pairs x columns) cells per row, which bounds memory.
    """
    if len(queries) != len(targets):
        raise ValueError(f"pair_identities: {len(queries)} queries but {len(targets)} targets")
    if not queries:
        return np.zeros(0, dtype=np.float64)
    longer = [q if len(q) >= len(t) else t for q, t in zip(queries, targets, strict=True)]
    shorter = [t if len(q) >= len(t) else q for q, t in zip(queries, targets, strict=True)]
    order = np.lexsort(([len(s) for s in shorter], [len(s) for s in longer]))
    identical = np.zeros(len(queries), dtype=np.int64)
    first = 0
    while first < len(order):
        last, width = first, 0
        while last < len(order) and (last - first + 1) * max(width, len(shorter[order[last]])) <= cell_budget:
            width = max(width, len(shorter[order[last]]))
            last += 1
        chosen = order[first : max(last, first + 1)]  # at least one pair, however long
        _, identical[chosen] = pair_alignment_scores(
            [longer[i] for i in chosen], [shorter[i] for i in chosen]
        )
        first += len(chosen)
    return identical / np.array([len(s) for s in shorter])


def identities_to(query: str, targets: Sequence[str]) -> np.ndarray:
    """(len(targets),) identity of ``query`` to each target."""
    return pair_identities([query] * len(targets), targets)


def identity(a: str, b: str) -> float:
    """Identity of two sequences (identical aligned pairs / length of the shorter one)."""
    return float(pair_identities([a], [b])[0])


@dataclass
class Diversity:
    """Mean pairwise identity of a set (lower = more diverse)."""

    mean_pairwise_identity: float
    median_pairwise_identity: float
    num_sequences: int  # sequences compared (after subsampling)
    num_pairs: int
    subsampled: bool
    distinct_fraction: float  # distinct sequences / all sequences (whole set)


def diversity(sequences: Sequence[str], max_sequences: int = 100, seed: int = 0) -> Diversity:
    """Mean identity over all pairs of at most ``max_sequences`` sequences (a seeded random subsample)."""
    if len(sequences) < 2:
        raise ValueError(f"diversity needs at least 2 sequences, got {len(sequences)}")
    if max_sequences < 2:
        raise ValueError(f"diversity: max_sequences must be >= 2, got {max_sequences}")
    chosen = list(sequences)
    subsampled = len(chosen) > max_sequences
    if subsampled:
        picks = np.random.default_rng(seed).choice(len(chosen), size=max_sequences, replace=False)
        chosen = [chosen[i] for i in sorted(picks)]
    first, second = np.triu_indices(len(chosen), k=1)
    values = pair_identities([chosen[i] for i in first], [chosen[j] for j in second])
    return Diversity(
        mean_pairwise_identity=float(values.mean()),
        median_pairwise_identity=float(np.median(values)),
        num_sequences=len(chosen),
        num_pairs=int(values.size),
        subsampled=subsampled,
        distinct_fraction=len(set(sequences)) / len(sequences),
    )


# ------------------------------------------------------------------------------------ novelty


class KmerIndex:
    """Inverted index of the distinct k-mers of a reference set, for the novelty prefilter.

    The candidate score of a reference sequence is its number of distinct k-mers shared with the
    query minus the number expected by chance (|K_query| * |K_ref| / 20^k), so long reference
    sequences, which contain most short k-mers, are not favoured for their length alone.
    """

    def __init__(self, sequences: Sequence[str], k: int = DEFAULT_KMER) -> None:
        if k < 1:
            raise ValueError(f"KmerIndex: k must be >= 1, got {k}")
        if not sequences:
            raise ValueError("KmerIndex: the reference set is empty")
        self.k = k
        self.sequences = list(sequences)
        owners, codes = [], []
        for index, sequence in enumerate(self.sequences):
            kmers = self._kmers(sequence)
            owners.append(np.full(len(kmers), index, dtype=np.int64))
            codes.append(kmers)
        owner = np.concatenate(owners)
        code = np.concatenate(codes)
        order = np.lexsort((owner, code))  # postings sorted by k-mer, then by owner
        self._codes = code[order]
        self._owners = owner[order]
        self.num_kmers = np.bincount(owner, minlength=len(self.sequences))  # (R,) distinct k-mers each

    def _kmers(self, sequence: str) -> np.ndarray:
        """Distinct k-mer codes of ``sequence`` (letter codes in base len(_CODE_LETTERS))."""
        codes = _codes(sequence)
        if len(codes) < self.k:
            return np.zeros(0, dtype=np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(codes, self.k)  # (L - k + 1, k)
        weights = len(_CODE_LETTERS) ** np.arange(self.k - 1, -1, -1, dtype=np.int64)
        return np.unique(windows @ weights)

    def candidates(self, query: str, num_candidates: int) -> np.ndarray:
        """Indices of the ``num_candidates`` reference sequences with the best prefilter score."""
        kmers = self._kmers(query)
        starts = np.searchsorted(self._codes, kmers, side="left")
        ends = np.searchsorted(self._codes, kmers, side="right")
        postings = [self._owners[s:e] for s, e in zip(starts, ends, strict=True)]
        hits = np.concatenate(postings) if postings else np.zeros(0, dtype=np.int64)
        shared = np.bincount(hits, minlength=len(self.sequences)).astype(np.float64)
        expected = len(kmers) * self.num_kmers / 20.0**self.k
        score = shared - expected
        count = min(num_candidates, len(self.sequences))
        best = np.argpartition(-score, count - 1)[:count]
        return best[np.argsort(-score[best], kind="stable")]


@dataclass
class Novelty:
    """Highest identity of each query to the reference set (lower = more novel)."""

    max_identity: np.ndarray  # (Q,) float64
    nearest: list[int]  # (Q,) index of the reference sequence giving it
    num_reference: int
    k: int
    num_candidates: int


def novelty(
    queries: Sequence[str],
    index: KmerIndex,
    num_candidates: int = DEFAULT_CANDIDATES,
) -> Novelty:
    """For each query, align the ``num_candidates`` best prefilter hits and keep the highest identity."""
    if num_candidates < 1:
        raise ValueError(f"novelty: num_candidates must be >= 1, got {num_candidates}")
    chosen = [index.candidates(query, num_candidates) for query in queries]  # Q arrays of indices
    values = pair_identities(
        [query for query, picks in zip(queries, chosen, strict=True) for _ in picks],
        [index.sequences[i] for picks in chosen for i in picks],
    )
    best = np.zeros(len(queries), dtype=np.float64)
    nearest = []
    start = 0
    for q, picks in enumerate(chosen):
        mine = values[start : start + len(picks)]
        top = int(np.argmax(mine))
        best[q] = mine[top]
        nearest.append(int(picks[top]))
        start += len(picks)
    return Novelty(best, nearest, len(index.sequences), index.k, num_candidates)


# ------------------------------------------------------------------------------------ complexity


def low_complexity_mask(
    sequence: str, window: int = LOW_COMPLEXITY_WINDOW, threshold_bits: float = LOW_COMPLEXITY_BITS
) -> np.ndarray:
    """(L,) bool: residues inside a window whose letter entropy is below ``threshold_bits``."""
    if window < 1:
        raise ValueError(f"low_complexity_mask: window must be >= 1, got {window}")
    raw = np.frombuffer(sequence.upper().encode("ascii"), dtype=np.uint8)
    length = len(raw)
    if length == 0:
        return np.zeros(0, dtype=bool)
    size = min(window, length)
    _, letter_ids = np.unique(raw, return_inverse=True)
    one_hot = np.zeros((length + 1, int(letter_ids.max()) + 1), dtype=np.int64)
    one_hot[np.arange(1, length + 1), letter_ids] = 1
    cumulative = one_hot.cumsum(axis=0)  # (L + 1, letters)
    counts = cumulative[size:] - cumulative[:-size]  # (L - size + 1, letters) counts per window
    probs = counts / size
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(probs > 0, probs * np.log2(probs), 0.0).sum(axis=1)  # (W,) bits
    low = entropy < threshold_bits
    # A residue at position i is covered by windows starting in [i - size + 1, i].
    covered = np.zeros(length + 1, dtype=np.int64)
    starts = np.flatnonzero(low)
    np.add.at(covered, starts, 1)
    np.add.at(covered, starts + size, -1)
    return covered.cumsum()[:length] > 0


def low_complexity_fraction(sequences: Sequence[str], **kwargs: float) -> float:
    """Fraction of all residues (residue-weighted over the set) flagged by ``low_complexity_mask``."""
    flagged = sum(int(low_complexity_mask(s, **kwargs).sum()) for s in sequences)
    total = sum(len(s) for s in sequences)
    if total == 0:
        raise ValueError("low_complexity_fraction: no residues")
    return flagged / total


def max_homopolymer(sequence: str) -> int:
    """Length of the longest run of one repeated letter."""
    if not sequence:
        return 0
    raw = np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)
    breaks = np.flatnonzero(raw[1:] != raw[:-1]) + 1
    bounds = np.concatenate([[0], breaks, [len(raw)]])
    return int(np.diff(bounds).max())


def length_summary(sequences: Sequence[str]) -> dict[str, float]:
    """Mean, median, min, max and standard deviation of the lengths."""
    if not sequences:
        raise ValueError("length_summary: no sequences")
    lengths = np.array([len(s) for s in sequences], dtype=np.float64)
    return {
        "mean": float(lengths.mean()),
        "median": float(np.median(lengths)),
        "min": float(lengths.min()),
        "max": float(lengths.max()),
        "std": float(lengths.std()),
    }
