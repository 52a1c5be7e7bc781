"""Label signatures (protlig_dd.evaluation.label_signatures) against hand-computed values, brute force
and real Swiss-Prot membrane proteins."""

from __future__ import annotations

import gzip
import math
import random
from pathlib import Path

import pytest

from protlig_dd.data.alphabet import STANDARD_AMINO_ACIDS
from protlig_dd.evaluation import label_signatures as ls

SWISSPROT50 = Path(__file__).resolve().parents[2] / "shared" / "data" / "swissprot50_2014"
MEMBRANE_TERM = "GO:0016021"  # integral component of membrane

# 8 L (38 tenths each), 2 A (18) and 9 G (-4): 304 + 36 - 36 = 304 tenths over 19 residues, mean exactly 1.6.
AT_THRESHOLD_CORE = "LLLLAGGGGGGGGGALLLL"


def test_kyte_doolittle_scale_has_the_published_values() -> None:
    """The 20 standard residues with Kyte & Doolittle's values (spot checks at both ends and zero-adjacent)."""
    assert set(ls.KYTE_DOOLITTLE) == set(STANDARD_AMINO_ACIDS)
    assert (ls.KYTE_DOOLITTLE["I"], ls.KYTE_DOOLITTLE["R"], ls.KYTE_DOOLITTLE["G"]) == (4.5, -4.5, -0.4)
    assert (ls.TM_WINDOW, ls.TM_THRESHOLD) == (19, 1.6)


def test_nineteen_leucines_are_a_transmembrane_segment() -> None:
    """19 L: the only window has mean 3.8 >= 1.6."""
    assert ls.max_hydropathy_window("L" * 19) == pytest.approx(3.8)
    assert ls.has_transmembrane_like_segment("L" * 19)


def test_a_sequence_shorter_than_the_window_has_no_segment() -> None:
    """18 L: no window of 19 fits, so None and False (not an error, not the mean of what is there)."""
    assert ls.max_hydropathy_window("L" * 18) is None
    assert not ls.has_transmembrane_like_segment("L" * 18)
    assert ls.max_hydropathy_window("") is None


def test_a_window_exactly_at_the_threshold_counts() -> None:
    """D + core + D with one window of mean exactly 1.6 (304 tenths / 19) passes '>= 1.6'.

    Guards the exact-arithmetic path: a float running sum could land on 1.5999999 and miss it.
    The two windows that include a flanking D are lower, so this is the only qualifying window.
    """
    sequence = "D" + AT_THRESHOLD_CORE + "D"
    assert ls.max_hydropathy_window(sequence) == 1.6
    assert ls.has_transmembrane_like_segment(sequence)
    # One G swapped for S (-0.8 instead of -0.4): 300 tenths, mean 1.5789, just below.
    below = "D" + AT_THRESHOLD_CORE.replace("G", "S", 1) + "D"
    assert ls.max_hydropathy_window(below) == pytest.approx(300 / 190)
    assert not ls.has_transmembrane_like_segment(below)


def test_hydrophobic_halves_split_by_a_charged_block_are_not_a_segment() -> None:
    """10 L + 10 K + 10 L: every 19-window straddles at least 9 K; the best (9 K + 10 L) averages
    (10 * 3.8 - 9 * 3.9) / 19 = 2.9 / 19, far below 1.6, although each half is very hydrophobic."""
    sequence = "L" * 10 + "K" * 10 + "L" * 10
    assert ls.max_hydropathy_window(sequence) == pytest.approx(2.9 / 19)
    assert not ls.has_transmembrane_like_segment(sequence)
    # The same 19 L between hydrophilic flanks: the best window is the L block itself.
    assert ls.max_hydropathy_window("DDDDD" + "L" * 19 + "KKKKK") == pytest.approx(3.8)


def test_max_window_matches_brute_force_on_random_sequences() -> None:
    """The cumulative-sum maximum equals a loop over all windows (random.Random(0) sequences of
    standard letters plus X, lengths 1-80, windows 1-25)."""
    rng = random.Random(0)
    letters = STANDARD_AMINO_ACIDS + "X"
    for _ in range(200):
        sequence = "".join(rng.choice(letters) for _ in range(rng.randint(1, 80)))
        window = rng.randint(1, 25)
        values = [ls.KYTE_DOOLITTLE.get(c, 0.0) for c in sequence]
        means = [sum(values[i : i + window]) / window for i in range(len(sequence) - window + 1)]
        expected = max(means) if means else None
        assert ls.max_hydropathy_window(sequence, window) == pytest.approx(expected)


