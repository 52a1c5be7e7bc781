"""The built pieces of a training run, in one record, and the function that builds them.

As in torchtitan and lingua, building is separate from running: ``build_components`` prepares
the data and builds the model, its data-parallel wrapper, the EMA, the optimizer, the diffusion
and the data stream once from the config; the trainer (loop.py) steps them, checkpoint.py saves
and restores them, periodic.py validates and samples with them. Nothing here trains.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from protlig_dd.config import Config, ConfigError
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.labels import LabelVocabulary
from protlig_dd.data.loader import TrainBatchStream, build_train_stream
from protlig_dd.data.pipeline import DataSplits, prepare_splits, resolve_cache_root
from protlig_dd.diffusion.graphs import Graph
from protlig_dd.diffusion.loss import TimeSampling
from protlig_dd.diffusion.noise import NoiseSchedule
from protlig_dd.model.ema import EMA
from protlig_dd.model.precision import needs_grad_scaler, resolve_precision
from protlig_dd.training.builders import build_diffusion, build_model, build_optimizer, build_time_sampling
from protlig_dd.training.distributed import DistInfo, barrier
from protlig_dd.training.parallel import ParallelModel, full_tensors, wrap_model
from protlig_dd.training.rng import seed_everything

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything a run builds once from its config, before the first step."""

    cfg: Config
    info: DistInfo
    work_dir: Path
    alphabet: Alphabet
    precision: str  # resolved: fp32, bf16 or fp16
    grad_accum: int  # micro-batches per optimizer step per rank
    splits: DataSplits
    stream: TrainBatchStream  # training batches of this rank, resumable
    graph: Graph
    noise: NoiseSchedule
    time_sampling: TimeSampling  # how training draws each row's noise level
    model: torch.nn.Module  # the plain model (under FSDP its parameters are shards)
    parallel: ParallelModel | None  # what forward/backward go through; None once released
    ema: EMA | None  # None when training.ema_decay is 0
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    config_yaml: str  # the resolved config, as written into the run dir and every checkpoint
    # Unsharded copy of the evaluation weights under FSDP (see ``evaluation_weights``).
    replica: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.info.device

    def release_parallel(self) -> None:
        """Drop the parallel wrapper (DDP reducer / FSDP state) and the evaluation replica."""
        self.parallel = None
        self.replica = None


def num_labels(splits: DataSplits) -> int:
    """Size of the label vocabulary of the data (0 when unlabelled): the model's label embedding."""
    labels = splits.summary.labels
    return len(labels["terms"]) if labels else 0


def grad_accum_steps(cfg: Config, world_size: int) -> int:
    """Micro-batches per optimizer step per rank, keeping the global batch fixed when set.

    With ``training.global_batch_tokens`` the global batch (and so the meaning of optim.lr) is the
    same for any number of processes: accumulation adapts. With 0, each rank accumulates
    ``training.grad_accum_steps`` micro-batches and the global batch grows with the world size.
    """
    if cfg.training.global_batch_tokens == 0:
        return cfg.training.grad_accum_steps
    per_micro = cfg.data.tokens_per_batch * world_size
    if cfg.training.global_batch_tokens % per_micro:
        raise ConfigError(
            f"training.global_batch_tokens {cfg.training.global_batch_tokens} is not a multiple of "
            f"data.tokens_per_batch {cfg.data.tokens_per_batch} x {world_size} processes"
        )
    return cfg.training.global_batch_tokens // per_micro


def prepare_data(
    cfg: Config, work_dir: Path, alphabet: Alphabet, info: DistInfo, label_vocabulary: LabelVocabulary | None = None
) -> DataSplits:
    """The prepared splits: rank 0 builds the caches, the others wait, then open the finished ones.
    ``label_vocabulary``: the vocabulary to keep (resume, fine-tuning); None builds it from the data."""
    cache_root = resolve_cache_root(cfg.data, work_dir)
    labels = {"labels_cfg": cfg.labels, "label_vocabulary": label_vocabulary}
    if info.is_main:
        splits = prepare_splits(cfg.data, alphabet, cache_root, **labels)
    barrier(info)
    if not info.is_main:
        splits = prepare_splits(cfg.data, alphabet, cache_root, progress=False, **labels)
    if splits.validation is None or len(splits.validation) == 0:
        logger.warning("no validation split: the likelihood bound will not be reported")
    return splits


