"""Command line: export a trained model as a self-contained folder in the Hugging Face Hub layout.

    python -m protlig_dd.export --checkpoint RUN_OR_CKPT --out DIR [--raw-weights]
        [--heldout FILE] [--max-heldout-sequences M] [--samples-per-seq K] [--no-evaluation]
        [--license TAG] [--push-to-hub USER/NAME [--private]] [--device D] [--precision P] [--seed S]

DIR gets model.safetensors (the EMA weights, or the trained ones with --raw-weights; no pickle),
config.json (all that ``load_model`` needs) and README.md (the model card: training data and its
license, steps, tokens seen, the held-out bound beside its baselines and the shuffled control, the
sampling settings, how to load it, the limits). The held-out bound is computed here, on --heldout
(default: the embedded 996 random UniRef50 sequences). --push-to-hub uploads DIR with
huggingface_hub (needs a write token: ``hf auth login`` or HF_TOKEN). DIR alone is then enough:
``load_model(DIR)`` and every ``--checkpoint DIR`` work with the run directory gone.
Exit codes: 0 done, 1 the folder could not be written or the upload failed (the folder is kept),
2 bad arguments, checkpoint or held-out file (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from protlig_dd.durable_io import WriteFailedError
from protlig_dd.evaluation.report import EvaluationOptions, load_heldout, validation_section
from protlig_dd.hub import push_to_hub
from protlig_dd.inference import LoadedModel, add_model_arguments, load_model
from protlig_dd.model_card import default_license, model_card
from protlig_dd.model_folder import export_config, write_model_folder
from protlig_dd.training.checkpoint import CheckpointError

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m protlig_dd.export",
        description="Export a trained model: model.safetensors + config.json + model card (Hugging Face Hub layout)",
    )
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, help="folder to write (replaced when complete)")
    parser.add_argument("--raw-weights", action="store_true", help="export the trained weights, not the EMA")
    parser.add_argument("--heldout", help="held-out sequences for the card's bound; default: the embedded sample")
    parser.add_argument("--max-heldout-sequences", type=int, default=0, help="score the first M (0 = all)")
    parser.add_argument("--samples-per-seq", type=int, help="noise draws per held-out sequence (default: the run's)")
    parser.add_argument("--no-evaluation", action="store_true", help="no held-out bound on the card")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--license", help="license tag of the card (default: the training data's, if known)")
    parser.add_argument("--push-to-hub", metavar="USER/NAME", help="upload the folder to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    return parser


def heldout_evaluation(loaded: LoadedModel, args: argparse.Namespace) -> dict[str, Any] | None:
    """The held-out bound, its baselines and the shuffled control (the evaluation report's section)."""
    if args.no_evaluation:
        return None
    options = EvaluationOptions(
        data=args.heldout,
        samples_per_sequence=args.samples_per_seq,
        max_data_sequences=args.max_heldout_sequences,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    description, records = load_heldout(options)
    logger.info("scoring %d held-out sequences for the model card", len(records))
    return validation_section(loaded, description, records, options)


def export(args: argparse.Namespace) -> Path:
    """Write the export folder (see the module doc); returns it."""
    loaded = load_model(
        args.checkpoint,
        device=args.device,
        precision=args.precision,
        use_ema=not args.raw_weights,
        compile=args.compile,
    )
    if args.raw_weights and loaded.uses_ema:
        raise ValueError(f"--raw-weights: {args.checkpoint} holds only EMA weights (an export); export a checkpoint")
    weights = "ema" if loaded.uses_ema else "trained"
    source = loaded.source
    config = export_config(
        loaded.config,
        loaded.meta,
        weights=weights,
        exported_from={"model": source.reference, "folder": source.folder.name, "revision": source.revision},
        num_parameters=loaded.model.num_parameters(),
        evaluation=heldout_evaluation(loaded, args),
    )
    license_tag = args.license or default_license(config)
    name = args.push_to_hub or str(args.out)
    card = model_card(config, name=name, title=args.push_to_hub or Path(args.out).name, license_tag=license_tag)
    out = write_model_folder(Path(args.out), loaded.model.state_dict(), config, card)
    logger.info("exported %s (step %d, %s weights)", source.reference, loaded.step, weights)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        out = export(args)
        print(f"exported {args.checkpoint} to {out}")
    except WriteFailedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, ValueError) as err:  # ValueError covers config, held-out file and residue errors
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.push_to_hub:
        try:
            url = push_to_hub(out, args.push_to_hub, private=args.private)
        except (OSError, ValueError) as err:  # HTTP, authentication and repo-name errors
            print(
                f"error: upload to {args.push_to_hub} failed ({err}); the export in {out} is complete", file=sys.stderr
            )
            return 1
        print(f"uploaded to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
