"""From a DataConfig to prepared train/validation/test SequenceSets plus the training statistics.

Which data:
  * ``data.source`` set: that source is prepared into one cache. Validation and test come from
    ``validation_source``/``test_source`` when given (each prepared into its own cache, read with
    the same format and columns as the source, ``format: auto`` detecting each file), otherwise
    from a hash split of the source ids (splits.py) with ``validation_fraction``/``test_fraction``.
    Ids present in an explicit validation or test file are removed from training (counted).
  * ``data.source`` empty: the embedded real data shipped in ``embedded/``. Training is
    ``data.embedded_train``: by default 35,809 Swiss-Prot 50% cluster representatives (diverse,
    none a homologue of a validation sequence), or the older 5,001-sequence UniRef50 sample from 17
    taxa; validation is the 996 random UniRef50 sequences of the two CSV files, an explicit
    validation set, so no hash split is made for it (``validation_fraction`` is unused).
    ``validation_source``, ``test_source`` and ``test_fraction`` apply as for any source. See
    embedded/PROVENANCE.md.

Caches live in ``cache_root`` under a name derived from the sources and the preparation options,
so changing min_length or the alphabet prepares a new cache instead of rebuilding the old one back
and forth; a changed file (size/mtime) rebuilds its cache in place (cache.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protlig_dd.config import DataConfig, LabelsConfig
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.cache import CacheError, PreparedCache, prepare_cache, read_meta
from protlig_dd.data.label_pipeline import prepare_labels
from protlig_dd.data.labels import LabelVocabulary
from protlig_dd.data.readers import SourceSpec
from protlig_dd.data.sequence_set import SequenceSet
from protlig_dd.data.splits import assign_splits, exclude_ids

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
# data.embedded_train -> the shipped training FASTA (embedded/PROVENANCE.md says where each comes from).
EMBEDDED_TRAIN_FASTAS = {
    "swissprot50": EMBEDDED_DIR / "swissprot50_train.fasta.gz",
    "uniref50_17taxa": EMBEDDED_DIR / "uniref50_train_filt.fasta.gz",
}
EMBEDDED_VALIDATION_CSVS = (EMBEDDED_DIR / "x000.csv", EMBEDDED_DIR / "x001.csv")
# Amino-acid counts of EvoDiff's UniRef50 test split (no sequences): the evaluation's reference.
EMBEDDED_COMPOSITION_REFERENCE = EMBEDDED_DIR / "uniref50_aa_ref_test.csv"
EMBEDDED_TRAIN_COUNTS = {"swissprot50": 35809, "uniref50_17taxa": 5001}
EMBEDDED_VALIDATION_COUNT = 996
# Tokens gathered per step when counting residues of a split (bounds the index array to 32 MB).
_COUNT_BLOCK_TOKENS = 1 << 22


def embedded_train_specs(name: str = "swissprot50") -> list[SourceSpec]:
    """A shipped training set (``data.embedded_train``): by default 35,809 Swiss-Prot 50% representatives."""
    if name not in EMBEDDED_TRAIN_FASTAS:
        raise ValueError(f"data.embedded_train must be one of {sorted(EMBEDDED_TRAIN_FASTAS)}, got {name!r}")
    return [SourceSpec(str(EMBEDDED_TRAIN_FASTAS[name]), format="fasta")]


def embedded_validation_specs() -> list[SourceSpec]:
    """The shipped validation sample: 996 random UniRef50 sequences in two CSV files."""
    return [
        SourceSpec(str(path), format="csv", sequence_column="sequence", id_column="record_name")
        for path in EMBEDDED_VALIDATION_CSVS
    ]


def source_spec(data_cfg: DataConfig, path: str) -> SourceSpec:
    """A SourceSpec for ``path`` with the format and columns of ``data_cfg``."""
    return SourceSpec(
        path=path,
        format=data_cfg.format,
        sequence_column=data_cfg.sequence_column,
        id_column=data_cfg.id_column,
        hf_split=data_cfg.hf_split,
        streaming=data_cfg.streaming,
    )


def resolve_cache_root(data_cfg: DataConfig, work_dir: str | os.PathLike[str]) -> Path:
    """``data.cache_dir`` when set, else ``<work_dir>/data_cache``."""
    return Path(data_cfg.cache_dir) if data_cfg.cache_dir else Path(work_dir) / "data_cache"


@dataclass
class DataSummary:
    """Counts and training statistics (stored in checkpoints; the sampler draws lengths from them)."""

    num_train: int
    num_validation: int
    num_test: int
    train_residues: int
    residue_frequencies: np.ndarray  # (N,) float64 unigram frequencies of the training residues
    length_histogram: dict[str, list[int]]  # training lengths: {"lengths": [...], "counts": [...]}
    split: str  # "embedded", "hash" or "explicit" (validation), describing where validation came from
    sources: dict[str, list[str]]  # role -> source paths/names
    excluded_from_train: int = 0  # training ids also present in an explicit validation/test file
    caches: dict[str, str] = field(default_factory=dict)  # role -> cache directory
    # The label vocabulary (LabelVocabulary.to_dict) of labelled data, else None; the model's label ids.
    labels: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, ints, floats, strings) for checkpoints and JSON."""
        return {
            "num_train": self.num_train,
            "num_validation": self.num_validation,
            "num_test": self.num_test,
            "train_residues": self.train_residues,
            "residue_frequencies": [float(x) for x in self.residue_frequencies],
            "length_histogram": {k: list(v) for k, v in self.length_histogram.items()},
            "split": self.split,
            "sources": {k: list(v) for k, v in self.sources.items()},
            "excluded_from_train": self.excluded_from_train,
            "caches": dict(self.caches),
            "labels": self.labels,
        }