def test_non_standard_letters_count_zero_but_keep_their_position() -> None:
    """X, B, Z, U, O and '*' are 0 and still fill a window slot: 10 L + 9 of them averages 3.8 * 10 / 19;
    lowercase reads like uppercase."""
    sequence = "L" * 10 + "XBZUO*XBZ"
    assert ls.max_hydropathy_window(sequence) == pytest.approx(38 / 19)
    assert ls.max_hydropathy_window("X" * 19) == 0.0
    assert ls.max_hydropathy_window("l" * 19) == pytest.approx(3.8)


def test_bad_window_is_a_value_error() -> None:
    """A window below 1 is a user error, not an empty result."""
    with pytest.raises(ValueError, match="window"):
        ls.max_hydropathy_window("LLLL", window=0)


def test_net_charge_and_kr_fraction_on_small_strings() -> None:
    """KKRDE: 3 - 2 = +1 and 3/5 basic; H counts as neutral; empty gives 0 and 0.0."""
    assert ls.net_charge("KKRDE") == 1
    assert ls.net_charge("DDEEH") == -4
    assert ls.net_charge("") == 0
    assert ls.kr_fraction("KKRDE") == pytest.approx(0.6)
    assert ls.kr_fraction("AAAA") == 0.0
    assert ls.kr_fraction("") == 0.0


def test_summary_of_a_tiny_set_matches_hand_computation() -> None:
    """Four sequences: 19 L (TM, charge 0, length 19), KKKK (+4, length 4), DDAA (-2, length 4) and
    20 L + K (TM, +1, length 21).

    TM fraction 2/4 = 0.5, SE sqrt(0.25 / 4) = 0.25; mean charge 3/4; per 100: (0 + 100 - 50 + 100/21) / 4;
    K+R fraction (0 + 1 + 0 + 1/21) / 4; mean length 48 / 4 = 12.
    """
    summary = ls.summarize_signatures(["L" * 19, "KKKK", "DDAA", "L" * 20 + "K"])
    assert summary.count == 4
    assert summary.transmembrane_fraction == 0.5
    assert summary.transmembrane_standard_error == pytest.approx(0.25)
    assert summary.mean_net_charge == pytest.approx(0.75)
    assert summary.mean_net_charge_per_100 == pytest.approx((0 + 100 - 50 + 100 / 21) / 4)
    assert summary.mean_kr_fraction == pytest.approx((1 + 1 / 21) / 4)
    assert summary.mean_length == 12.0
    assert list(summary.to_dict()) == [
        "count",
        "transmembrane_fraction",
        "transmembrane_standard_error",
        "mean_net_charge",
        "mean_net_charge_per_100",
        "mean_kr_fraction",
        "mean_length",
    ]


def test_summary_of_an_empty_set_is_a_value_error() -> None:
    """No sequences: a ValueError that says the set is empty, not a nan from a 0/0 mean."""
    with pytest.raises(ValueError, match="empty"):
        ls.summarize_signatures([])


