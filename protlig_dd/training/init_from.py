"""Start a training run from another model's weights: ``training.init_from`` (the entry point's
``--init-from MODEL``), for fine-tuning.

The model is named as ``load_model`` names it: a run dir, a checkpoint folder, an export folder or
a Hub repo id ``user/name[@revision]``; its EMA weights are used when it has them. The run itself is
new: a new optimizer, learning-rate schedule and step counter, and the EMA starts from the loaded
weights. It is used only when a run starts: a run directory with a checkpoint resumes from that.

The model must have the architecture of the run's config. Every key of the model, graph and noise
sections must match except those in ``ADJUSTABLE_KEYS``: ``model.max_length`` (rotary positions
need no table of fixed size, so a model trained on rows of 128 fine-tunes on rows of 512),
``model.dropout`` (training only) and ``model.fused_kernels`` (a kernel choice). A mismatch is a
ConfigError naming each differing key; ``--set`` can make the config match.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from protlig_dd.config import Config, ConfigError, apply_overrides, config_from_dict
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.labels import LabelVocabulary
from protlig_dd.inference import LoadedModel, load_model, load_model_config
from protlig_dd.model.ema import EMA
from protlig_dd.training.checkpoint import ARCHITECTURE_SECTIONS, TrainingCheckpoint
from protlig_dd.training.components import Components
from protlig_dd.training.distributed import DistInfo, barrier
from protlig_dd.training.parallel import load_full_model_state

logger = logging.getLogger(__name__)

# Keys of the architecture sections that may differ between the model and the run's config.
ADJUSTABLE_KEYS = frozenset({"model.max_length", "model.dropout", "model.fused_kernels"})


@dataclass
class InitialModel:
    """The weights a run starts from, on the host, and where they came from."""

    weights: dict[str, torch.Tensor]  # full state dict of the model (EMA weights when it had them)
    record: dict[str, Any]  # provenance: the name, where it resolved to, its step and which weights
    label_vocabulary: LabelVocabulary | None = None  # the model's labels: kept, so its label ids keep their meaning


def _flat_architecture(cfg: Config) -> dict[str, Any]:
    sections = cfg.to_dict()
    return {f"{name}.{key}": value for name in ARCHITECTURE_SECTIONS for key, value in sections[name].items()}


def architecture_differences(model_cfg: Config, run_cfg: Config) -> list[str]:
    """'section.key: model X, config Y' for every architecture key that differs and must not."""
    model_keys, run_keys = _flat_architecture(model_cfg), _flat_architecture(run_cfg)
    return [
        f"{key}: model {value!r}, config {run_keys[key]!r}"
        for key, value in model_keys.items()
        if key not in ADJUSTABLE_KEYS and run_keys[key] != value
    ]


def check_fits(loaded: LoadedModel, cfg: Config, reference: str) -> None:
    """ConfigError naming the differing keys unless ``loaded`` has the architecture of ``cfg``."""
    diffs = architecture_differences(loaded.config, cfg)
    if loaded.alphabet.to_dict() != Alphabet().to_dict():
        diffs.append(f"alphabet: model {loaded.alphabet.to_dict()}, training {Alphabet().to_dict()}")
    if diffs:
        raise ConfigError(
            f"--init-from {reference}: the model does not match the config ({'; '.join(diffs)}); "
            "make them match with --set section.key=value or use the model's own config (omit --config)"
        )


def _load(cfg: Config) -> InitialModel:
    reference = cfg.training.init_from
    loaded = load_model(reference, device="cpu", precision="fp32")
    check_fits(loaded, cfg, reference)
    record = {
        **loaded.source.describe(),
        "step": loaded.step,
        "weights": "ema" if loaded.uses_ema else "trained",
        # A model that was itself fine-tuned: keep the chain.
        "initialized_from": loaded.meta.get("initialized_from"),
    }
    return InitialModel(weights=loaded.model.state_dict(), record=record, label_vocabulary=loaded.label_vocabulary)


def load_initial_model(cfg: Config, info: DistInfo, *, resuming: bool) -> InitialModel | None:
    """The weights ``training.init_from`` names, checked against ``cfg``; None when it is empty or the
    run resumes. Rank 0 resolves first (a Hub model is downloaded once), then the other ranks read
    the cached copy."""
    if not cfg.training.init_from:
        return None
    if resuming:
        if info.is_main:
            logger.info("resuming: training.init_from (%s) is used only when a run starts", cfg.training.init_from)
        return None
    initial = _load(cfg) if info.is_main else None
    barrier(info)
    if initial is None:
        initial = _load(cfg)
    return initial


def initialize(components: Components, initial: InitialModel) -> dict[str, Any]:
    """Load ``initial`` into the freshly built run and restart its EMA from those weights; returns the
    provenance record for the checkpoints' meta.json. The optimizer, schedule and step counter are
    the new run's (nothing of the model's training state is read)."""
    c = components
    load_full_model_state(c.model, initial.weights)  # strict; sharded or not
    if c.ema is not None:
        c.ema = EMA(c.model, c.ema.decay, warmup=c.ema.warmup)
    logger.info(
        "initialised from %s (step %d, %s weights): new optimizer, schedule and step counter",
        initial.record["model"],
        initial.record["step"],
        initial.record["weights"],
    )
    return initial.record


def starting_config(reference: str, overrides: list[str]) -> Config:
    """The config of a run started from ``reference`` without --config: the model's own, with
    ``data.cache_dir`` reset (a cache folder of the machine that trained it means nothing here),
    then the ``--set`` overrides."""
    cfg, _ = load_model_config(reference)
    data = cfg.to_dict()
    data["data"]["cache_dir"] = ""
    return config_from_dict(apply_overrides(data, overrides), f"the config of {reference} (+ --set overrides)")


def kept_label_vocabulary(saved: TrainingCheckpoint | None, initial: InitialModel | None) -> LabelVocabulary | None:
    """The label vocabulary a run must keep: the resumed checkpoint's, else the starting model's."""
    if saved is not None:
        labels = saved.meta.get("data_summary", {}).get("labels")
        return LabelVocabulary.from_dict(labels) if labels else None
    return initial.label_vocabulary if initial is not None else None
