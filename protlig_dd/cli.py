"""The ``protlig-dd`` command: one entry point with a subcommand per job.

    protlig-dd train     ...   = python -m protlig_dd.training.run_train_uniref50_optimized ...
    protlig-dd prepare   ...   = python -m protlig_dd.data.prepare ...
    protlig-dd sample    ...   = python -m protlig_dd.sample ...
    protlig-dd score     ...   = python -m protlig_dd.score ...
    protlig-dd evaluate  ...   = python -m protlig_dd.evaluate ...
    protlig-dd export    ...   = python -m protlig_dd.export ...

Each subcommand hands its arguments to that module's ``main`` unchanged, so options, output and
exit codes are the same as the ``python -m`` form. Modules are imported only when their subcommand
runs: ``protlig-dd --help`` and ``--version`` do not load torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from protlig_dd import __version__

# subcommand -> (module whose main(argv) runs it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("protlig_dd.training.run_train_uniref50_optimized", "train a model, fresh, resumed or --init-from one"),
    "prepare": ("protlig_dd.data.prepare", "tokenize a FASTA/CSV/Parquet/JSONL/HF source into a cache"),
    "sample": ("protlig_dd.sample", "generate sequences (free, fixed length, template, prefix/suffix)"),
    "score": ("protlig_dd.score", "likelihood bound of each sequence of a file"),
    "evaluate": ("protlig_dd.evaluate", "evaluation report: held-out bound, shuffled control, sample metrics"),
    "export": ("protlig_dd.export", "export a model: safetensors + config.json + model card; --push-to-hub"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protlig-dd",
        description="SEDD discrete diffusion for protein sequences: train, prepare, sample, score, evaluate, export.",
        epilog="Run 'protlig-dd COMMAND --help' for the options of a command. Models are named by a run dir, "
        "a checkpoint folder, an export folder or a Hugging Face Hub repo id user/name[@revision].",
    )
    parser.add_argument("--version", action="version", version=f"protlig-dd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[args[0]][0])
        return module.main(args[1:])
    parser = build_parser()
    parser.parse_args(args)  # --help and --version exit here; an unknown command is an error (exit 2)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