def test_crop_to_lengths_is_deterministic_and_crops_substrings() -> None:
    """Same seed, same crops; a different seed differs; output i is a window of sequences[i % n] with
    length min(lengths[i], source length)."""
    rng = random.Random(1)
    sources = ["".join(rng.choice(STANDARD_AMINO_ACIDS) for _ in range(n)) for n in (50, 300, 10)]
    lengths = [20, 128, 128, 5, 300, 0, 7]
    crops = ls.crop_to_lengths(sources, lengths, seed=3)
    assert crops == ls.crop_to_lengths(sources, lengths, seed=3)
    assert crops != ls.crop_to_lengths(sources, lengths, seed=4)
    for i, (crop, length) in enumerate(zip(crops, lengths, strict=True)):
        source = sources[i % len(sources)]
        assert len(crop) == min(length, len(source))
        assert crop in source
    assert ls.crop_to_lengths(sources, [], seed=0) == []
    with pytest.raises(ValueError, match="no sequences"):
        ls.crop_to_lengths([], [5], seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        ls.crop_to_lengths(sources, [-1], seed=0)


def test_crop_starts_cover_every_window() -> None:
    """Crops of length 2 from 'ABCD' reach all three windows (the start is uniform over 0..2, not 0..1)."""
    crops = ls.crop_to_lengths(["ABCD"], [2] * 200, seed=0)
    assert set(crops) == {"AB", "BC", "CD"}


def test_compare_signatures_and_markdown_show_every_group() -> None:
    """Every group is a key of the table and a row of the markdown, in order; an empty group is named."""
    groups = {"guided": ["L" * 19, "KKKK"], "unconditional": ["DDAA"], "real | members": ["L" * 25]}
    table = ls.compare_signatures(groups)
    assert list(table) == list(groups)
    assert table["guided"]["transmembrane_fraction"] == 0.5
    markdown = ls.signature_table_markdown(table)
    rows = markdown.strip().splitlines()
    assert len(rows) == 2 + len(groups)
    assert rows[2].startswith("| guided | 2 | 0.500 ± 0.354 |")
    assert "real \\| members" in rows[4]
    with pytest.raises(ValueError, match="unconditional"):
        ls.compare_signatures({"guided": ["LL"], "unconditional": []})


def _read_fasta_with_accessions(path: Path, count: int) -> tuple[list[str], list[str]]:
    """The first ``count`` (accession, sequence) records of a gzipped FASTA, as two lists."""
    accessions: list[str] = []
    sequences: list[str] = []
    parts: list[str] = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                if parts:
                    sequences.append("".join(parts))
                    parts = []
                if len(sequences) == count:
                    break
                accessions.append(line[1:].split()[0])
            else:
                parts.append(line.strip())
    if parts and len(sequences) < count:
        sequences.append("".join(parts))
    return accessions[: len(sequences)], sequences


def _go_terms(path: Path, accessions: set[str]) -> dict[str, set[str]]:
    """Accession -> all its GO terms (every ontology) from the accession/ontology/go_terms table."""
    terms: dict[str, set[str]] = {}
    with gzip.open(path, "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        assert header == ["accession", "ontology", "go_terms"], header
        for line in handle:
            accession, _ontology, go_terms = line.rstrip("\n").split("\t")
            if accession in accessions:
                terms.setdefault(accession, set()).update(go_terms.split(";"))
    return terms


@pytest.mark.skipif(not SWISSPROT50.is_dir(), reason=f"Swiss-Prot 50% data not found at {SWISSPROT50}")
def test_real_membrane_proteins_have_tm_segments_far_more_often() -> None:
    """On the first 2000 real Swiss-Prot (sp50) representatives, those annotated GO:0016021 have a
    TM-like segment more than 2x as often as the rest, at full length and cropped to 128 residues
    (the generated length). Guards the scale, the window rule and crop_to_lengths on real proteins."""
    accessions, sequences = _read_fasta_with_accessions(SWISSPROT50 / "sp50_reps.fasta.gz", 2000)
    terms = _go_terms(SWISSPROT50 / "sp50_go.tsv.gz", set(accessions))
    members = [s for a, s in zip(accessions, sequences, strict=True) if MEMBRANE_TERM in terms.get(a, ())]
    others = [s for a, s in zip(accessions, sequences, strict=True) if MEMBRANE_TERM not in terms.get(a, ())]
    assert len(members) >= 30 and len(others) >= 30, (len(members), len(others))
    groups = {
        "members": members,
        "others": others,
        "members, 128": ls.crop_to_lengths(members, [128] * len(members), seed=0),
        "others, 128": ls.crop_to_lengths(others, [128] * len(others), seed=0),
    }
    table = ls.compare_signatures(groups)
    fractions = {name: row["transmembrane_fraction"] for name, row in table.items()}
    assert fractions["members"] > 2 * fractions["others"], fractions
    assert fractions["members, 128"] > 2 * fractions["others, 128"], fractions
    assert all(math.isfinite(v) for row in table.values() for v in row.values())
