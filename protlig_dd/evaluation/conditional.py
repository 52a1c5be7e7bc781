"""Does a label-conditioned model use its labels? Bounds under own, other and no labels, and the
sequence signatures of guided samples.

Label control: held-out labelled sequences are scored three times with the same seed (the same t
draws and masked positions: common random numbers), under their own labels, under the labels of
other held-out sequences (each sequence gets the set of another, a random derangement) and under
"no label". A model that uses its labels gives the own-label bound the lowest value; the
differences per residue (other - own, none - own) have the paired ratio standard error of the
shuffled control (evaluation.shuffle_control.paired_difference) and a z.

Label signatures: for a label such as GO:0016021 (integral component of membrane), guided samples,
unconditional samples of the same lengths and the real held-out members of the label are compared
on model-free statistics (evaluation.label_signatures: transmembrane-like segments, charge, K+R).
Real members are also cropped to the samples' lengths, since a model of max_length L generates at
most L residues and the statistics depend on length.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from protlig_dd.data.label_pipeline import read_labels
from protlig_dd.data.pipeline import embedded_train_specs
from protlig_dd.data.readers import Record, SourceSpec, iter_records
from protlig_dd.data.splits import assign_splits, hash_ids
from protlig_dd.evaluation.label_signatures import compare_signatures, crop_to_lengths
from protlig_dd.evaluation.options import EvaluationOptions
from protlig_dd.evaluation.shuffle_control import paired_difference
from protlig_dd.inference import LoadedModel
from protlig_dd.scoring import encode_records, score_tokens

LABEL_CONTROL_NOTE = (
    "held-out labelled sequences scored under their own labels, under the labels of other held-out "
    "sequences (a seeded derangement) and under no label, with the same noise draws (paired); "
    "differences in nats per residue, positive = the own labels make the sequence more likely; "
    "z = difference / standard error"
)


@dataclass
class LabelledSet:
    """Held-out sequences with the label names each carries (processed as in training)."""

    description: str
    records: list[Record]
    labels: list[list[str]]


@dataclass
class LabelControl:
    """Bounds per residue under own / other / no labels and the paired differences."""

    own_nll_per_residue: float
    other_nll_per_residue: float
    no_label_nll_per_residue: float
    other_minus_own: float
    other_minus_own_stderr: float
    other_minus_own_z: float
    none_minus_own: float
    none_minus_own_stderr: float
    none_minus_own_z: float
    num_sequences: int
    num_residues: int
    samples_per_sequence: int
    seed: int
    note: str = LABEL_CONTROL_NOTE

    def describe(self) -> str:
        return (
            f"own labels {self.own_nll_per_residue:.4f}, other labels {self.other_nll_per_residue:.4f}, "
            f"no label {self.no_label_nll_per_residue:.4f} nats/residue: other - own "
            f"{self.other_minus_own:+.4f} +- {self.other_minus_own_stderr:.4f} (z = {self.other_minus_own_z:.1f}), "
            f"none - own {self.none_minus_own:+.4f} +- {self.none_minus_own_stderr:.4f} "
            f"(z = {self.none_minus_own_z:.1f}) over {self.num_sequences} sequences"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def derangement(count: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point (count >= 2): sequence k gets the labels of perm[k]."""
    if count < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {count}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    perm = np.empty(count, dtype=np.int64)
    perm[order] = np.roll(order, -1)  # a single cycle through a random order: no fixed point
    return perm


