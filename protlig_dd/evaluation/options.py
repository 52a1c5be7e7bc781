"""What an evaluation report covers and how much of it: the options of protlig_dd.evaluate, shared by
the report (evaluation/report.py) and its label section (evaluation/conditional.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from protlig_dd.evaluation import metrics


@dataclass
class EvaluationOptions:
    """What to evaluate and how much of it (the CLI flags of protlig_dd.evaluate)."""

    data: str | None = None  # held-out FASTA/CSV; None = the embedded UniRef50 validation sample
    samples: str | None = None  # FASTA of generated sequences; None = generate ``num_samples`` here
    num_samples: int = 64  # sequences generated when ``samples`` is None
    steps: int | None = None  # reverse steps when generating; None = the run's sampling.steps
    samples_per_sequence: int | None = None  # t draws per held-out sequence; None = the run's eval setting
    max_data_sequences: int = 0  # score only the first N held-out sequences; 0 = all
    shuffle_control: bool = True  # also score the held-out sequences shuffled (doubles the scoring)
    batch_size: int = 32  # sequences per batch (scoring and generation)
    seed: int = 0  # seeds scoring noise, generation and subsamples
    train_data: str | None = None  # novelty reference; None = the run's training source
    max_reference_sequences: int = 100_000  # novelty reference = the first N training sequences
    diversity_max_sequences: int = 64  # subsample for pairwise identity
    novelty_max_data_sequences: int = 32  # held-out sequences whose novelty is the point of comparison
    novelty_candidates: int = metrics.DEFAULT_CANDIDATES  # prefilter hits aligned per sequence
    progress: bool = True  # tqdm bars on stderr
    # Label-conditioned models (evaluation.conditional): held-out labelled data (None = the run's own
    # hash split when it has one), where its labels come from, labels whose signatures to compare.
    labelled_data: str | None = None
    labels_from: str | None = None
    max_labelled_sequences: int = 0  # 0 = all held-out labelled sequences
    signature_labels: list[str] = field(default_factory=list)
    guidance: list[float] = field(default_factory=lambda: [0.0, 2.0])
    guidance_schedule: str = "constant"

    def __post_init__(self) -> None:
        for name in ("num_samples", "batch_size", "max_reference_sequences", "novelty_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.diversity_max_sequences < 2:
            raise ValueError(f"diversity_max_sequences must be >= 2, got {self.diversity_max_sequences}")
        if self.max_data_sequences < 0 or self.novelty_max_data_sequences < 0:
            raise ValueError("max_data_sequences and novelty_max_data_sequences must be >= 0")
        if self.samples_per_sequence is not None and self.samples_per_sequence < 1:
            raise ValueError(f"samples_per_sequence must be >= 1, got {self.samples_per_sequence}")
