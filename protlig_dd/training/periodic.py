"""Periodic work of the training loop: validation of the likelihood bound and sample dumps."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import torch

from protlig_dd.data.fasta_writer import write_fasta
from protlig_dd.data.loader import eval_batches
from protlig_dd.data.sequence_set import SequenceSet
from protlig_dd.diffusion.likelihood import likelihood_bound
from protlig_dd.evaluation.metrics import max_homopolymer
from protlig_dd.generation import draw_lengths, generate
from protlig_dd.model.score_function import make_score_fn
from protlig_dd.training.distributed import all_reduce_sum
from protlig_dd.training.train_state import mix_seed

if TYPE_CHECKING:
    from protlig_dd.training.loop import Trainer

_EVAL_STREAM = 1  # mix_seed salt: validation noise is the same at every validation (common random numbers)
_SAMPLE_STREAM = 2


def _eval_weights(trainer: Trainer) -> contextlib.AbstractContextManager:
    if trainer.ema is not None and trainer.cfg.eval.use_ema:
        return trainer.ema.applied_to(trainer.model)
    return contextlib.nullcontext(trainer.model)


def validate(trainer: Trainer, sequences: SequenceSet) -> dict[str, float]:
    """Likelihood bound on (the first ``eval.num_sequences`` of) ``sequences``, over all ranks.

    Each rank scores every world_size-th batch; sums are reduced, so every rank returns the same
    numbers. Uses EMA weights when configured. Training RNG is untouched (own generator).
    """
    cfg, info = trainer.cfg, trainer.info
    limit = cfg.eval.num_sequences or None
    samples = cfg.eval.samples_per_sequence
    # Antithetic pairs need two pairs for a standard error; with fewer draws use plain ones.
    antithetic = samples % 2 == 0 and samples >= 4
    generator = torch.Generator(device=trainer.device)
    # (sum of bounds, sum of residues, sum of variances, number of sequences)
    totals = torch.zeros(4, dtype=torch.float64, device=trainer.device)
    was_training = trainer.model.training
    with _eval_weights(trainer) as model:
        model.eval()
        batches = eval_batches(
            sequences,
            max_length=cfg.model.max_length,
            batch_size=cfg.eval.batch_size,
            pad_id=trainer.alphabet.pad_id,
            limit=limit,
        )
        for index, (batch, _) in enumerate(batches):
            if index % info.world_size != info.rank:
                continue
            # Seeded per batch: the same draws at every validation and for any number of processes.
            generator.manual_seed(mix_seed(cfg.training.seed, _EVAL_STREAM, index))
            needs_mask = batch.has_padding_or_packing()
            batch = batch.to(trainer.device)
            score = make_score_fn(
                model,
                batch.segment_ids if needs_mask else None,
                batch.positions if needs_mask else None,
                trainer.precision,
                trainer.device,
            )
            result = likelihood_bound(
                score, trainer.graph, trainer.noise, batch, samples, generator=generator, antithetic=antithetic
            )
            variance = result.stderr**2  # NaN (unknown) when a sequence had a single Monte-Carlo unit
            totals += torch.stack(
                [
                    result.bound.sum(),
                    result.num_residues.sum().double(),
                    variance.sum(),
                    torch.tensor(float(result.bound.numel()), dtype=torch.float64, device=trainer.device),
                ]
            )
    trainer.model.train(was_training)
    all_reduce_sum(totals, info)
    bound_sum, residues, variance_sum, count = (float(v) for v in totals.cpu())
    nll = bound_sum / max(residues, 1.0)
    nll_stderr = math.sqrt(variance_sum) / max(residues, 1.0)
    ppl = math.exp(nll)
    return {
        "val_nll_per_residue": nll,
        "val_nll_stderr": nll_stderr,
        "val_ppl_bound": ppl,
        "val_ppl_bound_stderr": ppl * nll_stderr,
        "val_sequences": int(count),
        "val_residues": int(residues),
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


def sample_during_training(trainer: Trainer) -> dict[str, float]:
    """Generate ``sampling.num_samples`` sequences with EMA weights; write samples/step_N.fasta."""
    cfg = trainer.cfg
    step = trainer.state.step
    generator = torch.Generator(device=trainer.device)
    generator.manual_seed(mix_seed(cfg.training.seed, _SAMPLE_STREAM, step))
    histogram = trainer.splits.summary.length_histogram
    if cfg.sampling.length > 0:
        lengths = [min(cfg.sampling.length, cfg.model.max_length)] * cfg.sampling.num_samples
    else:
        lengths = draw_lengths(histogram, cfg.sampling.num_samples, cfg.model.max_length, generator)
    was_training = trainer.model.training
    with _eval_weights(trainer) as model:
        model.eval()
        result = generate(
            model,
            trainer.graph,
            trainer.noise,
            trainer.alphabet,
            lengths=lengths,
            steps=cfg.sampling.steps,
            predictor=cfg.sampling.predictor,
            denoise=cfg.sampling.denoise,
            generator=generator,
            precision=trainer.precision,
        )
    trainer.model.train(was_training)
    out_dir = trainer.work_dir / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = [
        f"step{step}_sample{i} length={len(s)} steps={cfg.sampling.steps} predictor={cfg.sampling.predictor}"
        for i, s in enumerate(result.sequences)
    ]
    write_fasta(out_dir / f"step_{step:08d}.fasta", result.sequences, headers)
    return sequence_statistics(result.sequences, trainer.splits.summary.residue_frequencies, trainer.alphabet.residues)