@dataclass
class DataSplits:
    """The prepared splits; validation/test are None when the configuration gives none."""

    train: SequenceSet
    validation: SequenceSet | None
    test: SequenceSet | None
    summary: DataSummary


def _cache_dir(cache_root: Path, role: str, specs: list[SourceSpec], options: dict[str, Any]) -> Path:
    """A readable, collision-free cache directory name for these sources and options."""
    identity = [
        {**spec.describe(), "path": str(Path(spec.path).resolve()) if Path(spec.path).exists() else spec.path}
        for spec in specs
    ]
    key = hashlib.sha256(json.dumps({"sources": identity, **options}, sort_keys=True).encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(specs[0].path.rstrip("/")).name)[:48] or "source"
    return cache_root / f"{role}-{stem}-{key[:12]}"


def residue_counts(sequences: SequenceSet, num_residues: int) -> np.ndarray:
    """(num_residues,) int64 count of each residue token over ``sequences`` (vectorised by blocks)."""
    counts = np.zeros(num_residues, dtype=np.int64)
    starts, lengths = sequences.starts, sequences.lengths
    ends = np.cumsum(lengths)  # (n,) token end of each sequence within the selection
    begin = 0
    while begin < len(lengths):
        base = int(ends[begin - 1]) if begin else 0
        stop = max(begin + 1, int(np.searchsorted(ends, base + _COUNT_BLOCK_TOKENS, side="right")))
        block_lengths = lengths[begin:stop]
        total = int(block_lengths.sum())
        # Token positions of the block: each sequence's start repeated over its length, plus 0..len-1.
        offsets_in_block = np.concatenate([[0], np.cumsum(block_lengths)[:-1]])
        index = np.repeat(starts[begin:stop] - offsets_in_block, block_lengths) + np.arange(total)
        counts += np.bincount(np.asarray(sequences.store.tokens[index]), minlength=num_residues)[:num_residues]
        begin = stop
    return counts


def _split_residue_counts(cache: PreparedCache, train: SequenceSet, num_residues: int) -> np.ndarray:
    """Residue counts of the training split: the cache total minus the (smaller) rest when cheaper."""
    if len(train) * 2 < len(cache):
        return residue_counts(train, num_residues)
    rest = np.ones(len(cache), dtype=bool)
    rest[train.indices] = False
    total = cache.residue_counts[:num_residues]
    return total - residue_counts(SequenceSet(cache, np.flatnonzero(rest)), num_residues)


def length_histogram(lengths: np.ndarray) -> dict[str, list[int]]:
    """Plain-list histogram {"lengths": distinct lengths ascending, "counts": how many of each}."""
    counts = np.bincount(np.asarray(lengths, dtype=np.int64))
    values = np.flatnonzero(counts)
    return {"lengths": values.tolist(), "counts": counts[values].tolist()}


