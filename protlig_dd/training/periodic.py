"""Periodic work of the training loop: validation of the likelihood bound and sample dumps.

Plain functions of what they need: the model to run (already holding the weights to use, in eval
mode: see ``components.evaluation_weights``), the diffusion, the data and the settings.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from protlig_dd.config import EvalConfig, SamplingConfig
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.fasta_writer import write_fasta
from protlig_dd.data.loader import eval_batches
from protlig_dd.data.sequence_set import SequenceSet
from protlig_dd.diffusion.graphs import Graph
from protlig_dd.diffusion.likelihood import bound_totals, summary_from_totals
from protlig_dd.diffusion.noise import NoiseSchedule
from protlig_dd.evaluation.metrics import max_homopolymer
from protlig_dd.generation import draw_lengths, generate
from protlig_dd.model.score_function import bound_batch
from protlig_dd.training.distributed import DistInfo, all_reduce_sum
from protlig_dd.training.train_state import mix_seed

_EVAL_STREAM = 1  # mix_seed salt: validation noise is the same at every validation (common random numbers)
_SAMPLE_STREAM = 2


def validate(
    model: torch.nn.Module,
    graph: Graph,
    noise: NoiseSchedule,
    sequences: SequenceSet,
    *,
    settings: EvalConfig,
    max_length: int,
    pad_id: int,
    seed: int,
    precision: str,
    info: DistInfo,
) -> dict[str, float]:
    """Likelihood bound of ``model`` on (the first ``settings.num_sequences`` of) ``sequences``.

    Each rank scores every world_size-th batch and the bound totals are summed over ranks, so every
    rank returns the same numbers. Noise is seeded per batch from ``seed``: the same draws at every
    validation and for any number of processes; the training RNG is untouched (own generator).
    """
    generator = torch.Generator(device=info.device)
    totals = torch.zeros(4, dtype=torch.float64, device=info.device)  # see likelihood.bound_totals
    batches = eval_batches(
        sequences,
        max_length=max_length,
        batch_size=settings.batch_size,
        pad_id=pad_id,
        limit=settings.num_sequences or None,
    )
    for index, (batch, _) in enumerate(batches):
        if index % info.world_size != info.rank:
            continue
        generator.manual_seed(mix_seed(seed, _EVAL_STREAM, index))
        result = bound_batch(
            model, graph, noise, batch, settings.samples_per_sequence, precision, info.device, generator
        )
        totals += bound_totals(result)
    summary = summary_from_totals(all_reduce_sum(totals, info))
    return {
        "val_nll_per_residue": summary.nll_per_residue,
        "val_nll_stderr": summary.nll_stderr,
        "val_ppl_bound": summary.ppl_bound,
        "val_ppl_bound_stderr": summary.ppl_stderr,
        "val_sequences": summary.num_sequences,
        "val_residues": summary.num_residues,
    }


def sequence_statistics(sequences: list[str], reference_frequencies: np.ndarray, residues: str) -> dict[str, float]:
    """Simple statistics of generated sequences: length, composition KL to the data, repeats."""
    counts = Counter("".join(sequences))
    total = sum(counts.values())
    kl = float("nan")
    if total:
        sample_freq = np.array([counts.get(letter, 0) / total for letter in residues])
        ref = np.asarray(reference_frequencies, dtype=np.float64)
        support = sample_freq > 0
        # KL(samples || data), with the data's frequencies floored so unseen letters stay finite.
        kl = float(np.sum(sample_freq[support] * np.log(sample_freq[support] / np.maximum(ref[support], 1e-8))))
    return {
        "sample_mean_length": float(np.mean([len(s) for s in sequences])) if sequences else 0.0,
        "sample_composition_kl": kl,
        "sample_max_homopolymer": float(max((max_homopolymer(s) for s in sequences), default=0)),
        "sample_distinct_fraction": len(set(sequences)) / max(len(sequences), 1),
    }


def sample_during_training(
    model: torch.nn.Module,
    graph: Graph,
    noise: NoiseSchedule,
    alphabet: Alphabet,
    *,
    settings: SamplingConfig,
    step: int,
    seed: int,
    max_length: int,
    length_histogram: dict[str, list[int]],
    residue_frequencies: np.ndarray,
    precision: str,
    device: torch.device,
    out_dir: Path,
) -> dict[str, float]:
    """Generate ``settings.num_samples`` sequences with ``model`` into ``out_dir/step_N.fasta``;
    returns their statistics. Seeded by ``seed`` and the step, on a generator of its own."""
    generator = torch.Generator(device=device)
    generator.manual_seed(mix_seed(seed, _SAMPLE_STREAM, step))
    if settings.length > 0:
        lengths = [min(settings.length, max_length)] * settings.num_samples
    else:
        lengths = draw_lengths(length_histogram, settings.num_samples, max_length, generator)
    result = generate(
        model,
        graph,
        noise,
        alphabet,
        lengths=lengths,
        steps=settings.steps,
        predictor=settings.predictor,
        denoise=settings.denoise,
        generator=generator,
        precision=precision,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = [
        f"step{step}_sample{i} length={len(s)} steps={settings.steps} predictor={settings.predictor}"
        for i, s in enumerate(result.sequences)
    ]
    write_fasta(out_dir / f"step_{step:08d}.fasta", result.sequences, headers)
    return sequence_statistics(result.sequences, residue_frequencies, alphabet.residues)
