"""Build the GO labels shipped with the embedded Swiss-Prot training set (protlig_dd/data/embedded/).

Reads the shared Swiss-Prot 50% data (../shared/data/swissprot50_2014, see its PROVENANCE.md) and
writes, for the 35,809 accessions of ``swissprot50_train.fasta.gz``:
  swissprot50_go.tsv.gz    accession, ontology, go_terms: the rows of sp50_go.tsv.gz for those accessions
  go_graph.tsv.gz          child, parent, distance, relation: the term graph edges among the terms
                           used and all their ancestors (every relation kept). The shared file's
                           header says child, parent but its columns hold parent, child (its first
                           row puts GO:0000001 "mitochondrion inheritance" as the parent of
                           GO:0048308 "organelle inheritance"), so the columns are swapped here to
                           match the header.
  go_term_names.tsv.gz     go_id, name: the names of those terms
All gzip -9 without a timestamp, so a rebuild gives identical bytes.

    python scripts/build_embedded_labels.py [--shared ../shared/data/swissprot50_2014]
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

EMBEDDED = Path(__file__).resolve().parents[1] / "protlig_dd" / "data" / "embedded"


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:] if line]


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0, filename="") as handle:
        handle.write(text.encode())
    path.write_bytes(buffer.getvalue())
    print(f"{path.name}: {len(rows):,} rows, {len(buffer.getvalue()):,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "swissprot50_2014"
    parser.add_argument("--shared", type=Path, default=default)
    args = parser.parse_args()

    with gzip.open(EMBEDDED / "swissprot50_train.fasta.gz", "rt") as handle:
        accessions = {line[1:].split()[0] for line in handle if line.startswith(">")}
    header, rows = read_tsv(args.shared / "sp50_go.tsv.gz")
    kept = [row for row in rows if row[0] in accessions]
    write_tsv(EMBEDDED / "swissprot50_go.tsv.gz", header, kept)

    used = {term for row in kept for term in row[2].split(";") if term}
    graph_header, shared_edges = read_tsv(args.shared / "go_graph.tsv.gz")
    edges = [[edge[1], edge[0], *edge[2:]] for edge in shared_edges]  # (parent, child) -> (child, parent)
    parents: dict[str, list[list[str]]] = {}
    for edge in edges:
        parents.setdefault(edge[0], []).append(edge)
    closure, todo = set(used), list(used)
    while todo:
        for edge in parents.get(todo.pop(), []):
            if edge[1] not in closure:
                closure.add(edge[1])
                todo.append(edge[1])
    write_tsv(EMBEDDED / "go_graph.tsv.gz", graph_header, [e for e in edges if e[0] in closure])
    names_header, names = read_tsv(args.shared / "go_term_names.tsv.gz")
    write_tsv(EMBEDDED / "go_term_names.tsv.gz", names_header, [n for n in names if n[0] in closure])
    print(f"{len(accessions):,} accessions, {len({r[0] for r in kept}):,} with GO rows, {len(used):,} terms used, "
          f"{len(closure):,} with ancestors")


if __name__ == "__main__":
    main()