def build_components(
    cfg: Config, work_dir: Path, info: DistInfo, label_vocabulary: LabelVocabulary | None = None
) -> Components:
    """Prepare the data and build every piece of the run on ``info.device`` (``label_vocabulary``:
    the one of the checkpoint resumed or the model started from, kept so label ids keep their meaning).

    The order matters for identical numbers: the global RNG is seeded after the data stream and
    before the model's initialisation, and FSDP shards the model's parameters in place, so the
    EMA and the optimizer are built after ``wrap_model``.
    """
    device = info.device
    alphabet = Alphabet()
    precision = resolve_precision(cfg.training.precision, device)
    grad_accum = grad_accum_steps(cfg, info.world_size)
    splits = prepare_data(cfg, work_dir, alphabet, info, label_vocabulary)
    stream = build_train_stream(
        cfg.data,
        splits.train,
        max_length=cfg.model.max_length,
        pad_id=alphabet.pad_id,
        seed=cfg.training.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    seed_everything(cfg.training.seed)
    graph, noise = build_diffusion(cfg, alphabet)
    model = build_model(cfg, alphabet, num_labels(splits)).to(device)
    uses_scaler = needs_grad_scaler(precision, device)
    parallel = wrap_model(model, cfg, info, uses_grad_scaler=uses_scaler)
    ema = EMA(model, cfg.training.ema_decay, warmup=True) if cfg.training.ema_decay > 0 else None
    return Components(
        cfg=cfg,
        info=info,
        work_dir=Path(work_dir),
        alphabet=alphabet,
        precision=precision,
        grad_accum=grad_accum,
        splits=splits,
        stream=stream,
        graph=graph,
        noise=noise,
        time_sampling=build_time_sampling(cfg),
        model=model,
        parallel=parallel,
        ema=ema,
        optimizer=build_optimizer(cfg.optim, model, device),
        scaler=torch.amp.GradScaler(device.type, enabled=uses_scaler),
        config_yaml=yaml.safe_dump(cfg.to_dict(), sort_keys=False),
    )


@contextlib.contextmanager
def evaluation_weights(components: Components, on_every_rank: bool) -> Iterator[torch.nn.Module | None]:
    """The model that validation (``on_every_rank``) or rank-0 sampling runs, in eval mode, holding
    the weights they use: EMA when ``eval.use_ema_for_eval_and_sampling`` and EMA is on, else the
    live ones. Yields None on the ranks that take no part (sampling on ranks other than 0).

    Without FSDP that is the model itself, with the EMA swapped in for the block. Under FSDP a
    forward needs every rank, but validation gives ranks different numbers of batches and sampling
    runs on rank 0 alone, so both run on an unsharded replica; every rank must enter (the shards
    are gathered), and the replica costs one unsharded model per rank that keeps it. The live
    weights and the training mode are back when the block ends.
    """
    c = components
    use_ema = c.ema is not None and c.cfg.eval.use_ema_for_eval_and_sampling
    keep = on_every_rank or c.info.is_main
    sharded = c.parallel is not None and c.parallel.sharded
    if not sharded:
        if not keep:
            yield None
            return
        was_training = c.model.training
        with c.ema.applied_to(c.model) if use_ema else contextlib.nullcontext(c.model) as model:
            model.eval()
            try:
                yield model
            finally:
                c.model.train(was_training)
        return
    if use_ema:
        weights = {
            **full_tensors(c.ema.shadow, keep=keep, to_cpu=False),
            **full_tensors(c.ema.buffers, keep=keep, to_cpu=False),
        }
    else:
        weights = full_tensors(c.model.state_dict(), keep=keep, to_cpu=False)
    if not keep:
        yield None
        return
    if c.replica is None:
        # Built on the meta device: no init work and no draw from the global RNG.
        with torch.device("meta"):
            replica = build_model(c.cfg, c.alphabet, num_labels(c.splits))
        c.replica = replica.to_empty(device=c.device)
    c.replica.load_state_dict(weights)
    yield c.replica.eval()
