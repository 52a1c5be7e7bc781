"""Step-numbered, atomically written checkpoints that carry everything needed to resume or infer.

A checkpoint is a folder ``checkpoints/step_00001000/`` holding:

    model.pt        {"model": weights, "ema": EMA weights or absent}   (inference needs only this)
    train_state.pt  optimizer (keyed by parameter name), scaler, RNG states
    meta.json       step, train state counters, data position, alphabet, length histogram, metrics
    config.yaml     the resolved run config

Weights and optimizer state are full (unsharded) state dicts whatever the run's strategy, and the
data position is a global one, so a checkpoint resumes under any number of processes and under
DDP or FSDP alike (see parallel.py and data/loader.py). Rank 0 writes; every rank reads.
``write_training_checkpoint`` and ``read_training_checkpoint`` define what a training run puts in
them; ``parallel.gather_training_state`` / ``load_training_state`` move the full states in and out
of a (possibly sharded) model. Resuming a run directory whose latest checkpoint cannot be read
falls back to the newest one that can (``load_for_resume``).

It is written under a temporary name (``.tmp-step_...``) and renamed when every file is on
disk, so a crash or kill -9 mid-write leaves the previous checkpoints untouched and no folder that
looks complete. Everything loads with ``torch.load(weights_only=True)``: tensors and plain data only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from protlig_dd import __version__
from protlig_dd.config import Config, ConfigError, config_from_dict, upgrade_renamed_keys
from protlig_dd.durable_io import atomic_folder, write_file
from protlig_dd.training.train_state import TrainState

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_STEP_PATTERN = re.compile(r"^step_(\d{8})$")
_TMP_PREFIX = ".tmp-"
REQUIRED_FILES = ("model.pt", "train_state.pt", "meta.json", "config.yaml")
# Sections that define the network and the diffusion: a checkpoint only resumes under the same ones.
ARCHITECTURE_SECTIONS = ("model", "graph", "noise")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or unreadable."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint folder on disk."""

    path: Path
    step: int

    def meta(self) -> dict[str, Any]:
        return read_meta(self.path)


def checkpoint_root(work_dir: Path) -> Path:
    return Path(work_dir) / CHECKPOINT_DIR


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def is_complete(path: Path) -> bool:
    """A folder is a checkpoint only if its name is final and every required file is present."""
    path = Path(path)
    return bool(_STEP_PATTERN.match(path.name)) and all((path / f).is_file() for f in REQUIRED_FILES)


