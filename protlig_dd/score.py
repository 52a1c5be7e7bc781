"""Command line: the likelihood bound of every sequence in a FASTA file, and of the whole file.

    python -m protlig_dd.score --checkpoint RUN_OR_CKPT --fasta in.fasta [--samples-per-seq K]
        [--label TERM ... | --labels-from header:KEY|column:NAME|TABLE]
        [--batch-size B] [--seed SEED] [--device auto|cpu|cuda|mps] [--precision P] [--compile]
        --out scores.csv

Labels (a model trained with labels): ``--label GO:0016021`` (repeatable) scores every sequence
under those labels, a bound on -log p(x | labels, length); ``--labels-from`` takes each sequence's
own labels from a FASTA header field (``header:TaxID``), a column of the input (``column:go_terms``,
';'-separated) or a label table keyed by id (the formats of ``labels.source``). Labels the model
does not know are an error naming them; with --labels-from, unknown labels of a sequence are
counted and left out, and a table whose ids match no input sequence is an error naming it.

scores.csv has one row per sequence: id, length, num_windows, nll (bound on -log p(x | length) in
nats), nll_stderr, nll_per_residue, nll_per_residue_stderr, ppl_bound. Sequences longer than the
model's max_length are scored in consecutive non-overlapping windows (num_windows > 1; see
protlig_dd.scoring). The residue-weighted dataset total is printed and written beside the CSV as
``<out>.summary.json`` (scores.summary.json for scores.csv). The input may also be CSV/TSV/JSONL
with a ``sequence`` column (format from the extension). Exit codes: 0 done, 2 bad arguments,
checkpoint or input file (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from protlig_dd.data.label_pipeline import read_labels
from protlig_dd.data.readers import Record
from protlig_dd.data.sources import SourceSpec
from protlig_dd.inference import LoadedModel, add_model_arguments, load_model_from_args
from protlig_dd.scoring import encode_records, read_sequences, score_tokens, write_scores_csv
from protlig_dd.training.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m protlig_dd.score", description="Score sequences with the SEDD likelihood bound"
    )
    add_model_arguments(parser)
    parser.add_argument("--fasta", required=True, help="sequences to score (FASTA, optionally .gz)")
    parser.add_argument(
        "--samples-per-seq", type=int, default=8, help="Monte-Carlo draws of t per sequence (default 8)"
    )
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument(
        "--label", action="append", default=[], metavar="TERM", help="score under this label (repeatable)"
    )
    labels.add_argument(
        "--labels-from", metavar="SOURCE", help="each sequence's labels: header:KEY, column:NAME or a label table path"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="sequences (windows) per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output CSV")
    return parser


def summary_path(out: Path) -> Path:
    """Where the dataset total goes: scores.csv -> scores.summary.json."""
    return out.with_name(out.stem + ".summary.json")


def input_labels(
    args: argparse.Namespace, loaded: LoadedModel, records: list[Record]
) -> tuple[list[list[int]] | None, str]:
    """(label ids per record or None, a note for the summary) from --label / --labels-from."""
    if args.label:
        ids = loaded.label_ids(args.label)
        return [ids] * len(records), f"every sequence scored under {', '.join(args.label)}"
    if not args.labels_from:
        return None, ""
    vocabulary = loaded.label_vocabulary
    if vocabulary is None:
        raise ValueError(f"{loaded.checkpoint}: this model was trained without labels; it cannot take --labels-from")
    # Processed as in training (ontologies, ancestors from the model's term graph).
    by_id = read_labels(loaded.config.labels, args.labels_from, [SourceSpec(args.fasta)])
    if not any(r.id in by_id for r in records):
        raise ValueError(f"{args.labels_from}: no id matches a sequence of {args.fasta} (e.g. {records[0].id!r})")
    names = [by_id.get(r.id, []) for r in records]
    sets = [vocabulary.encode(n) for n in names]
    unknown = sum(len(n) for n in names) - sum(len(s) for s in sets)
    return sets, (
        f"each sequence under its own labels from {args.labels_from} ({sum(1 for s in sets if s)} of "
        f"{len(sets)} with known labels; {unknown} labels unknown to the model left out)"
    )


def run(args: argparse.Namespace) -> None:
    if args.samples_per_seq < 1:
        raise ValueError(f"--samples-per-seq must be >= 1, got {args.samples_per_seq}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    records = read_sequences(args.fasta)
    loaded = load_model_from_args(args)
    tokens = encode_records(records, loaded.alphabet)
    label_sets, label_note = input_labels(args, loaded, records)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    total_residues = sum(len(t) for t in tokens)
    start = time.perf_counter()
    with tqdm(total=total_residues, unit="res", unit_scale=True, desc="scoring", file=sys.stderr) as bar:
        report = score_tokens(
            loaded,
            tokens,
            [r.id for r in records],
            samples_per_sequence=args.samples_per_seq,
            batch_size=args.batch_size,
            seed=args.seed,
            on_batch=bar.update,
            label_sets=label_sets,
        )
    elapsed = time.perf_counter() - start
    write_scores_csv(out, report)
    summary = {"checkpoint": str(loaded.checkpoint), "step": loaded.step, "input": str(args.fasta)}
    if label_note:
        summary["labels"] = label_note
    summary.update(report.summary_dict())
    summary_path(out).write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"scored {len(records)} sequences ({total_residues} residues, {report.num_windowed} in windows of "
        f"{report.max_length}) in {elapsed:.1f} s: {total_residues / max(elapsed, 1e-9):.0f} residues/s"
        f"{' (compiled: the time includes compilation)' if loaded.compiled else ''}"
    )
    under = f" ({label_note})" if label_note else ""
    print(f"total: {report.total.describe()}; uniform over 20 amino acids: ppl 20{under}")
    print(f"wrote {out} and {summary_path(out)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (CheckpointError, ValueError) as err:  # ValueError covers config, input file and residue errors
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
