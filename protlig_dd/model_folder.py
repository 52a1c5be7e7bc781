"""The exported model folder, in the Hugging Face Hub layout: what ``protlig-dd export`` writes and
``load_model`` reads back.

    model.safetensors  the weights (EMA by default), tensors only: no pickle anywhere
    config.json        everything loading needs: the model, graph and noise sections, the alphabet,
                       the training data summary (length histogram, residue frequencies), the
                       parameterisation, the project version, and the rest of the run's config
    README.md          the model card (protlig_dd.model_card)

The folder is written under a temporary name and renamed when complete (durable_io.atomic_folder),
so a folder with the final name is always whole. Reading errors are CheckpointErrors naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from protlig_dd import __version__
from protlig_dd.config import Config, ConfigError, config_from_dict, upgrade_renamed_keys
from protlig_dd.durable_io import atomic_folder, write_file
from protlig_dd.training.checkpoint import ARCHITECTURE_SECTIONS, CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT_VERSION = 1
LIBRARY_NAME = "protlig_dd"
# config.json "parameterisation", by model.time_conditioning.
PARAMETERISATIONS = {
    True: "time-conditioned: the network sees the noise level and outputs the log concrete score (SEDD)",
    False: "time-agnostic absorbing: the network outputs log p(x0 | unmasked residues); the score "
    "follows analytically (RADD/MDLM)",
}


def is_model_folder(path: Path) -> bool:
    """A folder holding a config.json is an export (checkpoints and run dirs hold config.yaml)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


def export_config(
    cfg: Config,
    meta: dict[str, Any],
    *,
    weights: str,
    exported_from: dict[str, Any],
    num_parameters: int,
    evaluation: dict[str, Any] | None,
) -> dict[str, Any]:
    """The config.json of an export of the model with config ``cfg`` and meta.json ``meta`` (or the
    config.json of an earlier export: the same key names).

    ``weights`` is "ema" or "trained"; ``exported_from`` names the model exported; ``evaluation``
    is the held-out bound section of the evaluation report (or None). Keys that meta.json has too
    (step, alphabet, data_summary, metrics, initialized_from) keep its names.
    """
    tokens_seen = meta.get("tokens_seen", meta.get("train_state", {}).get("tokens_seen", 0))
    sections = cfg.to_dict()
    return {
        "library_name": LIBRARY_NAME,
        "format_version": FORMAT_VERSION,
        "protlig_dd_version": __version__,
        "parameterisation": PARAMETERISATIONS[cfg.model.time_conditioning],
        "weights": weights,
        **{name: sections[name] for name in ARCHITECTURE_SECTIONS},
        "alphabet": meta["alphabet"],
        "step": int(meta["step"]),
        "num_parameters": int(num_parameters),
        "tokens_seen": int(tokens_seen),
        "data_summary": meta.get("data_summary", {}),
        "metrics": meta.get("metrics", {}),
        "initialized_from": meta.get("initialized_from"),
        "evaluation": evaluation,
        "exported_from": exported_from,
        # The rest of the run's resolved config: the recipe, and the sampling defaults.
        "run_config": {name: value for name, value in sections.items() if name not in ARCHITECTURE_SECTIONS},
    }


def write_model_folder(out: Path, weights: dict[str, torch.Tensor], config: dict[str, Any], card: str) -> Path:
    """Write the three files into ``out`` atomically (an existing ``out`` is replaced when complete)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    with atomic_folder(out, tmp, what="model folder", intact="nothing was replaced"):
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "library": LIBRARY_NAME})
        # save_file writes by name; fsync it like the other files (atomic_folder needs them on disk).
        with open(tmp / WEIGHTS_FILE, "rb") as handle:
            os.fsync(handle.fileno())
        write_file(tmp / CONFIG_FILE, lambda h: h.write((json.dumps(config, indent=1) + "\n").encode()))
        write_file(tmp / CARD_FILE, lambda h: h.write(card.encode()))
    return out


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json of an export folder, checked for the fields loading needs."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict) or data.get("library_name") != LIBRARY_NAME:
        raise CheckpointError(f"{path}: not a protlig_dd model (library_name is not {LIBRARY_NAME!r})")
    missing = [key for key in ("format_version", *ARCHITECTURE_SECTIONS, "alphabet", "step") if key not in data]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    if data["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {data['format_version']} is newer than this protlig_dd reads "
            f"({FORMAT_VERSION}); upgrade protlig_dd"
        )
    return data


def config_of(data: dict[str, Any], folder: Path) -> Config:
    """The run Config held by a config.json (its architecture sections plus ``run_config``)."""
    path = Path(folder) / CONFIG_FILE
    sections = {**data.get("run_config", {}), **{name: data[name] for name in ARCHITECTURE_SECTIONS}}
    try:
        cfg = config_from_dict(upgrade_renamed_keys(sections), str(path))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    stated = data.get("parameterisation")
    if stated is not None and stated != PARAMETERISATIONS[cfg.model.time_conditioning]:
        raise CheckpointError(
            f"{path}: parameterisation {stated!r} contradicts model.time_conditioning={cfg.model.time_conditioning}"
        )
    return cfg


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors of an export folder, on the CPU; a missing or corrupt file names itself."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot be loaded ({' '.join(str(err).split())})") from None