def list_checkpoints(work_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(work_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_PATTERN.match(entry.name)
        if match and entry.is_dir() and is_complete(entry):
            found.append(CheckpointInfo(entry, int(match.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(work_dir: Path) -> CheckpointInfo | None:
    found = list_checkpoints(work_dir)
    return found[-1] if found else None


def remove_incomplete(work_dir: Path) -> list[Path]:
    """Delete temporary folders left by a write that was killed (call with the run lock held)."""
    root = checkpoint_root(work_dir)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                shutil.rmtree(entry)
                removed.append(entry)
    return removed




def save_checkpoint(
    work_dir: Path,
    step: int,
    model_state: dict[str, Any],
    train_state: dict[str, Any],
    meta: dict[str, Any],
    config_yaml: str,
) -> Path:
    """Write a checkpoint atomically and return its folder.

    ``model_state`` goes to model.pt, ``train_state`` to train_state.pt (both must be tensors and
    plain data), ``meta`` (JSON-serialisable) to meta.json. An existing folder for the same step
    (e.g. SIGTERM right after a periodic save) is replaced only after the new one is complete.
    An OSError (disk full) raises WriteFailedError naming the folder; the temporary one is deleted.
    """
    root = checkpoint_root(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    previous = latest_checkpoint(work_dir)
    intact = f"the previous checkpoint {previous.path} is intact" if previous else "there was no earlier checkpoint"
    tmp = root / f"{_TMP_PREFIX}{step_dir_name(step)}-{os.getpid()}"
    with atomic_folder(final, tmp, what="checkpoint", intact=intact):
        write_file(tmp / "model.pt", lambda h: torch.save(model_state, h))
        write_file(tmp / "train_state.pt", lambda h: torch.save(train_state, h))
        write_file(tmp / "meta.json", lambda h: h.write(json.dumps({"step": step, **meta}, indent=1).encode()))
        write_file(tmp / "config.yaml", lambda h: h.write(config_yaml.encode()))
    return final


def read_meta(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a checkpoint (no meta.json)") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path / 'meta.json'}: unreadable ({err})") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder or a run directory (its latest complete checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if is_complete(path):
        return path
    if path.is_dir() and _STEP_PATTERN.match(path.name):
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(
            f"{path}: no complete checkpoint found (expected {CHECKPOINT_DIR}/step_XXXXXXXX/)"
        )
    return latest.path


def load_file(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True; errors name the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot be loaded ({err})") from None


def prune_checkpoints(
    work_dir: Path, keep_last: int, keep_best: bool, metric: str = "val_nll_per_residue"
) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep_last`` (and the best by ``metric``)."""
    found = list_checkpoints(work_dir)
    keep = {c.path for c in found[-keep_last:]}
    if keep_best:
        scored = [(_metric(c, metric), c) for c in found]
        scored = [(value, c) for value, c in scored if isinstance(value, (int, float))]
        if scored:
            keep.add(min(scored, key=lambda vc: (vc[0], -vc[1].step))[1].path)
    removed = []
    for c in found:
        if c.path not in keep:
            shutil.rmtree(c.path)
            removed.append(c.path)
    return removed


def _metric(checkpoint: CheckpointInfo, metric: str) -> float | None:
    """A checkpoint's saved metric; None when absent or when its meta.json cannot be read (a damaged
    checkpoint never counts as the best)."""
    try:
        value = checkpoint.meta().get("metrics", {}).get(metric)
    except CheckpointError:
        return None
    return value if isinstance(value, (int, float)) else None


# ----- what a training run saves and resumes from -----------------------------------------------


def read_config(checkpoint_dir: Path) -> Config:
    """The config stored in a checkpoint (keys renamed since it was written are upgraded)."""
    path = Path(checkpoint_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: unreadable (not a mapping of config sections)")
    return config_from_dict(upgrade_renamed_keys(data), str(path))


def check_compatible(cfg: Config, checkpoint_dir: Path) -> None:
    """ConfigError unless the checkpoint's model, graph and noise sections equal ``cfg``'s."""
    saved = read_config(checkpoint_dir).to_dict()
    current = cfg.to_dict()
    diffs = [
        f"{section}.{key}: checkpoint {value!r} vs config {current[section][key]!r}"
        for section in ARCHITECTURE_SECTIONS
        for key, value in saved[section].items()
        if current[section][key] != value
    ]
    if diffs:
        raise ConfigError(
            f"{checkpoint_dir}: checkpoint does not match the config ({'; '.join(diffs)}); "
            "use the checkpoint's config or start with --fresh"
        )


@dataclass
class TrainingCheckpoint:
    """The contents of a checkpoint, read into host memory, ready to restore a run from."""

    path: Path
    model_state: dict[str, Any]  # {"model": weights, "ema": EMA state (absent without EMA)}
    train_state: dict[str, Any]  # {"optimizer", "scaler", "rng"}
    meta: dict[str, Any]  # train_state counters, data position, alphabet, data summary, metrics...


def read_training_checkpoint(path: Path, cfg: Config) -> TrainingCheckpoint:
    """Read every file of checkpoint ``path`` after checking it fits ``cfg`` (ConfigError if not).

    CheckpointError names the file when one is missing, truncated or unreadable.
    """
    path = Path(path)
    check_compatible(cfg, path)
    meta = read_meta(path)
    return TrainingCheckpoint(path, load_file(path / "model.pt"), load_file(path / "train_state.pt"), meta)


def load_for_resume(target: Path, cfg: Config) -> TrainingCheckpoint:
    """The checkpoint to resume from ``target``, read.

    ``target`` is a checkpoint folder (one that cannot be read is an error) or a run directory:
    its latest checkpoint, or, when that cannot be read (a truncated model.pt, an unreadable
    meta.json...), the newest one that can, with a warning naming both. Nothing is deleted.
    """
    target = Path(target)
    if not target.exists():
        raise CheckpointError(f"checkpoint not found: {target}")
    if _STEP_PATTERN.match(target.name):
        return read_training_checkpoint(resolve_checkpoint(target), cfg)
    candidates = list_checkpoints(target)[::-1]  # newest first
    if not candidates:
        resolve_checkpoint(target)  # raises, naming what is missing
    failure: CheckpointError | None = None
    for candidate in candidates:
        try:
            saved = read_training_checkpoint(candidate.path, cfg)
        except CheckpointError as err:
            failure = failure or err
            continue
        if failure is not None:
            logger.warning(
                "the latest checkpoint %s cannot be loaded (%s); resuming from %s, the newest one that "
                "loads (nothing was deleted)",
                candidates[0].path,
                failure,
                candidate.path,
            )
        return saved
    raise CheckpointError(f"{target}: no checkpoint can be loaded; the latest: {failure}")


def write_training_checkpoint(
    work_dir: Path,
    *,
    state: TrainState,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    scaler_state: dict[str, Any],
    rng: dict[str, Any],
    data_position: dict[str, Any],
    run_meta: dict[str, Any],
    metrics: dict[str, float],
    config_yaml: str,
    keep_last: int,
    keep_best: bool,
) -> Path:
    """Save the checkpoint of step ``state.step`` (rank 0) and prune old ones; returns its folder.

    ``run_meta`` holds what stays fixed for the run (alphabet, data summary, world size,
    precision); ``metrics`` are the validation metrics of this step (empty when none ran).
    """
    meta = {
        "train_state": state.state_dict(),
        "data": data_position,
        **run_meta,
        "metrics": metrics,
        "protlig_dd_version": __version__,
        "torch_version": torch.__version__,
    }
    train_state = {"optimizer": optimizer_state, "scaler": scaler_state, "rng": rng}
    path = save_checkpoint(work_dir, state.step, model_state, train_state, meta, config_yaml)
    prune_checkpoints(work_dir, keep_last, keep_best)
    logger.info("checkpoint saved: %s", path)
    return path
