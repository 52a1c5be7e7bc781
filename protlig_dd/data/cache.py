"""The prepared cache: a source tokenized once into memory-mapped flat arrays on disk.

Layout of a cache directory (all little-endian, no header; counts are in meta.json):
  tokens.bin      uint8   all kept sequences back to back, as alphabet token ids
  offsets.bin     int64   (n+1,) sequence i is tokens[offsets[i]:offsets[i+1]]
  id_hash.bin     uint64  (n,) BLAKE2b-64 of each id (splits.py), for vectorised hash splits
  ids.bin         bytes   the UTF-8 ids back to back
  id_offsets.bin  int64   (n+1,) id i is ids[id_offsets[i]:id_offsets[i+1]]
  meta.json       format version, fingerprint, alphabet, sources, counts, length summary

A flat token array was chosen over Arrow: one memmap serves any window of any sequence with no
per-record objects, and the batchers need nothing else (the ``TokenStore`` protocol).

Writing: records arrive in batches of a few MB; each batch is tokenized with one lookup-table
indexing over the joined bytes (encoding.py) and appended to buffered files, so memory stays flat
however large the input. The cache is built in a hidden temporary sibling directory, fsynced, and
renamed into place (durable_io.atomic_folder); a crash leaves only a ``.<name>.tmp-*`` directory
that is never opened and is deleted by the next preparation. An existing cache is replaced only
after its successor is complete; a full disk (any OSError while writing) deletes the temporary
directory and raises WriteFailedError, keeping the previous cache. A lock file serialises
concurrent preparations of the same directory (e.g. several torchrun ranks).

Reuse: the cache is reused when its fingerprint (source paths, sizes and mtimes, formats and
columns, alphabet, unknown-residue policy, min_length, cache format version) matches; force=True
rebuilds it. A Hugging Face hub name is fingerprinted by name and split only: use force after the
hub data changed.

Unknown residues (letters outside the alphabet): ``error`` stops with the file and line;
``map_to_x`` maps them to X and counts each letter; ``drop`` drops the sequence and counts it.
Non-letters (digits, '-', '.', '*' other than a trailing stop) are always an error. Sequences
shorter than ``min_length`` are dropped and counted. Each dropped sequence is counted under one
reason: too short first, then unknown residues.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.encoding import Encoder, Stats, length_summary
from protlig_dd.data.readers import SourceError, SourceSpec, iter_batches
from protlig_dd.data.splits import hash_ids
from protlig_dd.durable_io import atomic_folder, write_file

logger = logging.getLogger(__name__)

CACHE_FORMAT = "protlig_dd.prepared_cache"
CACHE_FORMAT_VERSION = 1
UNKNOWN_POLICIES = ("error", "map_to_x", "drop")
_FILES = {  # name -> numpy dtype of the flat file
    "tokens": np.uint8,
    "offsets": np.dtype("<i8"),
    "id_hash": np.dtype("<u8"),
    "ids": np.uint8,
    "id_offsets": np.dtype("<i8"),
}


class CacheError(ValueError):
    """A cache directory is missing, incomplete, damaged or of another format."""


# -------------------------------------------------------------------------------------- reading


def _map(path: Path, dtype: Any, count: int) -> np.ndarray:
    """Read-only memory map of ``count`` items (np.memmap cannot map an empty file)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class PreparedCache:
    """A prepared cache opened read-only; satisfies the TokenStore protocol of sequence_set.py.

    Pickling re-opens the directory by path instead of copying the mapped arrays, so DataLoader
    workers share the page cache.
    """

    def __init__(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.meta = meta
        self.tokens = arrays["tokens"]  # (total_residues,) uint8
        self.offsets = arrays["offsets"]  # (n + 1,) int64
        self.id_hash = arrays["id_hash"]  # (n,) uint64
        self._ids = arrays["ids"]
        self._id_offsets = arrays["id_offsets"]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PreparedCache:
        """Memory-map a complete cache directory; CacheError if it is not one."""
        path = Path(path)
        meta = read_meta(path)
        if meta is None:
            raise CacheError(f"{path}: not a prepared cache (no valid meta.json)")
        n = int(meta["counts"]["kept"])
        counts = {
            "tokens": int(meta["counts"]["residues"]),
            "offsets": n + 1,
            "id_hash": n,
            "ids": int(meta["id_bytes"]),
            "id_offsets": n + 1,
        }
        arrays = {}
        for name, dtype in _FILES.items():
            file = path / f"{name}.bin"
            expected = counts[name] * np.dtype(dtype).itemsize
            if not file.is_file() or file.stat().st_size != expected:
                size = file.stat().st_size if file.is_file() else "missing"
                raise CacheError(
                    f"{file}: size {size}, expected {expected} bytes: the cache is damaged; "
                    "rebuild it with force"
                )
            arrays[name] = _map(file, dtype, counts[name])
        if int(arrays["offsets"][-1]) != counts["tokens"] or int(arrays["id_offsets"][-1]) != counts["ids"]:
            raise CacheError(f"{path}: offsets do not match the token/id files; rebuild it with force")
        return cls(path, meta, arrays)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (PreparedCache.open, (str(self.path),))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sequence_id(self, index: int) -> str:
        """The id of sequence ``index`` as written in the source."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sequence index {index} outside cache of {len(self)} sequences")
        start, end = int(self._id_offsets[index]), int(self._id_offsets[index + 1])
        return bytes(self._ids[start:end]).decode("utf-8", "replace")

    @property
    def lengths(self) -> np.ndarray:
        """(n,) int64 sequence lengths."""
        return np.diff(np.asarray(self.offsets))

    @property
    def num_residues(self) -> int:
        return int(self.meta["counts"]["residues"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def residue_counts(self) -> np.ndarray:
        """(N,) int64 count of each residue token over the whole cache."""
        return np.asarray(self.meta["residue_counts"], dtype=np.int64)


def read_meta(path: Path) -> dict[str, Any] | None:
    """meta.json of a cache directory, or None when the directory is not a complete cache of ours."""
    file = Path(path) / "meta.json"
    if not file.is_file():
        return None
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError:
        return None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None
    if meta.get("version") != CACHE_FORMAT_VERSION:
        return None
    return meta


# ---------------------------------------------------------------------------------- fingerprint


def _file_stats(path: Path) -> list[list[Any]]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    st = path.stat()
    return [["", st.st_size, st.st_mtime_ns]]


def fingerprint_inputs(
    specs: Sequence[SourceSpec], alphabet: Alphabet, unknown_residues: str, min_length: int
) -> dict[str, Any]:
    """Everything a cache's content depends on (file stats included), as plain data."""
    sources = []
    for spec in specs:
        entry = spec.describe()
        local = Path(spec.path)
        if local.exists():
            entry["path"] = str(local.resolve())
            entry["files"] = _file_stats(local)
        elif entry["format"] != "hf":
            raise SourceError(f"{spec.path}: file not found")
        sources.append(entry)
    return {
        "version": CACHE_FORMAT_VERSION,
        "sources": sources,
        "alphabet": alphabet.residues,
        "unknown_residues": unknown_residues,
        "min_length": min_length,
    }


def fingerprint(inputs: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``fingerprint_inputs``."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------- writing


class _Writer:
    """Buffered appends of the flat cache files in a directory."""

    def __init__(self, directory: Path) -> None:
        self.files = {name: open(directory / f"{name}.bin", "wb", buffering=1 << 22) for name in _FILES}
        self.num_tokens = 0
        self.num_id_bytes = 0
        self.files["offsets"].write(np.zeros(1, dtype="<i8").tobytes())
        self.files["id_offsets"].write(np.zeros(1, dtype="<i8").tobytes())

    def append(self, tokens: np.ndarray, lengths: np.ndarray, ids: list[bytes]) -> None:
        if not len(lengths):
            return
        self.files["tokens"].write(tokens.tobytes())
        ends = (self.num_tokens + np.cumsum(lengths)).astype("<i8")
        self.files["offsets"].write(ends.tobytes())
        self.num_tokens = int(ends[-1])
        self.files["id_hash"].write(hash_ids(ids).astype("<u8").tobytes())
        id_lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        id_ends = (self.num_id_bytes + np.cumsum(id_lengths)).astype("<i8")
        self.files["ids"].write(b"".join(ids))
        self.files["id_offsets"].write(id_ends.tobytes())
        self.num_id_bytes = int(id_ends[-1])

    def close(self, sync: bool) -> None:
        """Close every file, with ``sync`` after flushing and fsyncing it (the first error is raised).

        Without ``sync`` (a failed build, whose folder is deleted) errors of the unwritten buffers
        are not raised: the error that stopped the build is the one to report.
        """
        error: OSError | None = None
        for handle in self.files.values():
            try:
                if sync and error is None:
                    handle.flush()
                    os.fsync(handle.fileno())
                handle.close()  # closes the file even when its flush fails
            except OSError as err:
                error = error or err
        if sync and error is not None:
            raise error


def _build(
    directory: Path, specs: Sequence[SourceSpec], encoder: Encoder, stats: Stats, progress: bool
) -> dict[str, Any]:
    """Write all kept sequences of ``specs`` into ``directory``; returns the meta without fingerprint."""
    writer = _Writer(directory)
    complete = False
    try:
        with tqdm(unit="res", unit_scale=True, desc="preparing", disable=not progress) as bar:
            for spec in specs:
                for batch in iter_batches(spec):
                    tokens, lengths, ids = encoder(batch)
                    writer.append(tokens, lengths, ids)
                    stats.kept += len(lengths)
                    stats.residues += int(tokens.size)
                    stats.residue_counts += np.bincount(tokens, minlength=len(stats.residue_counts))[
                        : len(stats.residue_counts)
                    ]
                    stats.add_lengths(lengths)
                    bar.update(int(tokens.size))
                    bar.set_postfix(sequences=stats.kept, refresh=False)
        complete = True
    finally:
        writer.close(sync=complete)
    if stats.kept == 0:
        raise SourceError(
            f"{', '.join(s.path for s in specs)}: no sequence kept ({stats.read} read, "
            f"{stats.too_short} shorter than min_length {encoder.min_length}, "
            f"{stats.unknown} with unknown residues)"
        )
    values = np.flatnonzero(stats.length_counts)
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_FORMAT_VERSION,
        "alphabet": encoder.residues,
        "counts": {
            "read": stats.read,
            "kept": stats.kept,
            "dropped": {"too_short": stats.too_short, "unknown_residues": stats.unknown},
            "mapped_to_x": dict(sorted(stats.mapped_to_x.items())),
            "residues": stats.residues,
        },
        "id_bytes": writer.num_id_bytes,
        "residue_counts": stats.residue_counts.tolist(),
        "lengths": length_summary(stats.length_counts),
        "length_histogram": {"lengths": values.tolist(), "counts": stats.length_counts[values].tolist()},
    }


# ---------------------------------------------------------------------------------- preparing


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``lock_path`` for the duration of the block."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale(parent: Path, name: str) -> None:
    """Delete temporary/old directories left by an interrupted preparation (we hold the lock)."""
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for stale in parent.glob(pattern):
            logger.info("removing leftover of an interrupted preparation: %s", stale)
            shutil.rmtree(stale)


def prepare_cache(
    specs: Sequence[SourceSpec],
    out_dir: str | os.PathLike[str],
    alphabet: Alphabet,
    unknown_residues: str = "error",
    min_length: int = 1,
    force: bool = False,
    progress: bool = True,
) -> PreparedCache:
    """Prepare ``specs`` (read in order, concatenated) into the cache directory ``out_dir``.

    Reuses an existing cache with the same fingerprint unless ``force``; otherwise builds a new
    one next to it and swaps it in only once complete. Refuses to replace a non-empty directory
    that is not a prepared cache.
    """
    if not specs:
        raise ValueError("prepare_cache needs at least one source")
    if unknown_residues not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown_residues must be one of {UNKNOWN_POLICIES}, got {unknown_residues!r}")
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    out = Path(out_dir).absolute()
    inputs = fingerprint_inputs(specs, alphabet, unknown_residues, min_length)
    digest = fingerprint(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent / f".{out.name}.lock"):
        _remove_stale(out.parent, out.name)
        if out.exists():
            existing = read_meta(out)
            if existing is None and (not out.is_dir() or any(out.iterdir())):
                raise CacheError(f"{out}: exists and is not a prepared cache; refusing to overwrite it")
            if existing is not None and existing.get("fingerprint") == digest and not force:
                logger.info("reusing prepared cache %s", out)
                return PreparedCache.open(out)
        stats = Stats(alphabet.num_residues)
        encoder = Encoder(alphabet, unknown_residues, min_length, stats)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        intact = f"the previous cache {out} is intact" if out.exists() else f"there was no cache at {out}"
        with atomic_folder(out, tmp, what="prepared cache", intact=intact):
            meta = _build(tmp, specs, encoder, stats, progress)
            meta["fingerprint"] = digest
            meta["fingerprint_inputs"] = inputs
            write_file(tmp / "meta.json", lambda handle: handle.write(json.dumps(meta, indent=1).encode()))
    logger.info("prepared %d sequences (%d residues) into %s", stats.kept, stats.residues, out)
    return PreparedCache.open(out)
