"""The evaluation report of a trained model: report.json, report.md and PNG plots in one folder.

Sections (every number in report.json, the definitions beside them under "definitions"):

* validation: the likelihood bound on held-out sequences (default: the embedded random UniRef50
  validation sample), as perplexity per residue, beside two baselines: uniform over the 20 amino
  acids (perplexity 20) and the unigram composition of the training data (add-one smoothed) applied
  to the same held-out residues; and the shuffled control (evaluation.shuffle_control): the same
  held-out sequences with their residues shuffled, scored with the same noise draws, which tells a
  model that uses residue order from one that has learned composition only.
* samples: generated sequences (``--samples`` FASTA, or generated here with lengths drawn from the
  training histogram): amino-acid composition against the held-out data, the training unigram and
  EvoDiff's UniRef50 test composition (KL divergences and a bar plot); lengths; diversity (mean
  pairwise identity); novelty (highest identity to a training sequence); low-complexity fraction
  and homopolymer runs. The same metrics computed on held-out real sequences are given as the
  point of comparison.
* training: loss and validation bound against step, from the run's metrics.jsonl.

Nothing here is a structure metric: no structure predictor is run.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from protlig_dd.data.alphabet import STANDARD_AMINO_ACIDS
from protlig_dd.data.cache import read_meta as read_cache_meta
from protlig_dd.data.fasta_writer import write_fasta
from protlig_dd.data.pipeline import (
    EMBEDDED_COMPOSITION_REFERENCE,
    embedded_train_specs,
    embedded_validation_specs,
    open_prepared_source,
    source_spec,
)
from protlig_dd.data.readers import Record, SourceError, SourceSpec, iter_records
from protlig_dd.data.unigram import unigram_perplexity
from protlig_dd.diffusion.likelihood import BOUND_NOTE
from protlig_dd.evaluation import metrics, plots
from protlig_dd.evaluation.conditional import conditional_section
from protlig_dd.evaluation.options import EvaluationOptions as EvaluationOptions  # re-exported
from protlig_dd.evaluation.report_markdown import write_markdown
from protlig_dd.evaluation.shuffle_control import SHUFFLE_CONTROL_NOTE, shuffle_control
from protlig_dd.inference import LoadedModel
from protlig_dd.scoring import encode_records, read_sequences, score_tokens

logger = logging.getLogger(__name__)

DEFINITIONS = {
    "ppl_bound": "exp(bound on -log p(x | length) per residue): an upper bound on perplexity "
    f"({BOUND_NOTE}). Sequences longer than the model's max_length are scored in consecutive "
    "windows (bounds summed).",
    "uniform_20_ppl": "perplexity of a uniform distribution over the 20 standard amino acids",
    "train_unigram_ppl": "perplexity of the held-out residues under the training residue frequencies "
    "(add-one smoothed): what composition alone achieves",
    "shuffle_control": SHUFFLE_CONTROL_NOTE,
    "composition": "frequencies of the 20 standard amino acids (other letters left out, renormalised); "
    "KL(p || q) in nats",
    "identity": "identical pairs in an optimal alignment / length of the shorter sequence; global "
    f"alignment with free end gaps, BLOSUM62, gap open {metrics.GAP_OPEN} extend {metrics.GAP_EXTEND}",
    "diversity": "mean identity over all pairs of a seeded random subsample (lower = more diverse)",
    "novelty": "highest identity of each sequence to the training reference; only the best k-mer "
    "prefilter candidates are aligned, so this is approximate (a lower bound on the true highest identity)",
    "low_complexity_fraction": "approximate (SEG-like): fraction of residues inside a "
    f"{metrics.LOW_COMPLEXITY_WINDOW}-residue window with Shannon entropy below "
    f"{metrics.LOW_COMPLEXITY_BITS} bits (SEG's trigger windows, without SEG's extension step)",
    "max_homopolymer": "longest run of one repeated letter in a sequence",
}


# ----------------------------------------------------------------------------------------- inputs


def load_heldout(options: EvaluationOptions) -> tuple[str, list[Record]]:
    """(description, records) of the held-out set, limited to ``max_data_sequences`` when set."""
    if options.data:
        description, records = options.data, read_sequences(options.data)
    else:
        description = "embedded UniRef50 validation sample (x000.csv, x001.csv)"
        records = [r for spec in embedded_validation_specs() for r in iter_records(spec)]
    if options.max_data_sequences:
        records = records[: options.max_data_sequences]
        description += f" (first {len(records)} sequences)"
    return description, records


def training_reference(loaded: LoadedModel, options: EvaluationOptions) -> tuple[str, list[str]]:
    """(description, sequences): the first ``max_reference_sequences`` of the training source.

    The source is ``--train-data``, else the run's ``data.source`` (a file, dataset or prepared cache,
    all of it: a hash-split validation part is included), else the embedded training sample.
    """
    limit = options.max_reference_sequences
    name = options.train_data or loaded.config.data.source
    if not name:
        (spec,) = embedded_train_specs(loaded.config.data.embedded_train)
        name = f"embedded training set {loaded.config.data.embedded_train}"
    elif read_cache_meta(name) is not None:  # a cache made by `python -m protlig_dd.data.prepare`
        cache = open_prepared_source(Path(name), loaded.alphabet)
        count = min(limit, len(cache))
        letters = np.frombuffer(loaded.alphabet.residues.encode("ascii"), dtype=np.uint8)
        offsets = np.asarray(cache.offsets[: count + 1])  # (count + 1,) sequence i is [o_i, o_i+1)
        text = letters[np.asarray(cache.tokens[: int(offsets[-1])])].tobytes().decode("ascii")
        sequences = [text[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        return f"{name} (first {count} sequences)", sequences
    else:
        spec = source_spec(loaded.config.data, name) if not options.train_data else SourceSpec(name)
    try:
        records = list(itertools.islice(iter_records(spec), limit))
    except SourceError as err:
        raise SourceError(f"novelty reference (training data): {err}; pass --train-data PATH") from None
    return f"{name} (first {len(records)} sequences)", [r.sequence.upper() for r in records]


def generate_samples(loaded: LoadedModel, options: EvaluationOptions, path: Path) -> list[str]:
    """Generate ``num_samples`` sequences (lengths from the training histogram) into ``path`` (FASTA)."""
    steps = options.steps or loaded.config.sampling.steps
    predictor = loaded.config.sampling.predictor
    with tqdm(
        total=options.num_samples, unit="seq", desc="sampling", file=sys.stderr, disable=not options.progress
    ) as bar:
        result = loaded.sample(
            num=options.num_samples,
            steps=steps,
            predictor=predictor,
            seed=options.seed,
            batch_size=options.batch_size,
            on_chunk=bar.update,
        )
    headers = [
        f"sample{i + 1} length={len(s)} steps={steps} predictor={predictor} seed={options.seed}"
        for i, s in enumerate(result.sequences)
    ]
    write_fasta(path, result.sequences, headers)
    return result.sequences


def _unigram_baseline(loaded: LoadedModel, tokens: list[np.ndarray]) -> float:
    """The training-unigram perplexity of the held-out residues (data.unigram: add-one smoothed)."""
    summary = loaded.meta.get("data_summary", {})
    if "train_residues" not in summary or len(loaded.residue_frequencies) != loaded.alphabet.num_residues:
        raise ValueError(f"{loaded.checkpoint}/meta.json: data_summary lacks the training residue statistics")
    counts = np.bincount(np.concatenate(tokens), minlength=loaded.alphabet.num_residues)
    return unigram_perplexity(loaded.residue_frequencies, summary["train_residues"], counts)


# ----------------------------------------------------------------------------------------- sections


def validation_section(
    loaded: LoadedModel, description: str, records: list[Record], options: EvaluationOptions
) -> dict[str, Any]:
    """The bound on the held-out set, with the uniform-20 and training-unigram baselines."""
    tokens = encode_records(records, loaded.alphabet)
    ids = [r.id for r in records]
    k = options.samples_per_sequence or loaded.config.eval.samples_per_sequence
    settings = {"samples_per_sequence": k, "batch_size": options.batch_size, "seed": options.seed}
    total = sum(len(t) for t in tokens) * (2 if options.shuffle_control else 1)
    with tqdm(
        total=total,
        unit="res",
        unit_scale=True,
        desc="scoring",
        file=sys.stderr,
        disable=not options.progress,
    ) as bar:
        report = score_tokens(loaded, tokens, ids, on_batch=bar.update, **settings)
        control: dict[str, Any] = {"computed": False, "reason": "switched off (--no-shuffle-control)"}
        if options.shuffle_control:
            control = {
                "computed": True,
                **shuffle_control(loaded, tokens, ids, on_batch=bar.update, real=report, **settings).as_dict(),
            }
    return {
        "data": description,
        **report.summary_dict(),
        "baselines": {"uniform_20_ppl": 20.0, "train_unigram_ppl": _unigram_baseline(loaded, tokens)},
        "shuffle_control": control,
    }


def _composition_section(
    samples: list[str], data: list[str], loaded: LoadedModel
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    series = {
        "samples": metrics.composition(samples),
        "held-out data": metrics.composition(data),
        "training unigram": metrics.restrict_frequencies(loaded.residue_frequencies, loaded.alphabet.residues),
        "EvoDiff UniRef50 test": metrics.read_composition_reference(EMBEDDED_COMPOSITION_REFERENCE),
    }
    section = {
        "kl_samples_vs_data": metrics.kl_divergence(series["samples"], series["held-out data"]),
        "kl_samples_vs_train_unigram": metrics.kl_divergence(series["samples"], series["training unigram"]),
        "kl_samples_vs_evodiff_uniref50": metrics.kl_divergence(series["samples"], series["EvoDiff UniRef50 test"]),
        "kl_data_vs_evodiff_uniref50": metrics.kl_divergence(series["held-out data"], series["EvoDiff UniRef50 test"]),
        "kl_data_vs_train_unigram": metrics.kl_divergence(series["held-out data"], series["training unigram"]),
        "letters": STANDARD_AMINO_ACIDS,
        "frequencies": {name: [float(v) for v in freq] for name, freq in series.items()},
    }
    return section, series


def _identity_summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "fraction_at_least_0.5": float((values >= 0.5).mean()),
        "fraction_at_least_0.9": float((values >= 0.9).mean()),
    }


def _subsample(sequences: list[str], count: int, seed: int) -> list[str]:
    if len(sequences) <= count:
        return list(sequences)
    picks = np.random.default_rng(seed).choice(len(sequences), size=count, replace=False)
    return [sequences[i] for i in sorted(picks)]


def _complexity(sequences: list[str]) -> dict[str, float]:
    runs = np.array([metrics.max_homopolymer(s) for s in sequences])
    return {
        "low_complexity_fraction": metrics.low_complexity_fraction(sequences),
        "max_homopolymer_mean": float(runs.mean()),
        "max_homopolymer_max": int(runs.max()),
    }


def samples_section(
    samples: list[str],
    data: list[str],
    reference_description: str,
    reference: list[str],
    loaded: LoadedModel,
    options: EvaluationOptions,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of the generated sequences beside the same metrics of held-out data; and plot inputs."""
    composition, series = _composition_section(samples, data, loaded)
    section: dict[str, Any] = {
        "num_sequences": len(samples),
        "composition": composition,
        "length": {"samples": metrics.length_summary(samples), "data": metrics.length_summary(data)},
    }
    plot_inputs: dict[str, Any] = {"composition": series, "identity": {}}
    diversity = {}
    for name, sequences in (("samples", samples), ("data", data)):
        if len(sequences) < 2:
            diversity[name] = {"available": False, "reason": "needs at least 2 sequences"}
            continue
        logger.info("diversity of %s (pairwise identity)", name)
        diversity[name] = asdict(metrics.diversity(sequences, options.diversity_max_sequences, options.seed))
    section["diversity"] = diversity
    logger.info("novelty: k-mer index of %d training sequences", len(reference))
    index = metrics.KmerIndex(reference)
    novelty = {
        "reference": reference_description,
        "k": index.k,
        "candidates_aligned": options.novelty_candidates,
    }
    for name, sequences in (
        ("samples", samples),
        ("data", _subsample(data, options.novelty_max_data_sequences, options.seed)),
    ):
        if not sequences:
            continue
        logger.info("novelty of %d %s sequences", len(sequences), name)
        result = metrics.novelty(sequences, index, options.novelty_candidates)
        novelty[name] = {"num_sequences": len(sequences), **_identity_summary(result.max_identity)}
        plot_inputs["identity"][f"{name}: highest identity to training"] = result.max_identity
    section["novelty"] = novelty
    section["complexity"] = {"samples": _complexity(samples), "data": _complexity(data)}
    return section, plot_inputs


