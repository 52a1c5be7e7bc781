"""Run configuration: nested dataclasses, loaded as defaults -> YAML -> ``--set`` overrides.

Every field carries a one-line doc (the comment beside it) and is read by the code. Unknown
keys and wrong types are errors naming the key and the file; semantic checks live in each
section's ``__post_init__`` and raise ValueError.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from protlig_dd.config_parsing import RENAMED_KEYS as RENAMED_KEYS  # re-exported: callers import from here
from protlig_dd.config_parsing import ConfigError as ConfigError
from protlig_dd.config_parsing import _build, apply_overrides
from protlig_dd.config_parsing import upgrade_renamed_keys as upgrade_renamed_keys
from protlig_dd.data.batching import check_long_sequences
from protlig_dd.diffusion.noise import build_noise

# model.gelu: "tanh" is GELU's tanh approximation, "erf" the exact GELU.
GELU_VARIANTS = ("tanh", "erf")
# data.embedded_train: the training sets shipped in protlig_dd/data/embedded.
EMBEDDED_TRAIN_SETS = ("swissprot50", "uniref50_17taxa")
# data.embedded_validation: the shipped validation sample, or a hash split of the embedded training set.
EMBEDDED_VALIDATION_CHOICES = ("uniref50_996", "hash_split")
# training.time_sampling: how the noise levels of a micro-batch are drawn.
TIME_SAMPLINGS = ("stratified", "independent")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class ModelConfig:
    """Sizes of the SEDD transformer (DDiT)."""

    hidden_size: int = 768  # width of the residual stream
    num_heads: int = 12  # attention heads; hidden_size must divide evenly
    num_blocks: int = 8  # transformer blocks
    cond_dim: int = 256  # width of the noise-level conditioning vector (adaLN input)
    max_length: int = 512  # longest sequence (tokens per row) the model trains on
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * hidden_size
    dropout: float = 0.1  # dropout on attention output and MLP output (training only)
    rotary_base: float = 10000.0  # RoPE theta
    fused_kernels: bool = True  # use fused CUDA kernels (flash-attn rotary) when importable; else plain path
    # MLP activation: "tanh" = GELU's tanh approximation (SEDD/DiT), "erf" = exact GELU. They differ by
    # at most 4.7e-4, below bf16 rounding; erf is 3-5x cheaper on CPUs (torch's vector tanh is slow).
    gelu: str = "tanh"
    # false (absorbing graph only): the network sees no noise level and predicts the clean residue at
    # each MASK position; the score follows analytically (RADD/MDLM). Sampling can then reuse a
    # network output while a row does not change.
    time_conditioning: bool = True
    # Odd width of a zero-initialised, segment-aware depthwise convolution added beside attention in
    # every block (local order for free; see model/local_mixing.py). 0 = none (SEDD's architecture).
    local_mixing_kernel: int = 0

    def __post_init__(self) -> None:
        _require(self.hidden_size > 0 and self.num_heads > 0, "model.hidden_size and num_heads must be > 0")
        _require(
            self.hidden_size % self.num_heads == 0,
            f"model.hidden_size {self.hidden_size} is not divisible by model.num_heads {self.num_heads}",
        )
        _require((self.hidden_size // self.num_heads) % 2 == 0, "model head dim must be even for rotary")
        _require(self.num_blocks > 0 and self.cond_dim > 0, "model.num_blocks and cond_dim must be > 0")
        _require(self.max_length > 0, "model.max_length must be > 0")
        _require(self.mlp_ratio > 0, "model.mlp_ratio must be > 0")
        _require(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        _require(
            self.local_mixing_kernel == 0 or self.local_mixing_kernel % 2 == 1,
            f"model.local_mixing_kernel must be 0 or odd, got {self.local_mixing_kernel}",
        )
        _require(self.gelu in GELU_VARIANTS, f"model.gelu must be one of {GELU_VARIANTS}, got {self.gelu!r}")


@dataclass
class GraphConfig:
    """The forward corruption process."""

    type: str = "absorbing"  # absorbing (to MASK) or uniform (to a random residue)

    def __post_init__(self) -> None:
        _require(self.type in ("absorbing", "uniform"), f"graph.type must be absorbing or uniform, got {self.type!r}")


@dataclass
class NoiseConfig:
    """Noise schedule sigma_bar(t)."""

    type: str = "loglinear"  # loglinear, geometric or cosine
    eps: float = 1e-3  # loglinear: max masking is 1 - eps; also the smallest t sampled in training
    sigma_min: float = 1e-4  # geometric: sigma_bar(0)
    sigma_max: float = 20.0  # geometric: sigma_bar(1)

    def __post_init__(self) -> None:
        # The schedule checks itself (eps range, sigma range, near-full corruption at t = 1).
        build_noise(self)


@dataclass
class DataConfig:
    """Where sequences come from and how they become batches."""

    source: str = ""  # FASTA(.gz)/CSV/TSV/Parquet/JSONL path or HF datasets name; empty = embedded training set
    # which embedded training set an empty source means: swissprot50 (35,809 diverse Swiss-Prot 50%
    # representatives, 12.0M residues) or uniref50_17taxa (the older 5,001-sequence UniRef50 sample)
    embedded_train: str = "swissprot50"
    # validation of an empty source: uniref50_996 (the 996 random UniRef50 sequences shipped) or hash_split
    # (validation_fraction of the embedded training set by id hash, e.g. held-out labelled sequences)
    embedded_validation: str = "uniref50_996"
    format: str = "auto"  # auto, fasta, csv, tsv, parquet, jsonl or hf
    sequence_column: str = "sequence"  # column holding sequences (tabular and HF sources)
    id_column: str = ""  # column holding ids; empty = row number
    hf_split: str = "train"  # split name for HF datasets sources
    streaming: bool = False  # stream HF datasets instead of downloading them whole
    validation_source: str = ""  # explicit validation file; empty = hash split of source (embedded: its own)
    test_source: str = ""  # explicit test file; empty = hash split of source
    validation_fraction: float = 0.01  # fraction of ids hashed into validation (when no validation_source)
    test_fraction: float = 0.0  # fraction of ids hashed into test (when no test_source)
    cache_dir: str = ""  # where prepared caches live; empty = <work_dir>/data_cache
    unknown_residues: str = "error"  # error, map_to_x or drop: what a letter outside the alphabet does
    min_length: int = 1  # shorter sequences are dropped (counted) when preparing
    long_sequences: str = "crop"  # crop (fresh random window each epoch) or drop sequences over max_length
    packing: bool = False  # pack several sequences per row (segment ids keep them apart)
    tokens_per_batch: int = 8192  # token budget of one micro-batch (rows * max_length when unpacked)
    bucket_by_length: bool = True  # unpacked mode: group similar lengths to cut padding
    num_workers: int = 0  # DataLoader worker processes (0 = main process)

    def __post_init__(self) -> None:
        _require(
            self.format in ("auto", "fasta", "csv", "tsv", "parquet", "jsonl", "hf"),
            f"data.format must be auto/fasta/csv/tsv/parquet/jsonl/hf, got {self.format!r}",
        )
        _require(
            self.unknown_residues in ("error", "map_to_x", "drop"),
            f"data.unknown_residues must be error, map_to_x or drop, got {self.unknown_residues!r}",
        )
        check_long_sequences(self.long_sequences, "data.long_sequences")
        _require(0.0 <= self.validation_fraction < 1.0, "data.validation_fraction must be in [0, 1)")
        _require(0.0 <= self.test_fraction < 1.0, "data.test_fraction must be in [0, 1)")
        _require(self.validation_fraction + self.test_fraction < 1.0, "data validation+test fractions must be < 1")
        _require(
            self.embedded_train in EMBEDDED_TRAIN_SETS,
            f"data.embedded_train must be one of {EMBEDDED_TRAIN_SETS}, got {self.embedded_train!r}",
        )
        _require(
            self.embedded_validation in EMBEDDED_VALIDATION_CHOICES,
            f"data.embedded_validation must be one of {EMBEDDED_VALIDATION_CHOICES}, got {self.embedded_validation!r}",
        )
        _require(self.min_length >= 1, "data.min_length must be >= 1")
        _require(self.tokens_per_batch > 0, "data.tokens_per_batch must be > 0")
        _require(self.num_workers >= 0, "data.num_workers must be >= 0")


@dataclass
class LabelsConfig:
    """Function labels per sequence, for label-conditioned training and guided sampling (data/labels.py)."""

    # "" = no labels; "header:KEY" = the FASTA header field KEY=value; "column:NAME" = a column of the
    # source; "embedded" = the GO labels shipped for the embedded Swiss-Prot set; else a label table
    # path keyed by sequence id (accession/ontology/go_terms, id/labels, or UniProt's TSV download).
    source: str = ""
    # GO tables: keep molecular_function, biological_process and/or cellular_component; [] = all
    ontologies: list[str] = field(default_factory=list)
    term_graph: str = ""  # child/parent term table for ancestors ("embedded" = the shipped GO graph); "" = none
    add_ancestors: bool = False  # add every ancestor of each term (needs term_graph)
    min_count: int = 10  # a label enters the vocabulary with at least this many training sequences
    max_labels: int = 1000  # at most this many labels, the most frequent
    p_uncond: float = 0.1  # training: probability that a sequence's labels are dropped to "no label"
    # training: each kept label set is thinned to a random subset (keep rate uniform in (0, 1], at least
    # one label), so that conditioning on one or a few labels at sampling time is in distribution.
    random_subsets: bool = True

    def __post_init__(self) -> None:
        _require(self.min_count >= 1, "labels.min_count must be >= 1")
        _require(self.max_labels >= 1, "labels.max_labels must be >= 1")
        _require(0.0 <= self.p_uncond < 1.0, f"labels.p_uncond must be in [0, 1), got {self.p_uncond}")
        _require(not self.add_ancestors or bool(self.term_graph), "labels.add_ancestors needs labels.term_graph")
        known = ("molecular_function", "biological_process", "cellular_component")
        bad = [o for o in self.ontologies if o not in known]
        _require(not bad, f"labels.ontologies: unknown {bad}; known: {list(known)}")

    @property
    def enabled(self) -> bool:
        return bool(self.source)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay, all counted in optimizer steps."""

    lr: float = 3e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio at the end of the cosine
    warmup_steps: int = 1000  # optimizer steps of linear warmup from 0
    schedule: str = "cosine"  # cosine or constant (after warmup)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.999  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    fused: bool = True  # fused/foreach AdamW kernels when the device supports them

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr must be > 0")
        _require(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio must be in [0, 1]")
        _require(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        _require(
            self.schedule in ("cosine", "constant"), f"optim.schedule must be cosine or constant, got {self.schedule!r}"
        )
        _require(self.grad_clip >= 0, "optim.grad_clip must be >= 0")


@dataclass
class TrainingConfig:
    """The training loop."""

    max_steps: int = 100000  # optimizer steps to train
    global_batch_tokens: int = 0  # tokens per optimizer step over all ranks; 0 = tokens_per_batch * grad_accum * world
    grad_accum_steps: int = 1  # micro-batches per optimizer step (per rank), used when global_batch_tokens is 0
    precision: str = "auto"  # auto, fp32, bf16 or fp16 (fp16: CUDA only, with a grad scaler)
    compile: bool = False  # torch.compile the model where supported
    ema_decay: float = 0.9999  # EMA of weights; 0 disables EMA
    seed: int = 42  # seeds model init, data order and noise
    log_every: int = 10  # optimizer steps between metric rows / progress updates
    max_consecutive_nonfinite: int = 5  # stop after this many NaN/inf losses in a row (CUDA: checked when logging)
    # Wall-clock budget in minutes, from the start of training (data preparation not counted): when
    # reached, the run ends as at max_steps (final validation, samples, checkpoint). 0 = no limit.
    max_minutes: float = 0.0
    # Noise levels of a micro-batch: stratified (row b draws t in the b-th of B equal strata, MDLM's
    # low-discrepancy sampler: lower loss variance) or independent uniform draws.
    time_sampling: str = "stratified"
    # Importance sampling of t toward low mask rates: u = v ** power (v uniform or stratified), each
    # row weighted by du/dv, so the loss stays an unbiased estimate of the same bound. 1 = off.
    time_importance_power: float = 1.0
    # Start a new run from this model's weights (fine-tuning; the entry point's --init-from): a run dir,
    # checkpoint folder, export folder or Hub repo id user/name[@revision]. New optimizer, schedule and
    # step counter; EMA from the loaded weights. Used when a run starts, not when it resumes. "" = random init.
    init_from: str = ""

    def __post_init__(self) -> None:
        _require(self.max_steps > 0, "training.max_steps must be > 0")
        _require(self.grad_accum_steps >= 1, "training.grad_accum_steps must be >= 1")
        _require(self.global_batch_tokens >= 0, "training.global_batch_tokens must be >= 0")
        _require(
            self.precision in ("auto", "fp32", "bf16", "fp16"),
            f"training.precision must be auto, fp32, bf16 or fp16, got {self.precision!r}",
        )
        _require(0.0 <= self.ema_decay < 1.0, "training.ema_decay must be in [0, 1)")
        _require(self.log_every >= 1, "training.log_every must be >= 1")
        _require(self.max_consecutive_nonfinite >= 1, "training.max_consecutive_nonfinite must be >= 1")
        _require(self.max_minutes >= 0, "training.max_minutes must be >= 0 (0 = no limit)")
        _require(
            self.time_sampling in TIME_SAMPLINGS,
            f"training.time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}",
        )
        _require(
            1.0 <= self.time_importance_power <= 8.0,
            f"training.time_importance_power must be in [1, 8], got {self.time_importance_power}",
        )


@dataclass
class EvalConfig:
    """Periodic validation of the likelihood bound."""

    every: int = 1000  # optimizer steps between validations; 0 disables
    num_sequences: int = 256  # validation sequences scored each time (0 = the whole split)
    samples_per_sequence: int = 4  # Monte-Carlo t draws per sequence (antithetic pairs when even and >= 4)
    batch_size: int = 16  # sequences per validation batch
    # Validation and sampling during training both use the EMA weights when EMA is on
    # (training.ema_decay > 0); false: the live weights. Formerly eval.use_ema.
    use_ema_for_eval_and_sampling: bool = True

    def __post_init__(self) -> None:
        _require(self.every >= 0, "eval.every must be >= 0")
        _require(self.num_sequences >= 0, "eval.num_sequences must be >= 0")
        _require(self.samples_per_sequence >= 1, "eval.samples_per_sequence must be >= 1")
        _require(self.batch_size >= 1, "eval.batch_size must be >= 1")


@dataclass
class SamplingConfig:
    """Periodic sampling during training, and defaults of the sampling CLI."""

    every: int = 5000  # optimizer steps between sample dumps; 0 disables
    num_samples: int = 4  # sequences generated each time
    steps: int = 128  # reverse-diffusion steps
    predictor: str = "analytic"  # analytic (Tweedie) or euler
    denoise: bool = True  # final denoising step (no MASK survives)
    length: int = 0  # sample length; 0 = draw from the training length histogram

    def __post_init__(self) -> None:
        _require(self.every >= 0, "sampling.every must be >= 0")
        _require(self.num_samples >= 1, "sampling.num_samples must be >= 1")
        _require(self.steps >= 1, "sampling.steps must be >= 1")
        _require(
            self.predictor in ("analytic", "euler"),
            f"sampling.predictor must be analytic or euler, got {self.predictor!r}",
        )
        _require(self.length >= 0, "sampling.length must be >= 0")


@dataclass
class CheckpointConfig:
    """Checkpoint cadence and retention."""

    every: int = 1000  # optimizer steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # complete checkpoints kept besides the best one
    keep_best: bool = True  # also keep the checkpoint with the lowest validation bound

    def __post_init__(self) -> None:
        _require(self.every >= 1, "checkpoint.every must be >= 1")
        _require(self.keep_last >= 1, "checkpoint.keep_last must be >= 1")


@dataclass
class LoggingConfig:
    """Where metrics go."""

    wandb_mode: str = "auto"  # auto (online with an API key, else offline), online, offline or disabled
    wandb_project: str = "protlig_dd"  # W&B project name
    run_name: str = ""  # W&B run name; empty = work_dir name
    progress_bar: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self) -> None:
        _require(
            self.wandb_mode in ("auto", "online", "offline", "disabled"),
            f"logging.wandb_mode must be auto, online, offline or disabled, got {self.wandb_mode!r}",
        )


@dataclass
class DistributedConfig:
    """Multi-process training under torchrun."""

    strategy: str = "ddp"  # ddp or fsdp (FSDP2 fully_shard)
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU), nccl or gloo
    timeout_minutes: int = 30  # collective timeout before a stuck rank fails the job

    def __post_init__(self) -> None:
        _require(self.strategy in ("ddp", "fsdp"), f"distributed.strategy must be ddp or fsdp, got {self.strategy!r}")
        _require(
            self.backend in ("auto", "nccl", "gloo"),
            f"distributed.backend must be auto/nccl/gloo, got {self.backend!r}",
        )
        _require(self.timeout_minutes >= 1, "distributed.timeout_minutes must be >= 1")


@dataclass
class Config:
    """The whole run configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        _require(
            self.model.time_conditioning or self.graph.type == "absorbing",
            "model.time_conditioning: false needs graph.type absorbing (the score of the uniform graph "
            "depends on the noise level)",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build a validated Config from nested plain data; errors name ``source`` and the key."""
    try:
        return _build(Config, data, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``--set`` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        data = loaded
        source = str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} (+ --set overrides)"
    return config_from_dict(data, source)
