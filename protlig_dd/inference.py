"""Load a trained model for inference: the small Python API behind the CLIs.

    >>> from protlig_dd.inference import load_model
    >>> loaded = load_model("runs/quickstart")              # a run dir (latest checkpoint) or a step folder
    >>> loaded = load_model("exports/quickstart")           # an export folder (protlig-dd export)
    >>> loaded = load_model("someone/protlig-small@v1")     # a Hugging Face Hub repo id (protlig_dd.hub)
    >>> result = loaded.sample(lengths=[120, 200], steps=128)
    >>> print(result.sequences)

A checkpoint folder and an export folder are self-contained: config, alphabet and training length
histogram are inside, so nothing else is needed.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protlig_dd.config import Config
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.label_pipeline import term_ancestors
from protlig_dd.data.labels import LabelVocabulary, UnknownLabelError
from protlig_dd.diffusion.graphs import Graph
from protlig_dd.diffusion.guidance import Guidance
from protlig_dd.diffusion.noise import NoiseSchedule
from protlig_dd.generation import GenerationResult, draw_lengths, generate
from protlig_dd.hub import MODEL_REFERENCE_HELP, ModelSource, resolve_model
from protlig_dd.model.ema import EMA
from protlig_dd.model.precision import PRECISIONS, compile_supported, resolve_precision
from protlig_dd.model.transformer import SEDDTransformer
from protlig_dd.model_folder import WEIGHTS_FILE, config_of, read_model_config, read_weights
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training.builders import build_diffusion, build_model
from protlig_dd.training.distributed import resolve_device


@dataclass
class LoadedModel:
    """A model ready for sampling and scoring, with everything its checkpoint carried."""

    model: SEDDTransformer  # in eval mode, EMA weights loaded when the checkpoint has them
    graph: Graph
    noise: NoiseSchedule
    alphabet: Alphabet
    config: Config
    checkpoint: Path  # the checkpoint folder or export folder the weights came from
    step: int
    uses_ema: bool
    precision: str
    length_histogram: dict[str, list[int]]
    residue_frequencies: np.ndarray  # (N,) unigram frequencies of the training residues
    meta: dict[str, Any]
    # What sampling and scoring call: ``model`` itself, or torch.compile(model) (load_model(compile=True)).
    network: torch.nn.Module
    source: ModelSource | None = None  # the name it was loaded by and where that resolved to

    @property
    def compiled(self) -> bool:
        return self.network is not self.model

    def label_ids(self, labels: Sequence[str]) -> list[int]:
        """Ids of ``labels`` in the model's vocabulary, for ``--label``, closed upwards as in training
        (each label's ancestors added when the model was trained with ``labels.add_ancestors``).
        UnknownLabelError naming the label and close ones, or naming the checkpoint when the model has
        no labels at all."""
        vocabulary = self.label_vocabulary
        if vocabulary is None:
            if labels:
                raise UnknownLabelError(
                    f"{self.checkpoint}: this model was trained without labels; it cannot take --label"
                )
            return []
        ids = [vocabulary.lookup(label) for label in labels]  # unknown labels fail here, by name
        return vocabulary.encode(vocabulary.closed(labels)) if ids else []

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int:
        return self.config.model.max_length

    def generator(self, seed: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    @functools.cached_property
    def label_vocabulary(self) -> LabelVocabulary | None:
        """The labels the model was trained with (None: an unconditional model). A model trained with
        ancestors added before its vocabulary recorded them gets them from its term graph."""
        labels = self.meta.get("data_summary", {}).get("labels")
        if not labels:
            return None
        vocabulary = LabelVocabulary.from_dict(labels)
        settings = self.config.labels
        if vocabulary.ancestors is None and settings.add_ancestors:
            vocabulary = vocabulary.with_ancestors(term_ancestors(settings))
        return vocabulary

    def sample(
        self,
        *,
        lengths: list[int] | None = None,
        num: int | None = None,
        templates: torch.Tensor | None = None,
        steps: int | None = None,
        predictor: str | None = None,
        denoise: bool | None = None,
        seed: int = 0,
        batch_size: int = 64,
        on_chunk: Callable[[int], None] | None = None,
        labels: Sequence[str] = (),
        guidance: float = 0.0,
        guidance_schedule: str = "constant",
        cache: bool = True,
    ) -> GenerationResult:
        """Generate sequences: given ``lengths``, ``num`` lengths drawn from the training histogram,
        or ``templates`` (see protlig_dd.diffusion.templates). Defaults come from the sampling config;
        ``on_chunk(num_rows)`` is called as chunks finish (progress bars). ``labels`` (e.g. GO ids)
        condition every sequence, ``guidance`` W > 0 guides toward them (classifier-free guidance);
        no labels and W = 0 is unconditional sampling."""
        label_ids = self.label_ids(labels)
        conditioning = Guidance(guidance, guidance_schedule)
        if conditioning.active and not label_ids:
            raise ValueError("--guidance needs at least one --label")
        generator = self.generator(seed)
        if lengths is None and templates is None:
            if num is None:
                raise ValueError("sample: give lengths, num or templates")
            lengths = draw_lengths(self.length_histogram, num, self.max_length, generator)
        return generate(
            self.network,
            self.graph,
            self.noise,
            self.alphabet,
            lengths=lengths,
            templates=templates,
            steps=steps or self.config.sampling.steps,
            predictor=predictor or self.config.sampling.predictor,
            denoise=self.config.sampling.denoise if denoise is None else denoise,
            generator=generator,
            precision=self.precision,
            batch_size=batch_size,
            on_chunk=on_chunk,
            cache=cache,
            labels=None
            if not label_ids
            else [label_ids] * (len(lengths) if lengths is not None else templates.shape[0]),
            guidance=conditioning,
        )


def _read_config(source: ModelSource) -> tuple[Config, dict[str, Any]]:
    """(config, meta): meta.json of a checkpoint, or config.json of an export (the same key names)."""
    if source.kind == "export":
        data = read_model_config(source.folder)
        return config_of(data, source.folder), data
    meta = ckpt.read_meta(source.folder)
    return ckpt.read_config(source.folder), meta


def _read_weights(source: ModelSource, meta: dict[str, Any], use_ema: bool) -> tuple[dict[str, Any], bool, Path]:
    """(weights, whether they are the EMA ones, the file they came from, named in errors)."""
    if source.kind == "export":  # one set of weights; config.json says which
        return read_weights(source.folder), meta.get("weights") == "ema", source.folder / WEIGHTS_FILE
    path = source.folder / "model.pt"
    state = ckpt.load_file(path)
    has_ema = "ema" in state and use_ema
    try:
        return (EMA.model_state_dict(state["ema"]) if has_ema else state["model"]), has_ema, path
    except (KeyError, ValueError) as err:
        raise ckpt.CheckpointError(f"{path}: no model weights ({err})") from None


def load_model_config(path: str | Path) -> tuple[Config, ModelSource]:
    """The run config of a named model (see ``load_model``) and where it is, without reading weights."""
    source = resolve_model(path)
    return _read_config(source)[0], source


def load_model(
    path: str | Path,
    device: str = "auto",
    precision: str = "auto",
    use_ema: bool = True,
    compile: bool = False,
) -> LoadedModel:
    """Load a model by name onto ``device``: a run dir (its latest complete checkpoint), a checkpoint
    folder, an export folder or a Hugging Face Hub repo id ``user/name[@revision]`` (protlig_dd.hub).

    ``use_ema``: the EMA weights of a checkpoint when it has them (an export holds one set, EMA
    unless exported with --raw-weights). ``compile``: sample and score through
    ``torch.compile(model)``. Inductor fuses the elementwise work around the matmuls (1.2-1.8x faster
    sampling on a CPU); each new batch shape costs a compilation (seconds to tens of seconds, cached
    on disk), so it pays on long jobs. Needs a C++ compiler on CPU; not available on MPS (ValueError).
    """
    torch_device = resolve_device(device)
    # Before reading (or downloading) the weights: a large model should not load only to be refused.
    if compile and not compile_supported(torch_device):
        raise ValueError(f"compile: torch.compile is not supported on {torch_device}; run without it")
    source = resolve_model(path)
    cfg, meta = _read_config(source)
    alphabet = Alphabet.from_dict(meta["alphabet"])
    weights, uses_ema, weights_file = _read_weights(source, meta, use_ema)
    labels = meta.get("data_summary", {}).get("labels")
    model = build_model(cfg, alphabet, num_labels=len(labels["terms"]) if labels else 0)
    try:
        model.load_state_dict(weights)
    except (KeyError, RuntimeError, ValueError) as err:
        raise ckpt.CheckpointError(f"{weights_file}: does not fit the model of its config ({err})") from None
    model.to(torch_device).eval()
    graph, noise = build_diffusion(cfg, alphabet)
    summary = meta.get("data_summary", {})
    return LoadedModel(
        model=model,
        graph=graph,
        noise=noise,
        alphabet=alphabet,
        config=cfg,
        checkpoint=source.folder,
        step=int(meta["step"]),
        uses_ema=uses_ema,
        precision=resolve_precision(precision, torch_device),
        length_histogram=summary.get("length_histogram", {"lengths": [], "counts": []}),
        residue_frequencies=np.asarray(summary.get("residue_frequencies", []), dtype=np.float64),
        meta=meta,
        network=torch.compile(model) if compile else model,
        source=source,
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The --checkpoint, --device, --precision and --compile options of the sample, score and evaluate CLIs."""
    parser.add_argument("--checkpoint", required=True, metavar="MODEL", help=MODEL_REFERENCE_HELP)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile: faster after a one-off compilation per batch shape",
    )


def load_model_from_args(args: argparse.Namespace) -> LoadedModel:
    """load_model with the options of ``add_model_arguments``."""
    return load_model(args.checkpoint, device=args.device, precision=args.precision, compile=args.compile)