def training_section(checkpoint: Path) -> dict[str, Any]:
    """Loss and validation bound vs step from the run's metrics.jsonl (if the checkpoint sits in a run)."""
    run_dir = checkpoint.parent.parent
    path = run_dir / "metrics.jsonl"
    if checkpoint.parent.name != "checkpoints" or not path.is_file():
        return {"available": False, "reason": f"no metrics.jsonl at {path} (checkpoint outside its run dir)"}
    loss: dict[int, float] = {}
    validation: dict[int, tuple[float, float]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number}: not JSON ({err})") from None
        step = row.get("step")
        if not isinstance(step, int):
            raise ValueError(f"{path} line {number}: no integer 'step' in {line[:80]!r}")
        # A resumed run logs steps after its checkpoint again: the later row wins.
        if "loss" in row and isinstance(row["loss"], (int, float)):
            loss[step] = float(row["loss"])
        if isinstance(row.get("val_ppl_bound"), (int, float)):
            stderr = row.get("val_ppl_bound_stderr")
            validation[step] = (
                float(row["val_ppl_bound"]),
                float(stderr) if isinstance(stderr, (int, float)) else math.nan,
            )
    steps = sorted(validation)
    return {
        "available": True,
        "metrics_file": str(path),
        "loss": {"step": sorted(loss), "value": [loss[s] for s in sorted(loss)]},
        "validation_ppl_bound": {
            "step": steps,
            "value": [validation[s][0] for s in steps],
            "stderr": [validation[s][1] for s in steps],
        },
        "final_loss": loss[max(loss)] if loss else None,
        "final_validation_ppl_bound": validation[steps[-1]][0] if steps else None,
    }


