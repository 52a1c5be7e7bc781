"""Turn user requests into sampler templates: fixed residues, MASK where to generate, PAD as padding.

A template string uses residue letters for fixed positions and '_' for positions to generate, so
"MKT___GGS" keeps MKT and GGS and generates three residues between them (the same convention as
``Alphabet.decode``, which prints MASK as '_'). Rows of different lengths are right-padded with PAD.
``template_batch`` gives the Batch layout (segment ids, positions) a score function needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.batch import Batch

GENERATE_CHAR = "_"


def _check_length(length: int, what: str, max_length: int | None) -> None:
    if length < 1:
        raise ValueError(f"{what}: length must be >= 1, got {length}")
    if max_length is not None and length > max_length:
        raise ValueError(f"{what}: length {length} exceeds max_length {max_length}")


def parse_template(template: str, alphabet: Alphabet, max_length: int | None = None) -> torch.Tensor:
    """(L,) int64 ids of a template string: residues fixed, '_' -> MASK (generate)."""
    _check_length(len(template), f"template {template!r}", max_length)
    for position, char in enumerate(template):
        if char != GENERATE_CHAR and char.upper() not in alphabet.residues:
            raise ValueError(
                f"template {template!r}: character {char!r} at position {position + 1} is neither a residue "
                f"of {alphabet.residues!r} nor {GENERATE_CHAR!r} (generate)"
            )
    generate = np.frombuffer(template.encode("ascii"), dtype=np.uint8) == ord(GENERATE_CHAR)
    placeholder = template.replace(GENERATE_CHAR, alphabet.residues[0])
    ids = alphabet.encode(placeholder, name=template).astype(np.int64)
    ids[generate] = alphabet.mask_id
    return torch.from_numpy(ids)


def prefix_suffix_template(
    length: int, alphabet: Alphabet, prefix: str = "", suffix: str = "", max_length: int | None = None
) -> torch.Tensor:
    """(length,) template that fixes ``prefix`` at the start and ``suffix`` at the end, MASK between."""
    what = f"template of length {length} with prefix {prefix!r} and suffix {suffix!r}"
    _check_length(length, what, max_length)
    middle = length - len(prefix) - len(suffix)
    if middle < 0:
        fixed = len(prefix) + len(suffix)
        raise ValueError(f"{what}: prefix and suffix hold {fixed} residues, more than {length}")
    return parse_template(prefix + GENERATE_CHAR * middle + suffix, alphabet, max_length)


def stack_templates(rows: Sequence[torch.Tensor], pad_id: int) -> torch.Tensor:
    """(B, max length) int64: one template per row, right-padded with ``pad_id``."""
    if not rows:
        raise ValueError("stack_templates: no templates given")
    width = max(int(row.shape[0]) for row in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    for r, row in enumerate(rows):
        out[r, : row.shape[0]] = row
    return out


def templates_from_strings(
    templates: Sequence[str], alphabet: Alphabet, max_length: int | None = None
) -> torch.Tensor:
    """(B, L) int64 templates from strings like "MKT___GGS", padded with PAD to the longest."""
    return stack_templates([parse_template(t, alphabet, max_length) for t in templates], alphabet.pad_id)


def templates_from_lengths(
    lengths: Sequence[int], alphabet: Alphabet, max_length: int | None = None
) -> torch.Tensor:
    """(B, max(lengths)) int64: row b is lengths[b] MASK tokens (generate everything), then PAD."""
    rows = []
    for length in lengths:
        _check_length(int(length), f"requested sequence length {length}", max_length)
        rows.append(torch.full((int(length),), alphabet.mask_id, dtype=torch.int64))
    return stack_templates(rows, alphabet.pad_id)


def template_batch(template: torch.Tensor, pad_id: int) -> Batch:
    """The Batch layout of a (B, L) template: one segment per row over its non-PAD positions.

    Positions count the non-PAD positions of a row from 0, as for a training sequence.
    """
    real = template != pad_id  # (B, L)
    positions = (real.long().cumsum(dim=-1) - 1).clamp_min(0) * real  # (B, L)
    return Batch(
        tokens=template,
        segment_ids=real.to(torch.int32),
        positions=positions,
        num_real_tokens=int(real.sum()),
    )
