"""The protein alphabet: residue letters <-> token ids, plus the MASK and PAD specials.

Token layout (N = number of residue tokens):
  0 .. N-1  residues, the 20 standard amino acids then the rare/ambiguous UniProt letters
  N         MASK, the absorbing state of the diffusion (``mask_id == num_residues``)
  N + 1     PAD, never a diffusion state: only masks refer to it

The alphabet is saved with every model (``to_dict``/``from_dict``) so a checkpoint decodes
its own tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# X unknown, B = D/N, Z = E/Q, U selenocysteine, O pyrrolysine, J = I/L. All occur in UniRef50.
RARE_AMINO_ACIDS = "XBZUOJ"
DEFAULT_RESIDUES = STANDARD_AMINO_ACIDS + RARE_AMINO_ACIDS

UNKNOWN_POLICIES = ("error", "map_to_x")
_INVALID = 255


class UnknownResidueError(ValueError):
    """A sequence holds a character that is not in the alphabet."""


@dataclass(frozen=True)
class Alphabet:
    """Maps residue letters to token ids and back.

    Lowercase letters are accepted and encoded like uppercase ones.
    """

    residues: str = DEFAULT_RESIDUES
    _lookup: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.residues)) != len(self.residues):
            raise ValueError(f"alphabet residues contain duplicates: {self.residues!r}")
        if not self.residues.isascii() or not self.residues.isalpha() or not self.residues.isupper():
            raise ValueError(f"alphabet residues must be uppercase ASCII letters: {self.residues!r}")
        if len(self.residues) > 250:
            raise ValueError("alphabet too large for uint8 token storage")
        lookup = np.full(256, _INVALID, dtype=np.uint8)
        for token_id, letter in enumerate(self.residues):
            lookup[ord(letter)] = token_id
            lookup[ord(letter.lower())] = token_id
        object.__setattr__(self, "_lookup", lookup)

    @property
    def num_residues(self) -> int:
        """N: the number of residue tokens (diffusion states other than MASK)."""
        return len(self.residues)

    @property
    def mask_id(self) -> int:
        """Id of the absorbing MASK state (== num_residues)."""
        return len(self.residues)

    @property
    def pad_id(self) -> int:
        """Id written where a batch holds no token."""
        return len(self.residues) + 1

    @property
    def vocab_size(self) -> int:
        """Number of ids a token tensor may hold (residues, MASK, PAD)."""
        return len(self.residues) + 2

    @property
    def standard_ids(self) -> list[int]:
        """Token ids of the 20 standard amino acids present in this alphabet."""
        return [i for i, letter in enumerate(self.residues) if letter in STANDARD_AMINO_ACIDS]

    def encode(self, sequence: str, name: str | None = None, unknown: str = "error") -> np.ndarray:
        """Encode a residue string into a uint8 array of token ids.

        ``unknown="error"`` raises UnknownResidueError naming the character and the sequence;
        ``unknown="map_to_x"`` maps unknown letters to X (callers count these, see
        ``count_unknown``). Non-letters always raise.
        """
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown-residue policy must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        label = f"sequence {name!r}" if name is not None else "sequence"
        try:
            raw = np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError as err:
            bad = sequence[err.start]
            raise UnknownResidueError(f"{label}: non-ASCII character {bad!r} at position {err.start + 1}") from None
        ids = self._lookup[raw]
        invalid = ids == _INVALID
        if invalid.any():
            positions = np.flatnonzero(invalid)
            first = int(positions[0])
            bad = chr(raw[first])
            if unknown == "error" or not bad.isalpha():
                raise UnknownResidueError(
                    f"{label}: character {bad!r} at position {first + 1} is not in the alphabet {self.residues!r}"
                )
            ids = ids.copy()
            ids[positions] = self.residues.index("X")
        return ids

    def count_unknown(self, sequence: str) -> int:
        """Number of characters of ``sequence`` that are not in the alphabet."""
        raw = np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)
        return int((self._lookup[raw] == _INVALID).sum())

    def decode(self, ids: Iterable[int] | np.ndarray, mask_char: str = "_") -> str:
        """Decode token ids to a string. MASK becomes ``mask_char``; PAD ends nothing and is skipped."""
        letters = []
        for token_id in (int(i) for i in ids):
            if 0 <= token_id < self.num_residues:
                letters.append(self.residues[token_id])
            elif token_id == self.mask_id:
                letters.append(mask_char)
            elif token_id == self.pad_id:
                continue
            else:
                raise ValueError(f"token id {token_id} is outside the alphabet (vocab {self.vocab_size})")
        return "".join(letters)

    def decode_batch(self, tokens: Sequence[Sequence[int]]) -> list[str]:
        """Decode each row of a token matrix (PAD positions dropped)."""
        return [self.decode(row) for row in tokens]

    def to_dict(self) -> dict:
        """Plain-data form stored in checkpoints."""
        return {"residues": self.residues, "mask_id": self.mask_id, "pad_id": self.pad_id}

    @classmethod
    def from_dict(cls, data: dict) -> Alphabet:
        """Rebuild an alphabet saved by ``to_dict`` (the special ids are checked, not trusted)."""
        alphabet = cls(residues=str(data["residues"]))
        for key in ("mask_id", "pad_id"):
            if key in data and int(data[key]) != getattr(alphabet, key):
                raise ValueError(f"saved alphabet has {key}={data[key]}, expected {getattr(alphabet, key)}")
        return alphabet
