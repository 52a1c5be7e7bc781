"""Build the package's embedded training set: a random subset of the Swiss-Prot 50% representatives.

Reproduces ``protlig_dd/data/embedded/swissprot50_train.fasta.gz`` from the team's shared data
(``../shared/data/swissprot50_2014/sp50_reps.fasta.gz``, see its PROVENANCE.md):

1. keep representatives of ``--min-length``..``--max-length`` residues;
2. drop every one that is a homologue of a validation sequence (the 996 random UniRef50 of
   ``embedded/x000.csv`` and ``x001.csv``): MMseqs2 (Debian ``mmseqs2``) searches the validation
   sequences against the candidates, and any candidate hit with E-value <= ``--max-evalue`` is
   removed, whatever its identity, so the validation set measures generalisation to unseen families;
3. draw a random subset (seed ``--seed``) of about ``--residues`` residues, in random order;
4. write it gzip-compressed (``gzip -9 -n``-equivalent: no name, no timestamp) and print the counts
   as JSON (``--report``), which embedded/PROVENANCE.md quotes.

Run: ``python scripts/build_embedded_training_set.py --shared ../shared/data``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from protlig_dd.data.pipeline import EMBEDDED_DIR

VALIDATION_FILES = ("x000.csv", "x001.csv")


def read_fasta(path: Path) -> list[tuple[str, str]]:
    """(id, sequence) pairs of a gzip FASTA; the id is the first word of the header."""
    records: list[tuple[str, str]] = []
    name, chunks = None, []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                if name is not None:
                    records.append((name, "".join(chunks)))
                name, chunks = line[1:].split()[0], []
            elif line:
                chunks.append(line)
    if name is not None:
        records.append((name, "".join(chunks)))
    return records


def read_validation() -> list[tuple[str, str]]:
    """(record_name, sequence) of the embedded random UniRef50 validation sample."""
    records = []
    for file_name in VALIDATION_FILES:
        with open(EMBEDDED_DIR / file_name, newline="") as handle:
            records += [(row["record_name"], row["sequence"]) for row in csv.DictReader(handle)]
    return records


def write_fasta(path: Path, records: list[tuple[str, str]]) -> None:
    """Plain FASTA, one sequence per line (MMSeqs2's input)."""
    with open(path, "w") as handle:
        for name, sequence in records:
            handle.write(f">{name}\n{sequence}\n")


def homologues_of_validation(
    candidates: list[tuple[str, str]], validation: list[tuple[str, str]], max_evalue: float, threads: int
) -> set[str]:
    """Ids of candidates that MMseqs2 finds as hits (E <= max_evalue) of any validation sequence."""
    if shutil.which("mmseqs") is None:
        sys.exit("build_embedded_training_set: mmseqs not found (Debian: apt-get install mmseqs2)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_fasta(tmp / "query.fa", validation)
        write_fasta(tmp / "target.fa", candidates)
        subprocess.run(
            [
                "mmseqs", "easy-search", str(tmp / "query.fa"), str(tmp / "target.fa"), str(tmp / "hits.m8"),
                str(tmp / "work"), "-e", str(max_evalue), "--threads", str(threads), "-v", "1",
            ],
            check=True,
        )
        with open(tmp / "hits.m8") as handle:
            return {line.split("\t")[1] for line in handle if line.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR / "swissprot50_train.fasta.gz")
    parser.add_argument("--report", type=Path, default=None, help="write the counts as JSON here")
    parser.add_argument("--min-length", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--residues", type=int, default=16_000_000, help="residues to keep (about)")
    parser.add_argument("--max-evalue", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=2014)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    source = args.shared / "swissprot50_2014" / "sp50_reps.fasta.gz"
    records = read_fasta(source)
    in_range = [r for r in records if args.min_length <= len(r[1]) <= args.max_length]
    validation = read_validation()
    homologues = homologues_of_validation(in_range, validation, args.max_evalue, args.threads)
    candidates = [r for r in in_range if r[0] not in homologues]
    random.Random(args.seed).shuffle(candidates)
    chosen, total = [], 0
    for record in candidates:
        if total >= args.residues:
            break
        chosen.append(record)
        total += len(record[1])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as gz:
        for name, sequence in chosen:
            gz.write(f">{name}\n{sequence}\n".encode())
    lengths = sorted(len(s) for _, s in chosen)
    report = {
        "source": str(source),
        "source_sequences": len(records),
        "in_length_range": len(in_range),
        "validation_sequences": len(validation),
        "homologues_removed": len(homologues),
        "max_evalue": args.max_evalue,
        "chosen_sequences": len(chosen),
        "chosen_residues": total,
        "length_min_median_max": [lengths[0], lengths[len(lengths) // 2], lengths[-1]],
        "seed": args.seed,
        "out": str(args.out),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.report is not None:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
