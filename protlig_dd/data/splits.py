"""Deterministic train/validation/test assignment from a 64-bit hash of each sequence id.

Each id is hashed with BLAKE2b (8-byte digest, little-endian) and mapped to u in [0, 1) from its
top 53 bits. A sequence goes to validation when u < validation_fraction, to test when
validation_fraction <= u < validation_fraction + test_fraction, and to training otherwise. The
assignment depends on the id alone, so it is the same when the file is re-ordered, when records are
added (existing ids keep their split), across machines and Python versions (no ``hash()`` salt).
Duplicate ids always land in the same split, which keeps exact duplicates from leaking across.

The hashes are computed once while preparing the cache (``id_hash.bin``), so splitting 60 M
sequences is a few vectorised numpy operations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

import numpy as np

_UNIT = float(2.0**-53)


def hash_ids(ids: Iterable[bytes]) -> np.ndarray:
    """(n,) uint64 hashes of the given ids (UTF-8 bytes), the same on every machine."""
    digests = b"".join([blake2b(i, digest_size=8).digest() for i in ids])
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def hash_to_unit(hashes: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform in [0, 1) (top 53 bits, exact in float64)."""
    return (np.asarray(hashes, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * _UNIT


@dataclass
class SplitIndices:
    """Indices (into one store) of the sequences of each split; sorted ascending."""

    train: np.ndarray  # (n_train,) int64
    validation: np.ndarray  # (n_validation,) int64
    test: np.ndarray  # (n_test,) int64


def assign_splits(hashes: np.ndarray, validation_fraction: float, test_fraction: float) -> SplitIndices:
    """Split sequences by id hash into train/validation/test with the given expected fractions."""
    if not 0.0 <= validation_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
        raise ValueError(
            f"split fractions must be in [0, 1): validation {validation_fraction}, test {test_fraction}"
        )
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"validation + test fractions must be < 1, got {validation_fraction + test_fraction}"
        )
    unit = hash_to_unit(hashes)  # (n,)
    in_validation = unit < validation_fraction
    in_test = (unit >= validation_fraction) & (unit < validation_fraction + test_fraction)
    in_train = ~(in_validation | in_test)
    return SplitIndices(
        train=np.flatnonzero(in_train).astype(np.int64),
        validation=np.flatnonzero(in_validation).astype(np.int64),
        test=np.flatnonzero(in_test).astype(np.int64),
    )


def exclude_ids(indices: np.ndarray, hashes: np.ndarray, excluded_hashes: np.ndarray) -> np.ndarray:
    """Drop from ``indices`` the sequences whose id hash is in ``excluded_hashes``.

    Used to keep the ids of an explicit validation/test file out of training.
    """
    if len(excluded_hashes) == 0 or len(indices) == 0:
        return indices
    keep = ~np.isin(np.asarray(hashes)[indices], np.asarray(excluded_hashes))
    return indices[keep]