# ----------------------------------------------------------------------------------------- output


def _json_safe(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _perplexity_references(validation: dict[str, Any]) -> dict[str, float]:
    """The bars beside the model's bound: both baselines, and the bound on the shuffled sequences."""
    references = {
        "uniform 20": validation["baselines"]["uniform_20_ppl"],
        "training unigram": validation["baselines"]["train_unigram_ppl"],
    }
    control = validation["shuffle_control"]
    if control["computed"]:
        references["shuffled (bound)"] = math.exp(control["shuffled_nll_per_residue"])
    return references


def _write_plots(
    report: dict[str, Any], plot_inputs: dict[str, Any], samples: list[str], data: list[str], out_dir: Path
) -> list[str]:
    val = report["validation"]
    written = [
        plots.plot_perplexity(
            out_dir / "perplexity.png",
            val["ppl_bound"],
            val["ppl_stderr"],
            _perplexity_references(val),
            f"held-out: {val['num_sequences']} sequences, {val['num_residues']} residues",
        ),
        plots.plot_composition(
            out_dir / "composition.png",
            STANDARD_AMINO_ACIDS,
            plot_inputs["composition"],
            "amino-acid composition (20 standard residues)",
        ),
        plots.plot_lengths(
            out_dir / "lengths.png",
            {"samples": [len(s) for s in samples], "held-out data": [len(s) for s in data]},
            "length distribution",
        ),
        plots.plot_identity(
            out_dir / "identity.png",
            plot_inputs["identity"],
            "novelty: highest identity to a training sequence (approximate)",
        ),
    ]
    training = report["training"]
    if training["available"]:
        written.append(
            plots.plot_training_curves(
                out_dir / "training_curves.png",
                (training["loss"]["step"], training["loss"]["value"]),
                (
                    training["validation_ppl_bound"]["step"],
                    training["validation_ppl_bound"]["value"],
                    training["validation_ppl_bound"]["stderr"],
                ),
                {"uniform 20": 20.0, "training unigram": val["baselines"]["train_unigram_ppl"]},
            )
        )
    return [p.name for p in written]


def evaluate(loaded: LoadedModel, out_dir: str | Path, options: EvaluationOptions) -> dict[str, Any]:
    """Write report.json, report.md and the plots into ``out_dir``; return the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_description, records = load_heldout(options)
    data = [r.sequence.upper() for r in records]
    if options.samples:
        samples_source = options.samples
        samples = [r.sequence.upper() for r in read_sequences(options.samples)]
    else:
        samples_source = f"{options.num_samples} sequences generated into {out_dir / 'samples.fasta'}"
        logger.info("generating %d sequences", options.num_samples)
        samples = generate_samples(loaded, options, out_dir / "samples.fasta")
    reference_description, reference = training_reference(loaded, options)
    logger.info("scoring %d held-out sequences", len(records))
    validation = validation_section(loaded, data_description, records, options)
    sample_metrics, plot_inputs = samples_section(samples, data, reference_description, reference, loaded, options)
    report: dict[str, Any] = {
        "checkpoint": str(loaded.checkpoint),
        "step": loaded.step,
        "uses_ema": loaded.uses_ema,
        "device": str(loaded.device),
        "precision": loaded.precision,
        "seed": options.seed,
        "samples_source": samples_source,
        "validation": validation,
        "samples": sample_metrics,
        "training": training_section(loaded.checkpoint),
        "definitions": DEFINITIONS,
    }
    if loaded.label_vocabulary is not None:
        report["conditional"] = conditional_section(loaded, options, out_dir)
    report["plots"] = _write_plots(report, plot_inputs, samples, data, out_dir)
    (out_dir / "report.json").write_text(json.dumps(_json_safe(report), indent=1) + "\n")
    write_markdown(report, out_dir / "report.md")
    return report
