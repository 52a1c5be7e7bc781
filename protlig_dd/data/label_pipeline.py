"""From a LabelsConfig and the prepared caches to a label vocabulary and per-cache label sets.

The labels of every cached sequence are looked up by its id in the label source (a FASTA header
field, a column of the source, or a table keyed by id: label_sources.py, label_tables.py and
term_graph.py read them), optionally
extended by each term's ancestors. The vocabulary is built from the training split only, unless
one is given (a resumed run or a fine-tuned model keeps the vocabulary of its checkpoint). The
result is stored beside the token caches in ``<cache_root>/labels-<key>/`` (key: the label
options, the label files' sizes and mtimes, the caches and the training split), written aside and
renamed, so a second run reuses it and a crash never leaves a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protlig_dd.config import LabelsConfig
from protlig_dd.data.cache import PreparedCache
from protlig_dd.data.label_io import _open_table
from protlig_dd.data.label_sources import (
    LabelSource,
    LabelSourceError,
    parse_label_source,
    read_column_labels,
    read_header_labels,
)
from protlig_dd.data.label_tables import read_label_table
from protlig_dd.data.labels import LabelSets, LabelVocabulary
from protlig_dd.data.sources import SourceSpec
from protlig_dd.data.term_graph import add_ancestors, ancestor_closure, read_term_parents, term_namespaces_from_graph
from protlig_dd.durable_io import atomic_folder, write_file

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
# labels.source / labels.term_graph "embedded": the GO data shipped for the embedded Swiss-Prot set.
EMBEDDED_LABEL_TABLE = EMBEDDED_DIR / "swissprot50_go.tsv.gz"
EMBEDDED_TERM_GRAPH = EMBEDDED_DIR / "go_graph.tsv.gz"
EMBEDDED_TERM_NAMES = EMBEDDED_DIR / "go_term_names.tsv.gz"
_STORE_VERSION = 1


@dataclass
class PreparedLabels:
    """The vocabulary and, per role (train/validation/test), the label sets aligned with its cache."""

    vocabulary: LabelVocabulary
    sets: dict[str, LabelSets]
    path: Path | None = None  # where they are stored


def resolve_label_path(text: str, what: str) -> str:
    """``embedded`` -> the shipped file; any other path must exist (LabelSourceError naming it)."""
    if text == "embedded":
        return str({"labels.source": EMBEDDED_LABEL_TABLE, "labels.term_graph": EMBEDDED_TERM_GRAPH}[what])
    if not Path(text).exists():
        raise LabelSourceError(f"{what}: {text}: no such file")
    return text


def term_names(path: Path = EMBEDDED_TERM_NAMES) -> dict[str, str]:
    """GO id -> name from a ``go_id<TAB>name`` table (the shipped one by default)."""
    with _open_table(str(path), delimiter="\t", quoted_tsv=False) as (_, rows):
        return {row[0]: row[1] for _, _, row in rows}


def _parsed_source(text: str) -> LabelSource:
    """The ``labels.source`` string parsed, ``embedded`` standing for the shipped GO table."""
    return parse_label_source(text if text != "embedded" else str(EMBEDDED_LABEL_TABLE))


def _fingerprint_file(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def term_ancestors(cfg: LabelsConfig) -> dict[str, frozenset[str]]:
    """Every term's ancestors from ``labels.term_graph`` (is_a and part_of edges)."""
    return ancestor_closure(read_term_parents(resolve_label_path(cfg.term_graph, "labels.term_graph")))


def read_labels(
    cfg: LabelsConfig,
    source_text: str,
    specs: Sequence[SourceSpec],
    ancestors: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, list[str]]:
    """Sequence id -> labels from ``source_text`` (a ``labels.source`` string) over the sequence
    files ``specs``, processed as ``cfg`` says (ontologies, ancestors): what training saw, and what
    scoring a model's inputs under their own labels must see. ``ancestors``: the closure of
    ``labels.term_graph`` when the caller has it already (read from the graph otherwise)."""
    source = _parsed_source(source_text)
    if ancestors is None and cfg.term_graph:
        ancestors = term_ancestors(cfg)
    labels: dict[str, list[str]] = {}
    if source.kind == "table":
        namespaces = term_namespaces_from_graph(ancestors) if ancestors is not None and cfg.ontologies else None
        labels = read_label_table(resolve_label_path(source.name, "labels.source"), cfg.ontologies, namespaces)
    else:
        for spec in specs:
            if source.kind == "header":
                labels.update(read_header_labels(spec.path, source.name))
            else:
                labels.update(read_column_labels(spec, source.name))
    if cfg.add_ancestors:
        assert ancestors is not None  # LabelsConfig requires term_graph with add_ancestors
        labels = add_ancestors(labels, ancestors)
    return labels


