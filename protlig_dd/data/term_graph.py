"""The GO term graph: each term's parents, its ancestors, and the ontology it belongs to.

A term graph table (``read_term_parents``) gives each term its ancestors (``ancestor_closure``), so
label sets can be closed upwards (``add_ancestors``) and terms assigned to an ontology
(``term_namespaces_from_graph``, from the ``GO_ROOTS`` they descend from). Vocabularies and caches are
built elsewhere (label_pipeline.py). Errors are one-line ``LabelSourceError``s.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence

from protlig_dd.data.label_io import LabelSourceError, _find_columns, _open_table, _OrderedLabels

logger = logging.getLogger(__name__)

GO_ROOTS = {"GO:0003674": "molecular_function", "GO:0008150": "biological_process", "GO:0005575": "cellular_component"}


def read_term_parents(path: str, relations: Sequence[str] = ("is_a", "part_of")) -> dict[str, list[str]]:
    """A term graph table like the shared go_graph.tsv.gz (columns child, parent, distance, relation;
    relations include is_a, part_of, regulates, positively_regulates, negatively_regulates): child ->
    direct parents over the given relations (empty = all), unique, first-seen order.

    A file without a relation column: all edges. With a distance column only rows of distance 1 (direct
    edges) are kept. The three GO roots have no parents: when they appear only in the child column,
    the file's columns are labelled the wrong way round (the shared go_graph.tsv.gz is: its row
    "GO:0005575 GO:0016020 is_a" says membrane is_a cellular_component), so the columns are read
    swapped and a warning is logged. Bad header, or no edge of the given relations -> LabelSourceError.
    """
    wanted = set(relations)
    edges: list[tuple[str, str, str]] = []  # (child, parent, relation) of the direct edges, as labelled
    with _open_table(path, quoted_tsv=False) as (header, rows):
        columns = _find_columns(header)
        if "child" not in columns or "parent" not in columns:
            raise LabelSourceError(
                f"{path}: unrecognised term graph header {header}; expected columns child, parent "
                "(and optionally distance, relation)"
            )
        child_col, parent_col = columns["child"], columns["parent"]
        relation_col, distance_col = columns.get("relation"), columns.get("distance")
        for line, _, row in rows:
            if distance_col is not None and row[distance_col].strip() != "1":
                continue
            child, parent = row[child_col].strip(), row[parent_col].strip()
            if not child or not parent:
                raise LabelSourceError(f"{path} line {line}: empty child or parent term")
            edges.append((child, parent, row[relation_col].strip() if relation_col is not None else ""))
    # The orientation is judged on all edges, so that a filter without root edges cannot hide a swap.
    swapped = _columns_swapped(path, edges)
    parents = _OrderedLabels()
    for child, parent, relation in edges:
        if wanted and relation_col is not None and relation not in wanted:
            continue
        if swapped:
            child, parent = parent, child
        parents.add(child, [parent])
    result = parents.result()
    if not result and edges:
        present = list(dict.fromkeys(relation for _, _, relation in edges))
        raise LabelSourceError(
            f"{path}: no direct edge of the relations {sorted(wanted)}; relations in the file: {present}"
        )
    return result


def _columns_swapped(path: str, edges: list[tuple[str, str, str]]) -> bool:
    """Whether the child/parent columns are labelled the wrong way round: GO roots in the child column only."""
    roots_as_child = sorted({child for child, _, _ in edges if child in GO_ROOTS})
    if not roots_as_child:
        return False
    roots_as_parent = sorted({parent for _, parent, _ in edges if parent in GO_ROOTS})
    if roots_as_parent:
        raise LabelSourceError(
            f"{path}: the GO roots {roots_as_child} appear as children and {roots_as_parent} as parents; "
            "the child/parent columns are inconsistent"
        )
    example = next((child, parent) for child, parent, _ in edges if child in GO_ROOTS)
    logger.warning(
        "%s: the GO root %s appears in the 'child' column (row %s -> %s), so the columns hold parent, child "
        "despite the header; reading them swapped",
        path,
        example[0],
        *example,
    )
    return True


def ancestor_closure(parents: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """term -> all its ancestors (transitive, excluding itself) for every term of the graph (roots map to
    an empty set), computed once with memoisation by an iterative depth-first walk (no recursion limit).
    A cycle -> LabelSourceError naming the terms on it."""
    closure: dict[str, frozenset[str]] = {}
    terms = dict.fromkeys(itertools.chain(parents, (p for plist in parents.values() for p in plist)))
    for start in terms:
        if start in closure:
            continue
        # The walk's current path: (term, iterator over its parents); on_path gives each term's depth.
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(parents.get(start, ())))]
        on_path = {start: 0}
        while stack:
            term, pending = stack[-1]
            for parent in pending:
                if parent in closure:
                    continue
                if parent in on_path:
                    cycle = [t for t, _ in stack[on_path[parent] :]] + [parent]
                    raise LabelSourceError(f"the term graph has a cycle: {' -> '.join(cycle)}")
                on_path[parent] = len(stack)
                stack.append((parent, iter(parents.get(parent, ()))))
                break
            else:  # every parent is closed: close this term
                stack.pop()
                del on_path[term]
                ancestors: set[str] = set()
                for parent in parents.get(term, ()):
                    ancestors.add(parent)
                    ancestors |= closure[parent]
                closure[term] = frozenset(ancestors)
    return closure


def add_ancestors(labels: Mapping[str, Sequence[str]], ancestors: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    """Each label set plus the ancestors of its terms: the original labels first (deduplicated, in
    order), then the ancestors not among them, sorted. Labels unknown to ``ancestors`` add nothing."""
    result: dict[str, list[str]] = {}
    # Many sequences share a label set (51k distinct sets among the 142k of sp50_go): close each once.
    closed: dict[tuple[str, ...], list[str]] = {}
    for rid, terms in labels.items():
        own = tuple(dict.fromkeys(terms))
        extra = closed.get(own)
        if extra is None:
            union: set[str] = set()
            for term in own:
                term_ancestors = ancestors.get(term)
                if term_ancestors:
                    union.update(term_ancestors)
            union.difference_update(own)
            extra = closed[own] = sorted(union)
        result[rid] = [*own, *extra]
    return result


def term_namespaces_from_graph(ancestors: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """term -> ontology name (molecular_function, ...), from the GO root it descends from (a root maps to
    its own name). Terms under no GO root are absent. A term under several roots (possible only in a
    closure over cross-ontology relations such as regulates) -> LabelSourceError: build the closure used
    here from is_a and part_of edges."""
    namespaces: dict[str, str] = {}
    for term, term_ancestors in ancestors.items():
        roots = [root for root in GO_ROOTS if root == term or root in term_ancestors]
        if len(roots) > 1:
            raise LabelSourceError(
                f"term {term} descends from several GO roots {roots}; compute its namespace from a closure "
                "over is_a and part_of edges only"
            )
        if roots:
            namespaces[term] = GO_ROOTS[roots[0]]
    return namespaces
