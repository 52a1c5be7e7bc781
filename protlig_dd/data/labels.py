"""Function labels of sequences: the label vocabulary and the label sets aligned with a token store.

A sequence may carry a set of string labels (Gene Ontology terms, a taxonomy id, ...). The
model sees labels as indices into a ``LabelVocabulary``: index 0 is the empty slot (padding of a
label set), indices 1..V are the labels, in descending training count. The vocabulary is built
from the training split only (labels with at least ``min_count`` training occurrences, at most
``max_labels`` of them) and travels with the cache and every checkpoint, so a resumed run or a
loaded model keeps the indices it was trained with. An empty label set means "no label": the
model then uses its learned no-label entry, the same one classifier-free guidance uses for the
unconditional branch.

``LabelSets`` holds the label indices of every sequence of a store as CSR arrays (offsets,
values), addressed by store index like the tokens.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Label id of an empty slot in a label set (padding); real labels are 1..V.
EMPTY_LABEL = 0


class UnknownLabelError(ValueError):
    """A label asked for at sampling or scoring time is not in the model's vocabulary."""


@dataclass(frozen=True)
class LabelVocabulary:
    """The labels a model knows, most frequent first; label ``terms[i]`` has id ``i + 1``."""

    terms: tuple[str, ...]
    counts: tuple[int, ...]  # training occurrences of each term
    source: str = ""  # where the labels came from (config ``labels.source``), for reports
    names: Mapping[str, str] | None = None  # optional readable names (GO term names), for headers and errors
    # Training added every term's ancestors (labels.add_ancestors): term -> its ancestors in the
    # vocabulary, so that a request for a term is closed upwards the same way (``closed``). None: not added.
    ancestors: Mapping[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if len(self.terms) != len(self.counts):
            raise ValueError(f"label vocabulary: {len(self.terms)} terms but {len(self.counts)} counts")
        if len(set(self.terms)) != len(self.terms):
            raise ValueError("label vocabulary: duplicate terms")
        object.__setattr__(self, "_index", {term: i + 1 for i, term in enumerate(self.terms)})

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def build(
        cls,
        label_sets: Iterable[Sequence[str]],
        *,
        min_count: int,
        max_labels: int,
        source: str = "",
        names: Mapping[str, str] | None = None,
    ) -> LabelVocabulary:
        """The labels seen at least ``min_count`` times in ``label_sets`` (the training split), the
        ``max_labels`` most frequent kept; ties broken by the label text so the result is deterministic."""
        counts: Counter[str] = Counter()
        for labels in label_sets:
            counts.update(set(labels))
        kept = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        kept = kept[:max_labels]
        used_names = {t: names[t] for t, _ in kept if t in names} if names else None
        return cls(tuple(t for t, _ in kept), tuple(c for _, c in kept), source, used_names)

    def encode(self, labels: Iterable[str]) -> list[int]:
        """Ids of the labels in the vocabulary, first-seen order; labels outside it are left out
        (a rare term of a training sequence is simply not a condition)."""
        index = self._index  # type: ignore[attr-defined]
        seen: list[int] = []
        for label in labels:
            i = index.get(label)
            if i is not None and i not in seen:
                seen.append(i)
        return seen

    def lookup(self, label: str) -> int:
        """The id of ``label``; UnknownLabelError naming it and the closest known labels otherwise."""
        index = self._index  # type: ignore[attr-defined]
        if label in index:
            return index[label]
        close = difflib.get_close_matches(label, self.terms, n=5, cutoff=0.6)
        if self.names:
            by_name = {name.lower(): term for term, name in self.names.items()}
            close += [by_name[n] for n in difflib.get_close_matches(label.lower(), list(by_name), n=3, cutoff=0.6)]
        if close:
            hint = f"; close ones: {', '.join(self.describe(t) for t in dict.fromkeys(close))}"
        elif len(self) <= 10:
            hint = f"; known labels: {', '.join(self.describe(t) for t in self.terms)}"
        else:
            hint = f"; the most frequent: {', '.join(self.describe(t) for t in self.terms[:5])}"
        raise UnknownLabelError(f"unknown label {label!r}: not among the model's {len(self)} labels{hint}")

    def closed(self, labels: Sequence[str]) -> list[str]:
        """``labels`` plus, when training added ancestors, each one's ancestors in the vocabulary:
        the label sets the model was trained on are closed upwards, so a request must be too."""
        out = list(dict.fromkeys(labels))
        if self.ancestors:
            for label in labels:
                out += [a for a in self.ancestors.get(label, ()) if a not in out]
        return out

    def with_ancestors(self, ancestors: Mapping[str, Iterable[str]]) -> LabelVocabulary:
        """This vocabulary recording, for each term, its ancestors (from a term graph's closure) that
        are in the vocabulary too."""
        known = set(self.terms)
        table = {t: tuple(sorted(a for a in ancestors.get(t, ()) if a in known)) for t in self.terms}
        return LabelVocabulary(self.terms, self.counts, self.source, self.names, table)

    def describe(self, term: str) -> str:
        """``term`` with its readable name when known, e.g. ``GO:0016021 (integral component of membrane)``."""
        name = self.names.get(term) if self.names else None
        return f"{term} ({name})" if name else term

    def to_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints, cache metadata and exported config.json."""
        return {
            "terms": list(self.terms),
            "counts": list(self.counts),
            "source": self.source,
            "names": dict(self.names) if self.names else {},
            "ancestors": {t: list(a) for t, a in self.ancestors.items()} if self.ancestors is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelVocabulary:
        return cls(
            tuple(str(t) for t in data["terms"]),
            tuple(int(c) for c in data["counts"]),
            str(data.get("source", "")),
            dict(data.get("names") or {}) or None,
            None if data.get("ancestors") is None else {t: tuple(a) for t, a in data["ancestors"].items()},
        )


@dataclass
class LabelSets:
    """Label ids of every sequence of a store, as CSR arrays: sequence i has ``values[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # (n + 1,) int64
    values: np.ndarray  # (M,) int32 label ids in 1..V

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.int32)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0:
            raise ValueError("LabelSets.offsets must be a 1-D array starting at 0")
        if int(self.offsets[-1]) != len(self.values):
            raise ValueError(
                f"LabelSets: offsets end at {int(self.offsets[-1])} but there are {len(self.values)} values"
            )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_lists(cls, sets: Sequence[Sequence[int]]) -> LabelSets:
        sizes = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
        offsets = np.zeros(len(sets) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        values = np.fromiter((i for s in sets for i in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(offsets, values)

    def ids(self, index: int) -> np.ndarray:
        """Label ids of store sequence ``index`` (possibly empty)."""
        return self.values[self.offsets[index] : self.offsets[index + 1]]


def label_grid(sets: Sequence[Sequence[Sequence[int]]], num_rows: int) -> np.ndarray:
    """Per-segment label ids of a batch as a dense (rows, S + 1, K) int32 grid.

    ``sets[r][s - 1]`` are the label ids of segment s of row r; slot [r, 0] belongs to padding and
    stays empty, like every slot beyond a set's size (EMPTY_LABEL). S is the most segments of a row,
    K the largest set (at least 1, so an all-unlabelled batch still has a grid).
    """
    if len(sets) != num_rows:
        raise ValueError(f"label_grid: {len(sets)} rows of label sets for {num_rows} rows")
    max_segments = max((len(row) for row in sets), default=0)
    width = max((len(labels) for row in sets for labels in row), default=0)
    grid = np.full((num_rows, max_segments + 1, max(width, 1)), EMPTY_LABEL, dtype=np.int32)
    for r, row in enumerate(sets):
        for s, labels in enumerate(row, start=1):
            grid[r, s, : len(labels)] = labels
    return grid
