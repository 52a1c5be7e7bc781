"""Model-free sequence statistics that a function label should move, to compare sets of sequences.

A model conditioned on a label (e.g. GO:0016021 "integral component of membrane") should shift
simple, label-specific statistics of what it generates. These functions measure them on plain
residue strings, so guided samples, unconditional samples and real members of the label can be
put side by side without any model:

* transmembrane-like segment: some window of TM_WINDOW (19) residues has a mean Kyte-Doolittle
  hydropathy >= TM_THRESHOLD (1.6), Kyte & Doolittle's (1982) rule for a membrane-spanning helix.
  A sequence shorter than the window has none.
* net charge: (K + R) - (D + E), a plain count at neutral pH (His left out); per sequence, and per
  100 residues.
* K+R fraction: (K + R) / length.

Letters are read case-insensitively. The TM statistic depends on length (a longer sequence has more
windows), so compare real proteins with generated ones of the same lengths (``crop_to_lengths``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Kyte & Doolittle (1982), J. Mol. Biol. 157:105-132, Table 2. Letters outside it count as 0.
KYTE_DOOLITTLE: dict[str, float] = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5,
    "G": -0.4, "H": -3.2, "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8,
    "P": -1.6, "S": -0.8, "T": -0.7, "W": -0.9, "Y": -1.3, "V": 4.2,
}  # fmt: skip
TM_WINDOW = 19  # residues of a membrane-spanning helix window (Kyte & Doolittle)
TM_THRESHOLD = 1.6  # mean hydropathy over TM_WINDOW that flags a membrane-spanning segment

# Every scale value is a whole number of tenths, so window sums are exact integers in tenths. Then
# mean = sum / (10 * window) is one correctly rounded division of two exact integers: a window
# whose true mean is exactly 1.6 gives the double 1.6 and passes ">= 1.6", which a float cumsum
# (rounding at every step) does not guarantee.
_TENTHS_OF_BYTE = np.zeros(256, dtype=np.int64)  # byte -> hydropathy in tenths; other bytes 0
for _letter, _value in KYTE_DOOLITTLE.items():
    _TENTHS_OF_BYTE[ord(_letter)] = _TENTHS_OF_BYTE[ord(_letter.lower())] = round(_value * 10)


def _hydropathy_tenths(sequence: str) -> np.ndarray:
    """(L,) int64 Kyte-Doolittle values in tenths, one per character (non-standard ones 0)."""
    # errors="replace" turns each non-ASCII character into one '?', so positions are kept.
    return _TENTHS_OF_BYTE[np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)]


def max_hydropathy_window(sequence: str, window: int = TM_WINDOW) -> float | None:
    """Largest mean Kyte-Doolittle hydropathy over any ``window`` consecutive residues.

    Non-standard letters (X, B, Z, U, O, anything else) count as 0 but still occupy their position
    in a window. None when the sequence is shorter than the window. Vectorised with a cumulative sum.
    """
    if window < 1:
        raise ValueError(f"max_hydropathy_window: window must be >= 1, got {window}")
    if len(sequence) < window:
        return None
    cumulative = np.concatenate(([0], np.cumsum(_hydropathy_tenths(sequence))))  # (L + 1,)
    window_sums = cumulative[window:] - cumulative[:-window]  # (L - window + 1,) in tenths
    return int(window_sums.max()) / (10 * window)


def has_transmembrane_like_segment(sequence: str, window: int = TM_WINDOW, threshold: float = TM_THRESHOLD) -> bool:
    """True when some window of ``window`` residues averages >= ``threshold`` hydropathy.

    With the defaults (19 residues, 1.6) this is Kyte & Doolittle's rule for a membrane-spanning
    helix. A sequence shorter than the window has no such segment.
    """
    best = max_hydropathy_window(sequence, window)
    return best is not None and best >= threshold


def net_charge(sequence: str) -> int:
    """(K + R) - (D + E): the net charge of a sequence as a plain count at neutral pH (His left out)."""
    upper = sequence.upper()
    return upper.count("K") + upper.count("R") - upper.count("D") - upper.count("E")


def kr_fraction(sequence: str) -> float:
    """(K + R) / length, the fraction of basic residues; 0.0 for an empty sequence."""
    if not sequence:
        return 0.0
    upper = sequence.upper()
    return (upper.count("K") + upper.count("R")) / len(sequence)


@dataclass
class SignatureSummary:
    """The label-signature statistics of one set of sequences (see the module docstring)."""

    count: int  # sequences in the set
    transmembrane_fraction: float  # fraction with a TM-like segment (shorter than the window: none)
    transmembrane_standard_error: float  # binomial sqrt(p (1 - p) / n) of that fraction
    mean_net_charge: float  # mean of (K + R) - (D + E) over sequences
    mean_net_charge_per_100: float  # mean over sequences of 100 * net_charge / length (0 if empty)
    mean_kr_fraction: float  # mean over sequences of (K + R) / length
    mean_length: float  # mean sequence length in residues

    def to_dict(self) -> dict[str, float | int]:
        """The fields as a plain JSON-ready dictionary, in declaration order."""
        return asdict(self)


def summarize_signatures(sequences: Sequence[str]) -> SignatureSummary:
    """The signature statistics of one set of sequences.

    An empty sequence counts as length 0, without a TM-like segment, with net charge 0 and 0 per
    100 residues. An empty set raises ValueError.
    """
    if len(sequences) == 0:
        raise ValueError("summarize_signatures: the set of sequences is empty, nothing to summarise")
    num = len(sequences)
    lengths = np.array([len(s) for s in sequences], dtype=np.float64)
    charges = np.array([net_charge(s) for s in sequences], dtype=np.float64)
    with_tm = np.array([has_transmembrane_like_segment(s) for s in sequences], dtype=np.float64)
    per_100 = np.divide(100.0 * charges, lengths, out=np.zeros(num), where=lengths > 0)
    tm_fraction = float(with_tm.mean())
    return SignatureSummary(
        count=num,
        transmembrane_fraction=tm_fraction,
        transmembrane_standard_error=math.sqrt(tm_fraction * (1.0 - tm_fraction) / num),
        mean_net_charge=float(charges.mean()),
        mean_net_charge_per_100=float(per_100.mean()),
        mean_kr_fraction=float(np.mean([kr_fraction(s) for s in sequences])),
        mean_length=float(lengths.mean()),
    )


def crop_to_lengths(sequences: Sequence[str], lengths: Sequence[int], seed: int) -> list[str]:
    """Random windows of real sequences with given lengths, to compare them with generated ones.

    A model with max_length 128 generates <= 128 residues while real members are full length, and
    the TM statistic depends on length, so real sequences are cropped to the generated lengths.
    Output i is a uniformly random window of length min(lengths[i], len(s)) of s = sequences[i %
    len(sequences)]. Deterministic for a seed (numpy default_rng).
    """
    if any(length < 0 for length in lengths):
        raise ValueError(f"crop_to_lengths: lengths must be >= 0, got {min(lengths)}")
    if len(lengths) > 0 and len(sequences) == 0:
        raise ValueError(f"crop_to_lengths: {len(lengths)} lengths requested but no sequences to crop")
    rng = np.random.default_rng(seed)
    crops = []
    for i, length in enumerate(lengths):
        source = sequences[i % len(sequences)]
        size = min(int(length), len(source))
        start = int(rng.integers(0, len(source) - size + 1))  # every start of a full window equally likely
        crops.append(source[start : start + size])
    return crops


def compare_signatures(groups: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float | int]]:
    """Group name -> summary dictionary, in the order of ``groups``.

    Typical groups: "guided", "unconditional", "real members", "real members, length-matched".
    """
    table = {}
    for name, sequences in groups.items():
        if len(sequences) == 0:
            raise ValueError(f"compare_signatures: group {name!r} has no sequences")
        table[name] = summarize_signatures(sequences).to_dict()
    return table


def signature_table_markdown(table: Mapping[str, Mapping[str, float | int]]) -> str:
    """A markdown table of ``compare_signatures`` output, one row per group.

    Columns: n, TM-like fraction ± standard error, mean net charge, net charge per 100 residues,
    K+R fraction, mean length.
    """
    lines = [
        "| group | n | TM-like fraction ± SE | mean net charge | net charge / 100 res | K+R fraction | mean length |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        cells = [
            name.replace("|", "\\|"),  # a '|' in a name would split the row
            str(row["count"]),
            f"{row['transmembrane_fraction']:.3f} ± {row['transmembrane_standard_error']:.3f}",
            f"{row['mean_net_charge']:+.2f}",
            f"{row['mean_net_charge_per_100']:+.2f}",
            f"{row['mean_kr_fraction']:.3f}",
            f"{row['mean_length']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