def _label_maps(
    cfg: LabelsConfig,
    role_specs: Mapping[str, Sequence[SourceSpec]],
    ancestors: Mapping[str, frozenset[str]] | None,
) -> dict[str, dict[str, list[str]]]:
    """role -> (sequence id -> labels); a label table is read once for every role."""
    if _parsed_source(cfg.source).kind == "table":
        table = read_labels(cfg, cfg.source, [], ancestors)
        return {role: table for role in role_specs}
    return {role: read_labels(cfg, cfg.source, specs, ancestors) for role, specs in role_specs.items()}


def _aligned(cache: PreparedCache, labels: Mapping[str, Sequence[str]]) -> list[Sequence[str]]:
    """The labels of every cached sequence, in cache order ([] for an id without labels)."""
    empty: Sequence[str] = ()
    return [labels.get(cache.sequence_id(i), empty) for i in range(len(cache))]


def _describe_source(cfg: LabelsConfig) -> str:
    return cfg.source if cfg.source != "embedded" else f"embedded ({EMBEDDED_LABEL_TABLE.name})"


def prepare_labels(
    cfg: LabelsConfig,
    caches: Mapping[str, PreparedCache],
    role_specs: Mapping[str, Sequence[SourceSpec]],
    train_indices: np.ndarray,
    cache_root: Path,
    vocabulary: LabelVocabulary | None = None,
) -> PreparedLabels:
    """Label sets for every cache and the vocabulary (built from ``train_indices`` of the train cache
    unless given). LabelSourceError when the label source matches no sequence of the training data."""
    files = {}
    source = _parsed_source(cfg.source)
    if source.kind == "table":
        files["source"] = _fingerprint_file(resolve_label_path(source.name, "labels.source"))
    if cfg.term_graph:
        files["term_graph"] = _fingerprint_file(resolve_label_path(cfg.term_graph, "labels.term_graph"))
    identity = {
        "version": _STORE_VERSION,
        "labels": {k: v for k, v in vars(cfg).items() if k not in ("p_uncond", "random_subsets")},
        "files": files,
        "caches": {role: cache.fingerprint for role, cache in sorted(caches.items())},
        "train": hashlib.sha256(np.asarray(train_indices, dtype=np.int64).tobytes()).hexdigest(),
        "vocabulary": None if vocabulary is None else vocabulary.to_dict(),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    final = Path(cache_root) / f"labels-{key}"
    if (final / "meta.json").is_file():
        return load_labels(final, list(caches))

    ancestors = term_ancestors(cfg) if cfg.term_graph else None  # read once: labels and vocabulary
    maps = _label_maps(cfg, role_specs, ancestors)
    aligned = {role: _aligned(cache, maps[role]) for role, cache in caches.items()}
    train_labels = [aligned["train"][int(i)] for i in np.asarray(train_indices, dtype=np.int64)]
    labelled = sum(1 for labels in train_labels if labels)
    if labelled == 0:
        where = source.name if source.kind != "column" else f"column {source.name!r}"
        raise LabelSourceError(
            f"labels.source {_describe_source(cfg)}: no id in {where} matches a training sequence "
            f"({len(train_labels)} training ids, e.g. {caches['train'].sequence_id(0)!r})"
        )
    if vocabulary is None:
        names = term_names() if EMBEDDED_TERM_NAMES.is_file() else None
        vocabulary = LabelVocabulary.build(
            train_labels, min_count=cfg.min_count, max_labels=cfg.max_labels, source=_describe_source(cfg), names=names
        )
        if len(vocabulary) == 0:
            raise LabelSourceError(
                f"labels.source {_describe_source(cfg)}: no label occurs in {cfg.min_count} or more training "
                f"sequences (labels.min_count); {labelled} training sequences carry labels"
            )
        if cfg.add_ancestors:
            assert ancestors is not None  # LabelsConfig requires term_graph with add_ancestors
            vocabulary = vocabulary.with_ancestors(ancestors)
    sets = {
        role: LabelSets.from_lists([vocabulary.encode(labels) for labels in rows]) for role, rows in aligned.items()
    }
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    tmp = Path(cache_root) / f".labels-{key}.tmp-{os.getpid()}"
    with atomic_folder(final, tmp, what="label sets", intact="no earlier label sets were changed") as folder:
        for role, label_sets in sets.items():
            write_file(folder / f"{role}.offsets.npy", lambda h, a=label_sets.offsets: np.save(h, a))
            write_file(folder / f"{role}.values.npy", lambda h, a=label_sets.values: np.save(h, a))
        meta = {"identity": identity, "vocabulary": vocabulary.to_dict(), "roles": sorted(sets)}
        write_file(folder / "meta.json", lambda h: h.write(json.dumps(meta, indent=1).encode()))
    return PreparedLabels(vocabulary, sets, final)


def load_labels(path: Path, roles: Sequence[str]) -> PreparedLabels:
    """Label sets and vocabulary stored by ``prepare_labels``."""
    meta = json.loads((path / "meta.json").read_text())
    sets = {
        role: LabelSets(np.load(path / f"{role}.offsets.npy"), np.load(path / f"{role}.values.npy")) for role in roles
    }
    return PreparedLabels(LabelVocabulary.from_dict(meta["vocabulary"]), sets, path)
