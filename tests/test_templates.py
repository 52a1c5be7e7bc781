"""Sampler templates from user requests: strings, lengths, prefix/suffix, padding, errors, Batch layout."""

from __future__ import annotations

import pytest
import torch

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.diffusion.templates import (
    parse_template,
    prefix_suffix_template,
    stack_templates,
    template_batch,
    templates_from_lengths,
    templates_from_strings,
)

ALPHABET = Alphabet()
MASK, PAD = ALPHABET.mask_id, ALPHABET.pad_id


def test_parse_template_fixes_residues_and_masks_underscores() -> None:
    """'MKT___GGS' -> ids of M, K, T, three MASKs, G, G, S (lowercase letters accepted)."""
    out = parse_template("MKT___ggS", ALPHABET)
    assert out.dtype == torch.int64
    expected = [*ALPHABET.encode("MKT").tolist(), MASK, MASK, MASK, *ALPHABET.encode("GGS").tolist()]
    assert out.tolist() == expected
    assert ALPHABET.decode(out) == "MKT___GGS"


def test_parse_template_errors_name_template_and_character() -> None:
    """A bad character, an empty template, or one over max_length is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"template 'MK-T': character '-' at position 3"):
        parse_template("MK-T", ALPHABET)
    with pytest.raises(ValueError, match=r"template 'MKé': character 'é' at position 3"):
        parse_template("MKé", ALPHABET)
    with pytest.raises(ValueError, match="length must be >= 1"):
        parse_template("", ALPHABET)
    with pytest.raises(ValueError, match=r"template 'MKT___': length 6 exceeds max_length 5"):
        parse_template("MKT___", ALPHABET, max_length=5)


def test_prefix_suffix_template() -> None:
    """Prefix at the start, suffix at the end, MASK in between; too long a prefix+suffix is an error."""
    out = prefix_suffix_template(7, ALPHABET, prefix="MK", suffix="GS")
    assert ALPHABET.decode(out) == "MK___GS"
    assert ALPHABET.decode(prefix_suffix_template(3, ALPHABET)) == "___"
    assert ALPHABET.decode(prefix_suffix_template(4, ALPHABET, suffix="W")) == "___W"
    with pytest.raises(ValueError, match="prefix and suffix hold 4 residues, more than 3"):
        prefix_suffix_template(3, ALPHABET, prefix="MK", suffix="GS")
    with pytest.raises(ValueError, match="exceeds max_length 10"):
        prefix_suffix_template(11, ALPHABET, prefix="M", max_length=10)


def test_batches_of_different_lengths_are_padded() -> None:
    """Strings and lengths give (B, longest) templates right-padded with PAD."""
    out = templates_from_strings(["MK_", "A____", "W"], ALPHABET)
    assert out.shape == (3, 5)
    assert ALPHABET.decode_batch(out.tolist()) == ["MK_", "A____", "W"]
    assert bool((out[0, 3:] == PAD).all()) and bool((out[2, 1:] == PAD).all())

    lengths = templates_from_lengths([3, 1, 4], ALPHABET)
    assert lengths.tolist() == [[MASK] * 3 + [PAD], [MASK] + [PAD] * 3, [MASK] * 4]
    with pytest.raises(ValueError, match="requested sequence length 0"):
        templates_from_lengths([3, 0], ALPHABET)
    with pytest.raises(ValueError, match="length 9 exceeds max_length 8"):
        templates_from_lengths([9], ALPHABET, max_length=8)
    with pytest.raises(ValueError, match="no templates"):
        stack_templates([], PAD)


def test_template_batch_layout() -> None:
    """template_batch gives one segment per row over non-PAD positions, positions 0.. and a real count."""
    template = templates_from_strings(["MK_", "A____"], ALPHABET)
    batch = template_batch(template, PAD)
    assert batch.segment_ids.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.positions.tolist() == [[0, 1, 2, 0, 0], [0, 1, 2, 3, 4]]
    assert batch.num_real_tokens == 8
    assert torch.equal(batch.tokens, template)
