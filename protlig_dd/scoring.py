"""Score given protein sequences with a trained model: the SEDD likelihood bound per sequence.

    >>> from protlig_dd.inference import load_model
    >>> from protlig_dd.scoring import score_sequences
    >>> loaded = load_model("runs/quickstart")
    >>> report = score_sequences(loaded, ["MKTAYIAKQRQISFVKSHFSRQ", "MSTNPKPQRKTKRNTNRRPQDVKFPGG"])
    >>> print(report.total.describe())
    >>> for s in report.scores:
    ...     print(s.id, s.nll_per_residue, s.ppl_bound)

What the numbers mean: ``nll`` is a Monte-Carlo estimate of an upper bound on -log p(x | length) (or
-log p(x | labels, length) when scored under labels, for a model trained with labels) in
nats (the ELBO of diffusion.likelihood, without its O(eps) prior and reconstruction terms, as in
SEDD and MDLM), ``nll_per_residue`` divides it by the length and ``ppl_bound = exp(nll_per_residue)``.
Standard errors are those of the Monte-Carlo estimate (t and masking draws), not of the model.

Long sequences: a sequence longer than the model's ``max_length`` is cut into consecutive,
non-overlapping windows of at most ``max_length`` residues (``data.loader.eval_windows``). Each
window is scored as a sequence of its own and the window bounds are summed, so the number is a
bound on -log of prod_w p(window_w | its length): context across a cut is ignored, which makes it
looser than a bound on the whole sequence. ``num_windows`` says how many windows a sequence used;
nothing is truncated or skipped.

Reproducibility: the same inputs, seed, batch size and device give the same numbers.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.labels import LabelSets
from protlig_dd.data.loader import eval_batches
from protlig_dd.data.readers import Record, SourceSpec, iter_records
from protlig_dd.data.sequence_set import InMemoryTokenStore, SequenceSet
from protlig_dd.diffusion.likelihood import BOUND_NOTE, BoundSummary, summarize_bounds, use_antithetic
from protlig_dd.inference import LoadedModel
from protlig_dd.model.score_function import bound_batch

CSV_COLUMNS = (
    "id",
    "length",
    "num_windows",
    "nll",
    "nll_stderr",
    "nll_per_residue",
    "nll_per_residue_stderr",
    "ppl_bound",
)


@dataclass
class SequenceScore:
    """The likelihood bound of one sequence."""

    id: str
    length: int
    num_windows: int  # 1 unless the sequence is longer than the model's max_length
    nll: float  # bound on -log p(x | length), nats, summed over windows
    nll_stderr: float  # Monte-Carlo standard error of ``nll`` (nan with a single draw)
    nll_per_residue: float
    nll_per_residue_stderr: float
    ppl_bound: float  # exp(nll_per_residue)


@dataclass
class ScoreReport:
    """Per-sequence scores and their residue-weighted total."""

    scores: list[SequenceScore]
    total: BoundSummary  # sum of bounds / sum of residues over every sequence
    samples_per_sequence: int
    antithetic: bool
    seed: int
    max_length: int  # window size for long sequences
    num_windowed: int  # sequences longer than max_length (scored in windows)
    note: str = BOUND_NOTE

    def summary_dict(self) -> dict[str, float | int | str | bool]:
        """Plain data for JSON: the dataset total and the settings."""
        return {
            **asdict(self.total),
            "samples_per_sequence": self.samples_per_sequence,
            "antithetic": self.antithetic,
            "seed": self.seed,
            "max_length": self.max_length,
            "num_windowed": self.num_windowed,
            "note": self.note,
            "windows": "sequences longer than max_length are scored in consecutive non-overlapping "
            "windows of at most max_length residues; window bounds are summed (context across a cut "
            "is ignored)",
        }


def read_sequences(
    path: str | Path, sequence_column: str = "sequence", id_column: str = "", fmt: str = "auto"
) -> list[Record]:
    """All records of a FASTA (or CSV/TSV/Parquet/JSONL) file; errors name the file and line."""
    spec = SourceSpec(str(path), format=fmt, sequence_column=sequence_column, id_column=id_column)
    return list(iter_records(spec))


def encode_records(records: Sequence[Record], alphabet: Alphabet) -> list[np.ndarray]:
    """Token ids of each record; a letter outside the alphabet raises naming the record and its line."""
    return [alphabet.encode(r.sequence, name=f"{r.id} ({r.location})") for r in records]


def score_tokens(
    loaded: LoadedModel,
    tokens: Sequence[np.ndarray],
    ids: Sequence[str],
    *,
    samples_per_sequence: int = 8,
    batch_size: int = 32,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    label_sets: Sequence[Sequence[int]] | None = None,
) -> ScoreReport:
    """Score token-id sequences (see the module doc); ``on_batch(num_residues)`` follows progress.
    ``label_sets[k]``: the label ids sequence k is scored under (a model with labels): the bound is
    then on -log p(x | labels, length); [] = "no label". None scores without labels."""
    if len(tokens) != len(ids):
        raise ValueError(f"score_tokens: {len(tokens)} sequences but {len(ids)} ids")
    if not tokens:
        raise ValueError("score_tokens: no sequences to score")
    if samples_per_sequence < 1:
        raise ValueError(f"samples per sequence must be >= 1, got {samples_per_sequence}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    empty = [name for name, seq in zip(ids, tokens, strict=True) if len(seq) == 0]
    if empty:
        raise ValueError(f"score_tokens: empty sequence {empty[0]!r}")
    alphabet, max_length = loaded.alphabet, loaded.max_length
    if label_sets is not None and len(label_sets) != len(tokens):
        raise ValueError(f"score_tokens: {len(label_sets)} label sets for {len(tokens)} sequences")
    store = InMemoryTokenStore.from_arrays(list(tokens), list(ids))
    sequences = SequenceSet.whole(store, None if label_sets is None else LabelSets.from_lists(label_sets))
    generator = torch.Generator(device=loaded.device)
    generator.manual_seed(seed)
    count = len(sequences)
    bound = np.zeros(count, dtype=np.float64)  # (n,) summed over windows
    variance = np.zeros(count, dtype=np.float64)  # (n,) summed over windows (windows are independent)
    windows = np.zeros(count, dtype=np.int64)
    parts = []
    batches = eval_batches(sequences, max_length=max_length, batch_size=batch_size, pad_id=alphabet.pad_id)
    for batch, rows in batches:
        result = bound_batch(
            loaded.network,
            loaded.graph,
            loaded.noise,
            batch,
            samples_per_sequence,
            loaded.precision,
            loaded.device,
            generator=generator,
        )
        parts.append(result)
        # Unpacked batches: one sequence (window) per row, so result row r is rows[r].
        owner = np.array([rows[r][0] for r in result.row.tolist()], dtype=np.int64)
        np.add.at(bound, owner, result.bound.cpu().numpy())
        np.add.at(variance, owner, result.stderr.cpu().numpy() ** 2)
        np.add.at(windows, owner, 1)
        if on_batch is not None:
            on_batch(int(result.num_residues.sum()))
    lengths = sequences.lengths
    stderr = np.sqrt(variance)  # nan when a single draw gives no standard error
    scores = [
        SequenceScore(
            id=str(ids[k]),
            length=int(lengths[k]),
            num_windows=int(windows[k]),
            nll=float(bound[k]),
            nll_stderr=float(stderr[k]),
            nll_per_residue=float(bound[k] / lengths[k]),
            nll_per_residue_stderr=float(stderr[k] / lengths[k]),
            ppl_bound=math.exp(bound[k] / lengths[k]),
        )
        for k in range(count)
    ]
    # The summary counts windows as sequences; the report counts the sequences given.
    total = replace(summarize_bounds(parts), num_sequences=count)
    return ScoreReport(
        scores=scores,
        total=total,
        samples_per_sequence=samples_per_sequence,
        antithetic=use_antithetic(samples_per_sequence),
        seed=seed,
        max_length=max_length,
        num_windowed=int((windows > 1).sum()),
    )


def score_sequences(
    loaded: LoadedModel,
    sequences: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    samples_per_sequence: int = 8,
    batch_size: int = 32,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    labels: Sequence[Sequence[str]] | None = None,
) -> ScoreReport:
    """Score residue strings (ids default to seq1, seq2, ...) under ``labels[k]`` (label names, e.g.
    GO ids; an unknown one is an error naming it) or without labels; see ``score_tokens``."""
    names = list(ids) if ids is not None else [f"seq{i + 1}" for i in range(len(sequences))]
    if len(names) != len(sequences):
        raise ValueError(f"score_sequences: {len(sequences)} sequences but {len(names)} ids")
    tokens = [loaded.alphabet.encode(seq, name=name) for seq, name in zip(sequences, names, strict=True)]
    return score_tokens(
        loaded,
        tokens,
        names,
        samples_per_sequence=samples_per_sequence,
        batch_size=batch_size,
        seed=seed,
        on_batch=on_batch,
        label_sets=None if labels is None else [loaded.label_ids(names) for names in labels],
    )


def write_scores_csv(path: str | Path, report: ScoreReport) -> None:
    """One row per sequence with the columns of ``CSV_COLUMNS`` (written atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for s in report.scores:
            writer.writerow(
                [s.id, s.length, s.num_windows, *(f"{getattr(s, column):.6g}" for column in CSV_COLUMNS[3:])]
            )
    tmp.replace(path)
