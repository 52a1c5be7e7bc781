"""Command-line entry point of training (the name the design fixes).

    python -m protlig_dd.training.run_train_uniref50_optimized --work_dir DIR --config FILE
        [--fresh] [--resume [CHECKPOINT]] [--device auto|cpu|cuda|mps] [--seed N]
        [--datafile PATH] [--init-from MODEL] [--set section.key=value ...] [--wandb-mode online|offline|disabled]

--init-from MODEL (training.init_from) starts a new run from a model's weights (fine-tuning; see
training/init_from.py); without --config the model's own config is the starting point.
Without --fresh/--resume it resumes the latest complete checkpoint in DIR, or starts fresh when
there is none. --fresh never deletes: an earlier run in DIR is moved to DIR/archived_runs/.
Exit codes: 0 done, 1 training failed or a checkpoint/data cache could not be written (disk full:
the previous one is kept), 2 bad config/arguments/checkpoint/data, 130/143 interrupted by
SIGINT/SIGTERM after saving a checkpoint (resume by running the same command again).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from protlig_dd.config import Config, ConfigError, load_config
from protlig_dd.data.alphabet import UnknownResidueError
from protlig_dd.durable_io import WriteFailedError
from protlig_dd.training.checkpoint import CheckpointError, latest_checkpoint, resolve_checkpoint
from protlig_dd.training.init_from import starting_config
from protlig_dd.training.loop import RunOptions, TrainingError, TrainingInterrupted, train
from protlig_dd.training.run_dir import RunLockedError

logger = logging.getLogger("protlig_dd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m protlig_dd.training.run_train_uniref50_optimized",
        description="Train a SEDD protein diffusion model (fresh or resumed).",
    )
    parser.add_argument("--work_dir", "--work-dir", dest="work_dir", required=True, help="run directory")
    parser.add_argument(
        "--config",
        help="YAML config; optional when resuming (the checkpoint's own config is used)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--fresh", action="store_true", help="start anew (an earlier run is moved aside)")
    start.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CHECKPOINT",
        help="resume the latest checkpoint in work_dir, or the given checkpoint folder",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--seed", type=int, help="overrides training.seed")
    parser.add_argument("--datafile", help="overrides data.source (FASTA/CSV/Parquet/JSONL path or dataset name)")
    parser.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start a new run from this model's weights (sets training.init_from): run dir, checkpoint folder, "
        "export folder or Hub repo id user/name[@revision]",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        nargs="+",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config overrides, e.g. --set optim.lr=1e-4 training.max_steps=500",
    )
    parser.add_argument("--wandb-mode", "--wandb_mode", dest="wandb_mode", choices=["online", "offline", "disabled"])
    return parser


def _configure_logging(work_dir: Path) -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.INFO if rank == 0 else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(work_dir / "train.log"))
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def resolve_config(args: argparse.Namespace) -> Config:
    """The run's config: --config (or, when resuming without one, the checkpoint's), then overrides."""
    overrides = [item for group in args.overrides for item in group]
    if args.seed is not None:
        overrides.append(f"training.seed={args.seed}")
    if args.datafile is not None:
        overrides.append(f"data.source={args.datafile}")
    if args.init_from is not None:
        if args.resume is not None:
            raise ConfigError("--init-from starts a new run; it cannot be combined with --resume")
        overrides.append(f"training.init_from={args.init_from}")
    config_path = args.config
    if config_path is None and args.init_from and (args.fresh or latest_checkpoint(Path(args.work_dir)) is None):
        return starting_config(args.init_from, overrides)
    if config_path is None:
        if args.fresh:
            raise ConfigError("--config is required with --fresh")
        target = args.resume if args.resume else args.work_dir
        try:
            config_path = resolve_checkpoint(target) / "config.yaml"
        except CheckpointError as err:
            raise ConfigError(f"--config is required: no checkpoint to take the config from ({err})") from None
    return load_config(config_path, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work_dir = Path(args.work_dir)
    _configure_logging(work_dir)
    try:
        cfg = resolve_config(args)
        if args.fresh:
            mode, resume_path = "fresh", None
        elif args.resume is not None:
            mode, resume_path = "resume", (Path(args.resume) if args.resume else None)
        else:
            mode, resume_path = "auto", None
        options = RunOptions(
            work_dir=work_dir, mode=mode, resume_path=resume_path, device=args.device, wandb_mode=args.wandb_mode
        )
        train(cfg, options)
    except TrainingInterrupted as err:
        logger.warning("%s; run the same command again to resume", err)
        return 128 + int(err.signum)
    except (ConfigError, CheckpointError, RunLockedError, UnknownResidueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 2
    except TrainingError as err:
        logger.error("training failed: %s", err)
        return 1
    except WriteFailedError as err:
        logger.error("%s", err)
        return 1
    except ValueError as err:
        logger.error("%s", err)
        return 2
    logger.info("training finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
