"""Command line: the evaluation report of a trained model (report.json, report.md, PNG plots).

    python -m protlig_dd.evaluate --checkpoint RUN_OR_CKPT [--data heldout.fasta] [--samples samples.fasta]
        [--num-samples N] [--steps S] [--samples-per-seq K] [--max-data-sequences M] [--train-data PATH]
        [--no-shuffle-control] [--batch-size B] [--seed SEED] [--device auto|cpu|cuda|mps] [--precision P]
        [--compile] [--labelled-data FILE --labels-from SOURCE] [--signature-label TERM ...]
        [--guidance W ...] [--guidance-schedule constant|late] --out report_dir

Without --data the held-out set is the embedded random UniRef50 validation sample (996 sequences).
Without --samples, --num-samples sequences are generated first (report_dir/samples.fasta). The
novelty reference is the run's training source (the embedded sample by default) unless --train-data
is given. A model trained with labels also gets a label-conditioning section
(protlig_dd.evaluation.conditional): held-out labelled sequences (--labelled-data with
--labels-from, or the run's own hash split) scored under their own labels, other sequences' labels
and no label; and for each --signature-label, guided samples at each --guidance weight beside
unconditional samples and real members. See protlig_dd.evaluation.report for what each number means.
Exit codes: 0 done, 2 bad
arguments, checkpoint or input file (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys

from protlig_dd.diffusion.guidance import GUIDANCE_SCHEDULES
from protlig_dd.evaluation.conditional import LabelControl
from protlig_dd.evaluation.report import EvaluationOptions, evaluate
from protlig_dd.evaluation.shuffle_control import ShuffleControl
from protlig_dd.inference import add_model_arguments, load_model_from_args
from protlig_dd.training.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m protlig_dd.evaluate", description="Evaluation report of a trained SEDD model"
    )
    add_model_arguments(parser)
    parser.add_argument("--data", help="held-out sequences (FASTA); default: the embedded validation sample")
    parser.add_argument("--samples", help="generated sequences (FASTA); default: generate --num-samples")
    parser.add_argument("--num-samples", type=int, default=64, help="sequences to generate without --samples")
    parser.add_argument("--steps", type=int, help="reverse steps when generating (default: the run's)")
    parser.add_argument("--samples-per-seq", type=int, help="t draws per held-out sequence (default: the run's)")
    parser.add_argument("--max-data-sequences", type=int, default=0, help="score the first M (0 = all)")
    parser.add_argument(
        "--no-shuffle-control",
        action="store_true",
        help="skip scoring the held-out sequences shuffled (the residue-order control; halves scoring time)",
    )
    parser.add_argument("--train-data", help="novelty reference (default: the run's training source)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labelled-data", help="held-out labelled sequences (default: the run's own split)")
    parser.add_argument("--labels-from", help="their labels: header:KEY, column:NAME or a label table")
    parser.add_argument("--max-labelled-sequences", type=int, default=0, help="use the first M (0 = all)")
    parser.add_argument(
        "--signature-label",
        action="append",
        default=[],
        metavar="TERM",
        help="compare guided samples for this label with real members (repeatable)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        action="append",
        metavar="W",
        help="guidance weights of the signature samples (repeatable; default 0 and 2)",
    )
    parser.add_argument("--guidance-schedule", choices=GUIDANCE_SCHEDULES, default="constant")
    parser.add_argument("--out", required=True, help="report directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        options = EvaluationOptions(
            data=args.data,
            samples=args.samples,
            num_samples=args.num_samples,
            steps=args.steps,
            samples_per_sequence=args.samples_per_seq,
            max_data_sequences=args.max_data_sequences,
            shuffle_control=not args.no_shuffle_control,
            batch_size=args.batch_size,
            seed=args.seed,
            train_data=args.train_data,
            labelled_data=args.labelled_data,
            labels_from=args.labels_from,
            max_labelled_sequences=args.max_labelled_sequences,
            signature_labels=args.signature_label,
            guidance=args.guidance if args.guidance else [0.0, 2.0],
            guidance_schedule=args.guidance_schedule,
        )
        loaded = load_model_from_args(args)
        report = evaluate(loaded, args.out, options)
    except (CheckpointError, ValueError) as err:  # ValueError covers config, input file and residue errors
        print(f"error: {err}", file=sys.stderr)
        return 2
    val = report["validation"]
    print(
        f"held-out perplexity bound {val['ppl_bound']:.3f} +- {val['ppl_stderr']:.3f} "
        f"(uniform-20: 20.00, training unigram: {val['baselines']['train_unigram_ppl']:.2f}); "
        f"report in {args.out}/report.md"
    )
    control = val["shuffle_control"]
    if control["computed"]:
        print(f"shuffled control: {ShuffleControl(**{k: v for k, v in control.items() if k != 'computed'}).describe()}")
    if "conditional" in report:
        print(f"label control: {LabelControl(**report['conditional']['label_control']).describe()}")
        for signature in report["conditional"]["signatures"]:
            fractions = ", ".join(
                f"{name} {row['transmembrane_fraction']:.3f}" for name, row in signature["table"].items()
            )
            print(f"{signature['label']}: TM-like fraction {fractions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