def label_control(
    loaded: LoadedModel,
    heldout: LabelledSet,
    *,
    samples_per_sequence: int = 2,
    batch_size: int = 32,
    seed: int = 0,
    derangement_seed: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> LabelControl:
    """Score ``heldout`` under own, other and no labels with the same seed; sequences without a
    label the model knows are left out (they would score alike under own and no label)."""
    vocabulary = loaded.label_vocabulary
    if vocabulary is None:
        raise ValueError(f"{loaded.checkpoint}: the model was trained without labels")
    own = [vocabulary.encode(names) for names in heldout.labels]
    keep = [k for k, ids in enumerate(own) if ids]
    if len(keep) < 2:
        raise ValueError(f"{heldout.description}: fewer than 2 sequences carry labels the model knows")
    records = [heldout.records[k] for k in keep]
    own = [own[k] for k in keep]
    tokens = encode_records(records, loaded.alphabet)
    ids = [r.id for r in records]
    other = [own[j] for j in derangement(len(own), derangement_seed)]
    settings = {"samples_per_sequence": samples_per_sequence, "batch_size": batch_size, "seed": seed}
    reports = {
        name: score_tokens(loaded, tokens, ids, on_batch=on_batch, label_sets=sets, **settings)
        for name, sets in (("own", own), ("other", other), ("none", [[] for _ in own]))
    }
    lengths = np.array([s.length for s in reports["own"].scores], dtype=np.float64)
    nll = {name: np.array([s.nll for s in report.scores]) for name, report in reports.items()}
    other_diff, other_se = paired_difference(nll["own"], nll["other"], lengths)
    none_diff, none_se = paired_difference(nll["own"], nll["none"], lengths)
    return LabelControl(
        own_nll_per_residue=reports["own"].total.nll_per_residue,
        other_nll_per_residue=reports["other"].total.nll_per_residue,
        no_label_nll_per_residue=reports["none"].total.nll_per_residue,
        other_minus_own=other_diff,
        other_minus_own_stderr=other_se,
        other_minus_own_z=other_diff / other_se if other_se > 0 else math.nan,
        none_minus_own=none_diff,
        none_minus_own_stderr=none_se,
        none_minus_own_z=none_diff / none_se if none_se > 0 else math.nan,
        num_sequences=len(records),
        num_residues=int(lengths.sum()),
        samples_per_sequence=samples_per_sequence,
        seed=seed,
    )


def heldout_labelled(loaded: LoadedModel, data: str | None, labels_from: str | None, limit: int = 0) -> LabelledSet:
    """The held-out labelled sequences: ``data`` with labels from ``labels_from`` (header:KEY,
    column:NAME or a label table), or, for a model trained on the embedded Swiss-Prot set with
    ``data.embedded_validation: hash_split``, that run's own validation split with its labels."""
    cfg = loaded.config
    if data:
        if not labels_from:
            raise ValueError("--labelled-data needs --labels-from (header:KEY, column:NAME or a label table)")
        specs = [SourceSpec(data)]
        description = f"{data} (labels from {labels_from})"
        source = labels_from
        records = list(iter_records(specs[0]))
    elif not cfg.data.source and cfg.data.embedded_validation == "hash_split" and cfg.labels.enabled:
        specs = embedded_train_specs(cfg.data.embedded_train)
        all_records = list(iter_records(specs[0]))
        split = assign_splits(
            hash_ids(r.id.encode() for r in all_records), cfg.data.validation_fraction, cfg.data.test_fraction
        )
        records = [all_records[int(i)] for i in split.validation]
        description = (
            f"the run's held-out validation split: {len(records)} of {len(all_records)} embedded "
            f"{cfg.data.embedded_train} sequences by id hash, labels from {cfg.labels.source}"
        )
        source = cfg.labels.source
    else:
        raise ValueError(
            "no held-out labelled data: pass --labelled-data FILE --labels-from SOURCE "
            "(the run's own split is used only for embedded data with data.embedded_validation: hash_split)"
        )
    by_id = read_labels(cfg.labels, source, specs)
    labels = [by_id.get(r.id, []) for r in records]
    if not any(labels):
        raise ValueError(f"{source}: no id matches a sequence of {data or 'the held-out split'}")
    if limit:
        records, labels = records[:limit], labels[:limit]
        description += f" (first {len(records)})"
    return LabelledSet(description, records, labels)


def signature_comparison(
    loaded: LoadedModel,
    heldout: LabelledSet,
    label: str,
    *,
    guidance: Sequence[float],
    guidance_schedule: str = "constant",
    num_samples: int = 64,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    fasta_dir: Path | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Signature statistics of samples guided toward ``label`` at each weight in ``guidance``, of
    unconditional samples with the same lengths, and of the real held-out members of ``label``
    (full length and cropped to the samples' lengths). ``fasta_dir``: also write each sample set;
    ``on_chunk(num_rows)`` follows the sampling (progress bars)."""
    loaded.label_ids([label])  # unknown label: the error names it before any sampling
    members = [r.sequence.upper() for r, names in zip(heldout.records, heldout.labels, strict=True) if label in names]
    if not members:
        raise ValueError(f"{heldout.description}: no held-out sequence carries {label}")
    # Sample lengths follow the real members (capped at max_length), cycling when fewer than asked.
    lengths = [min(len(members[i % len(members)]), loaded.max_length) for i in range(num_samples)]
    settings = {"lengths": lengths, "steps": steps, "seed": seed, "batch_size": batch_size, "on_chunk": on_chunk}
    groups: dict[str, list[str]] = {"unconditional": loaded.sample(**settings).sequences}
    for weight in guidance:
        name = f"{label} W={weight:g}" + (f" ({guidance_schedule})" if guidance_schedule != "constant" else "")
        groups[name] = loaded.sample(
            **settings, labels=[label], guidance=weight, guidance_schedule=guidance_schedule
        ).sequences
    if fasta_dir is not None:
        from protlig_dd.data.fasta_writer import write_fasta  # local: only when writing

        fasta_dir.mkdir(parents=True, exist_ok=True)
        for name, sequences in groups.items():
            stem = name.replace(" ", "_").replace(":", "").replace("(", "").replace(")", "").replace("=", "")
            write_fasta(fasta_dir / f"{stem}.fasta", sequences, [f"{name} {i + 1}" for i in range(len(sequences))])
    groups["real members"] = members
    groups["real members, length-matched"] = crop_to_lengths(members, lengths, seed)
    vocabulary = loaded.label_vocabulary
    return {
        "label": label,
        "label_name": vocabulary.describe(label) if vocabulary is not None else label,
        "num_members": len(members),
        "guidance": list(guidance),
        "guidance_schedule": guidance_schedule,
        "steps": steps or loaded.config.sampling.steps,
        "table": compare_signatures(groups),
    }


def conditional_section(loaded: LoadedModel, options: EvaluationOptions, out_dir: Path) -> dict[str, Any]:
    """Label control (own vs other vs no labels) and label signatures of guided samples."""
    heldout = heldout_labelled(loaded, options.labelled_data, options.labels_from, options.max_labelled_sequences)
    k = options.samples_per_sequence or loaded.config.eval.samples_per_sequence
    total = sum(len(r.sequence) for r in heldout.records) * 3
    with tqdm(
        total=total, unit="res", unit_scale=True, desc="label control", file=sys.stderr, disable=not options.progress
    ) as bar:
        control = label_control(
            loaded,
            heldout,
            samples_per_sequence=k,
            batch_size=options.batch_size,
            seed=options.seed,
            on_batch=bar.update,
        )
    signatures = []
    for label in options.signature_labels:
        total = options.num_samples * (1 + len(options.guidance))
        bar_settings = {"unit": "seq", "desc": f"sampling {label}", "file": sys.stderr, "disable": not options.progress}
        with tqdm(total=total, **bar_settings) as bar:
            signatures.append(
                signature_comparison(
                    loaded,
                    heldout,
                    label,
                    guidance=options.guidance,
                    guidance_schedule=options.guidance_schedule,
                    num_samples=options.num_samples,
                    steps=options.steps,
                    seed=options.seed,
                    batch_size=options.batch_size,
                    fasta_dir=out_dir / "conditional_samples",
                    on_chunk=bar.update,
                )
            )
    return {"data": heldout.description, "label_control": control.as_dict(), "signatures": signatures}
