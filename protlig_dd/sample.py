"""Command line: generate protein sequences with a trained model, optionally around fixed residues.

    python -m protlig_dd.sample --checkpoint RUN_OR_CKPT --num N [--length L | --lengths-from-data]
        [--steps S] [--predictor analytic|euler] [--template SEQ_WITH_GAPS | --prefix P --suffix S]
        [--label TERM ... [--guidance W] [--guidance-schedule constant|late]]
        [--batch-size B] [--seed SEED] [--device auto|cpu|cuda|mps] [--precision P] [--compile]
        --out samples.fasta

Lengths: ``--length L`` for every sequence, or (the default) drawn from the training length
histogram stored in the checkpoint. ``--template MKT___GGS`` keeps the given residues and generates
the ``_`` positions (any positions: motif scaffolding, inpainting); its length is the template's.
``--prefix``/``--suffix`` fix the start and end of each sequence; drawn lengths shorter than the
prefix plus suffix are raised to that length. EMA weights are used when the checkpoint has them.

Labels (a model trained with ``labels.source``): ``--label GO:0016021`` (repeatable) conditions every
sequence on those labels; ``--guidance W`` adds classifier-free guidance toward them (W = 0, the
default: plain conditional sampling; each step then also runs the unconditional branch, batched
with the conditional one), ``--guidance-schedule late`` applies it as positions get decided
(diffusion/guidance.py). Templates combine with labels. Each FASTA header records the labels and
the guidance.
Exit codes: 0 done, 2 bad arguments, checkpoint, template or label (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from protlig_dd.data.fasta_writer import write_fasta
from protlig_dd.diffusion.guidance import GUIDANCE_SCHEDULES, Guidance
from protlig_dd.diffusion.samplers import PREDICTORS
from protlig_dd.diffusion.templates import prefix_suffix_template, stack_templates, templates_from_strings
from protlig_dd.generation import draw_lengths, generate
from protlig_dd.inference import LoadedModel, add_model_arguments, load_model_from_args
from protlig_dd.training.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m protlig_dd.sample", description="Generate protein sequences with a trained SEDD model"
    )
    add_model_arguments(parser)
    parser.add_argument("--num", type=int, required=True, help="number of sequences to generate")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--length", type=int, help="length of every sequence")
    shape.add_argument(
        "--lengths-from-data", action="store_true", help="draw lengths from the training histogram (default)"
    )
    shape.add_argument("--template", help="fixed residues and '_' gaps to generate, e.g. MKT______GGS")
    parser.add_argument("--prefix", default="", help="residues fixed at the start of every sequence")
    parser.add_argument("--suffix", default="", help="residues fixed at the end of every sequence")
    parser.add_argument("--steps", type=int, help="reverse steps (default: the run's sampling.steps)")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="time-agnostic models: run the network at every step (same output, slower; for comparisons)",
    )
    parser.add_argument("--predictor", choices=PREDICTORS, help="default: the run's sampling.predictor")
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="TERM",
        help="condition on this label (repeatable), e.g. GO:0016021; the model must have been trained with labels",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        metavar="W",
        help="classifier-free guidance weight (0 = conditional only)",
    )
    parser.add_argument("--guidance-schedule", choices=GUIDANCE_SCHEDULES, default="constant")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences generated at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output FASTA file")
    return parser


def build_templates(args: argparse.Namespace, loaded: LoadedModel, generator: torch.Generator) -> torch.Tensor:
    """(num, L) int64 templates from the arguments: residues fixed, MASK to generate, PAD beyond."""
    alphabet, max_length = loaded.alphabet, loaded.max_length
    if args.template is not None:
        if args.prefix or args.suffix:
            raise ValueError("--template cannot be combined with --prefix/--suffix (write them into it)")
        try:
            return templates_from_strings([args.template] * args.num, alphabet, max_length)
        except ValueError as err:
            raise ValueError(f"--template: {err}") from None
    if args.length is not None:
        if not 1 <= args.length <= max_length:
            raise ValueError(f"--length {args.length}: must be in 1..{max_length} (the model's max_length)")
        lengths = [args.length] * args.num
    else:
        lengths = draw_lengths(loaded.length_histogram, args.num, max_length, generator)
        # A drawn length must hold the fixed residues; raising it keeps the request satisfiable.
        lengths = [max(length, len(args.prefix) + len(args.suffix)) for length in lengths]
    try:
        rows = [prefix_suffix_template(n, alphabet, args.prefix, args.suffix, max_length) for n in lengths]
    except ValueError as err:
        raise ValueError(f"--prefix/--suffix: {err}") from None
    return stack_templates(rows, alphabet.pad_id)


def _describe(args: argparse.Namespace) -> str:
    if args.template is not None:
        return f" template={args.template}"
    fixed = f" prefix={args.prefix}" if args.prefix else ""
    return fixed + (f" suffix={args.suffix}" if args.suffix else "")


def run(args: argparse.Namespace) -> None:
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    guidance = Guidance(args.guidance, args.guidance_schedule)  # checks W before the model loads
    if guidance.active and not args.label:
        raise ValueError("--guidance needs at least one --label")
    loaded = load_model_from_args(args)
    label_ids = loaded.label_ids(args.label)  # unknown labels: an error naming them, before sampling
    steps = args.steps if args.steps is not None else loaded.config.sampling.steps
    predictor = args.predictor or loaded.config.sampling.predictor
    generator = loaded.generator(args.seed)
    templates = build_templates(args, loaded, generator)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tqdm(total=args.num, unit="seq", desc="sampling", file=sys.stderr) as bar:
        result = generate(
            loaded.network,
            loaded.graph,
            loaded.noise,
            loaded.alphabet,
            templates=templates,
            steps=steps,
            predictor=predictor,
            denoise=loaded.config.sampling.denoise,
            generator=generator,
            precision=loaded.precision,
            batch_size=args.batch_size,
            on_chunk=bar.update,
            cache=not args.no_cache,
            labels=[label_ids] * templates.shape[0] if label_ids else None,
            guidance=guidance,
        )
    elapsed = time.perf_counter() - start
    settings = (
        f"steps={steps} predictor={predictor} seed={args.seed} checkpoint_step={loaded.step} "
        f"ema={loaded.uses_ema}{_describe(args)}{_describe_labels(args, guidance, len(label_ids))}"
    )
    headers = [f"sample{i + 1} length={len(s)} {settings}" for i, s in enumerate(result.sequences)]
    write_fasta(out, result.sequences, headers)
    residues = sum(len(s) for s in result.sequences)
    print(
        f"wrote {len(result.sequences)} sequences ({residues} residues) to {out} in {elapsed:.1f} s: "
        f"{residues / max(elapsed, 1e-9):.0f} residues/s ({loaded.checkpoint}, {predictor}, {steps} steps"
        f"{', compiled: the time includes compilation' if loaded.compiled else ''}); "
        f"{result.mean_passes():.1f} network passes per sequence{_describe_cache(loaded, args)}"
    )


def _describe_labels(args: argparse.Namespace, guidance: Guidance, conditioned: int) -> str:
    """The labels asked for, how many the model was conditioned on (with ancestors), the guidance."""
    if not args.label:
        return ""
    return f" labels={','.join(args.label)} label_set_size={conditioned} {guidance.describe()}"


def _describe_cache(loaded: object, args: argparse.Namespace) -> str:
    """Why the pass count is what it is: time-agnostic models reuse unchanged rows' outputs."""
    if getattr(loaded.network, "time_conditioning", True):
        return " (time-conditioned model: one per step)"
    return " (cache off)" if args.no_cache else " (time-agnostic model: unchanged rows reuse the last pass)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (CheckpointError, ValueError) as err:  # ValueError covers config, source and template errors
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