def open_prepared_source(path: Path, alphabet: Alphabet) -> PreparedCache:
    """Open a cache directory given as a data source, checking it was made with ``alphabet``."""
    cache = PreparedCache.open(path)
    residues = cache.meta.get("alphabet")
    if residues != alphabet.residues:
        raise CacheError(f"{path}: prepared with alphabet {residues!r}, but the model uses {alphabet.residues!r}")
    return cache


def prepare_splits(
    data_cfg: DataConfig,
    alphabet: Alphabet,
    cache_root: str | os.PathLike[str],
    force: bool = False,
    progress: bool = True,
    labels_cfg: LabelsConfig | None = None,
    label_vocabulary: LabelVocabulary | None = None,
) -> DataSplits:
    """Prepare (or reuse) the caches for ``data_cfg`` and return the train/validation/test splits.

    With ``labels_cfg`` enabled, every split carries its label sets (label_pipeline.py) and the
    summary the vocabulary: ``label_vocabulary`` when given (resume, fine-tuning), else one built
    from the training split."""
    cache_root = Path(cache_root)
    options = {
        "alphabet": alphabet.residues,
        "unknown_residues": data_cfg.unknown_residues,
        "min_length": data_cfg.min_length,
    }

    def prepare(role: str, specs: list[SourceSpec]) -> PreparedCache:
        if len(specs) == 1 and read_meta(specs[0].path) is not None:
            # The source is a cache made by `python -m protlig_dd.data.prepare`: use it as it is.
            return open_prepared_source(Path(specs[0].path), alphabet)
        return prepare_cache(
            specs,
            _cache_dir(cache_root, role, specs, options),
            alphabet,
            unknown_residues=data_cfg.unknown_residues,
            min_length=data_cfg.min_length,
            force=force,
            progress=progress,
        )

    embedded = not data_cfg.source
    roles: dict[str, list[SourceSpec]] = {
        "train": embedded_train_specs(data_cfg.embedded_train) if embedded else [source_spec(data_cfg, data_cfg.source)]
    }
    if data_cfg.validation_source:
        roles["validation"] = [source_spec(data_cfg, data_cfg.validation_source)]
    elif embedded and data_cfg.embedded_validation == "uniref50_996":
        roles["validation"] = embedded_validation_specs()
    if data_cfg.test_source:
        roles["test"] = [source_spec(data_cfg, data_cfg.test_source)]
    caches = {role: prepare(role, specs) for role, specs in roles.items()}

    source = caches["train"]
    split = assign_splits(
        source.id_hash,
        validation_fraction=0.0 if "validation" in caches else data_cfg.validation_fraction,
        test_fraction=0.0 if "test" in caches else data_cfg.test_fraction,
    )
    train_indices = split.train
    for role in ("validation", "test"):
        if role in caches:
            train_indices = exclude_ids(train_indices, source.id_hash, np.asarray(caches[role].id_hash))
    excluded = len(split.train) - len(train_indices)
    if len(train_indices) == 0:
        raise ValueError(f"data: the training split of {data_cfg.source or 'the embedded sample'} is empty")

    prepared = None
    if labels_cfg is not None and labels_cfg.enabled:
        prepared = prepare_labels(labels_cfg, caches, roles, train_indices, cache_root, label_vocabulary)
    label_sets = prepared.sets if prepared is not None else {}

    def held_out(role: str, indices: np.ndarray) -> SequenceSet | None:
        if role in caches:
            return SequenceSet.whole(caches[role], label_sets.get(role))
        return SequenceSet(source, indices, label_sets.get("train")) if len(indices) else None

    train = SequenceSet(source, train_indices, label_sets.get("train"))
    validation = held_out("validation", split.validation)
    test = held_out("test", split.test)
    counts = _split_residue_counts(source, train, alphabet.num_residues)
    summary = DataSummary(
        num_train=len(train),
        num_validation=len(validation) if validation is not None else 0,
        num_test=len(test) if test is not None else 0,
        train_residues=train.num_residues,
        residue_frequencies=counts / max(int(counts.sum()), 1),
        length_histogram=length_histogram(train.lengths),
        split="embedded"
        if "validation" in caches and embedded and not data_cfg.validation_source
        else ("explicit" if data_cfg.validation_source else "hash"),
        sources={role: [spec.path for spec in specs] for role, specs in roles.items()},
        excluded_from_train=excluded,
        caches={role: str(cache.path) for role, cache in caches.items()},
        labels=None if prepared is None else prepared.vocabulary.to_dict(),
    )
    return DataSplits(train=train, validation=validation, test=test, summary=summary)
