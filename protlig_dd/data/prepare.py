"""Command line: prepare a sequence source into a tokenized cache directory and print its counts.

    python -m protlig_dd.data.prepare --source uniref50.fasta.gz --out data_cache/uniref50

Several --source options are concatenated into one cache. A bad input (a malformed, truncated or
corrupt source) exits with status 2 and a one-line error on stderr (no traceback); a cache that
cannot be written (disk full) exits with status 1, keeping the previous cache.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.cache import UNKNOWN_POLICIES, PreparedCache, prepare_cache
from protlig_dd.data.sources import FORMATS, SourceSpec
from protlig_dd.durable_io import WriteFailedError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the prepare CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m protlig_dd.data.prepare",
        description="Tokenize a FASTA/CSV/TSV/Parquet/JSONL/Hugging Face source into a memory-mapped cache.",
    )
    parser.add_argument("--source", action="append", required=True, help="file, directory or datasets name")
    parser.add_argument("--out", required=True, help="cache directory to create (or reuse)")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    parser.add_argument("--sequence-column", default="sequence", help="tabular/HF column holding sequences")
    parser.add_argument("--id-column", default="", help="tabular/HF column holding ids (default: row number)")
    parser.add_argument("--hf-split", default="train", help="split of a Hugging Face dataset")
    parser.add_argument("--streaming", action="store_true", help="stream a Hugging Face dataset")
    parser.add_argument("--unknown-residues", default="error", choices=UNKNOWN_POLICIES)
    parser.add_argument("--min-length", type=int, default=1, help="drop shorter sequences (counted)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def format_report(cache: PreparedCache) -> str:
    """Human-readable counts and length summary of a prepared cache."""
    meta: dict[str, Any] = cache.meta
    counts = meta["counts"]
    lengths = meta["lengths"]
    lines = [
        f"cache:      {cache.path}",
        f"sequences:  {counts['read']:,} read, {counts['kept']:,} kept",
        f"dropped:    {counts['dropped']['too_short']:,} too short, "
        f"{counts['dropped']['unknown_residues']:,} with unknown residues",
    ]
    if counts["mapped_to_x"]:
        mapped = ", ".join(f"{k}x{v:,}" for k, v in counts["mapped_to_x"].items())
        lines.append(f"mapped to X: {mapped}")
    lines += [
        f"residues:   {counts['residues']:,}",
        f"length:     min {lengths['min']}, median {lengths['median']}, mean {lengths['mean']:.1f}, "
        f"max {lengths['max']}",
        "quantiles:  " + ", ".join(f"{k} {v}" for k, v in lengths["quantiles"].items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    specs = [
        SourceSpec(
            path=source,
            format=args.format,
            sequence_column=args.sequence_column,
            id_column=args.id_column,
            hf_split=args.hf_split,
            streaming=args.streaming,
        )
        for source in args.source
    ]
    try:
        cache = prepare_cache(
            specs,
            args.out,
            Alphabet(),
            unknown_residues=args.unknown_residues,
            min_length=args.min_length,
            force=args.force,
            progress=not args.no_progress,
        )
    except WriteFailedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    print(format_report(cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
