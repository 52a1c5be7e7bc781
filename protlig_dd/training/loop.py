"""The training loop: one importable ``train(cfg, options)`` in plain sections.

Steps count optimizer steps. Each optimizer step consumes ``grad_accum`` micro-batches per rank;
the loss of a step is the token-weighted mean score entropy over the whole global batch (every
micro-batch on every rank), so changing the number of processes or the accumulation with the same
global batch gives the same update. Noise and dropout are seeded per global micro-batch index
(``mix_seed(seed, index)``), which makes resume exact and makes a 2-process run draw the same noise
as a 1-process run with the same global batch. The data stream's order does not depend on the
number of processes either, so a checkpoint resumes under another world size (see docs/distributed.md).

Under torchrun every rank runs this same code; rank 0 alone logs, samples and writes checkpoints.
With FSDP, checkpoints are gathered into full state dicts (every rank takes part), and validation
and sampling run on an unsharded replica of the weights (see ``Trainer._periodic_view``).
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from protlig_dd import __version__
from protlig_dd.config import Config, ConfigError, config_from_dict
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.batch import Batch
from protlig_dd.data.loader import build_train_stream
from protlig_dd.data.pipeline import DataSplits, prepare_splits, residue_counts, resolve_cache_root
from protlig_dd.diffusion.loss import score_entropy_loss
from protlig_dd.model.ema import EMA
from protlig_dd.model.precision import needs_grad_scaler, resolve_precision
from protlig_dd.model.score_function import make_score_fn
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training.builders import build_diffusion, build_model, build_optimizer, build_time_sampling
from protlig_dd.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    host_sum,
    init_distributed,
    shutdown_distributed,
)
from protlig_dd.training.lr_schedule import lr_at
from protlig_dd.training.metrics_log import MetricsLogger
from protlig_dd.training.nonfinite import NonfiniteTracker
from protlig_dd.training.parallel import (
    full_model_state,
    full_optimizer_state,
    full_tensors,
    load_full_model_state,
    load_full_optimizer_state,
    local_value,
    shard_like,
    wrap_model,
)
from protlig_dd.training.periodic import sample_during_training, validate
from protlig_dd.training.rng import rng_state, seed_everything, set_rng_state
from protlig_dd.training.run_dir import RunLock, archive_previous_run, has_previous_run
from protlig_dd.training.train_state import TrainState, is_due, mix_seed

logger = logging.getLogger(__name__)

# Sections that define the network and the diffusion: a checkpoint only resumes under the same ones.
_ARCHITECTURE_SECTIONS = ("model", "graph", "noise")


class TrainingError(RuntimeError):
    """Training cannot go on (too many non-finite losses, a checkpoint that does not fit...)."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved before leaving."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}; checkpoint saved at {checkpoint}")


@dataclass
class RunOptions:
    """How to start: where the run lives, fresh or resumed, which device."""

    work_dir: Path
    mode: str = "auto"  # auto (resume latest if any, else fresh), fresh, or resume
    # With mode=resume: this checkpoint (or run dir); None = the latest in work_dir.
    resume_path: Path | None = None
    device: str = "auto"
    wandb_mode: str | None = None  # overrides cfg.logging.wandb_mode when given
    # Stop (with a checkpoint) after this many steps of this session; for tests.
    stop_after_steps: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "fresh", "resume"):
            raise ValueError(f"run mode must be auto, fresh or resume, got {self.mode!r}")


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it after every optimizer step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum
        # A second signal of the same kind kills at once (the default action).
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        logger.warning("received %s: saving a checkpoint after the current step", signal.Signals(signum).name)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def _resolve_start(options: RunOptions, info: DistInfo) -> Path | None:
    """Rank 0 decides which checkpoint (if any) to resume; every rank gets the same answer."""
    chosen: Path | None = None
    if info.is_main:
        if options.mode == "resume":
            target = options.resume_path if options.resume_path is not None else options.work_dir
            chosen = ckpt.resolve_checkpoint(target)
        elif options.mode == "auto":
            latest = ckpt.latest_checkpoint(options.work_dir)
            chosen = latest.path if latest is not None else None
    result = broadcast_object(str(chosen) if chosen else None, info)
    return Path(result) if result else None


def _check_compatible(cfg: Config, checkpoint_dir: Path) -> None:
    saved = yaml.safe_load((checkpoint_dir / "config.yaml").read_text())
    saved_cfg = config_from_dict(saved, str(checkpoint_dir / "config.yaml"))
    current = cfg.to_dict()
    diffs = []
    for section in _ARCHITECTURE_SECTIONS:
        for key, value in saved_cfg.to_dict()[section].items():
            if current[section][key] != value:
                diffs.append(f"{section}.{key}: checkpoint {value!r} vs config {current[section][key]!r}")
    if diffs:
        raise ConfigError(
            f"{checkpoint_dir}: checkpoint does not match the config ({'; '.join(diffs)}); "
            "use the checkpoint's config or start with --fresh"
        )


def _grad_accum_steps(cfg: Config, world_size: int) -> int:
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


def unigram_baseline_ppl(train_frequencies: np.ndarray, eval_counts: np.ndarray) -> float:
    """Perplexity of the training unigram composition on the evaluated residues (a cross-entropy).

    This is the bound a model that learned only amino-acid composition would reach on that data.
    """
    counts = np.asarray(eval_counts, dtype=np.float64)
    probs = np.asarray(train_frequencies, dtype=np.float64)
    seen = counts > 0
    cross_entropy = -float((counts[seen] * np.log(np.maximum(probs[seen], 1e-12))).sum()) / max(counts.sum(), 1.0)
    return math.exp(cross_entropy)


def skips_nonfinite_on_device(
    optimizer: torch.optim.Optimizer, device: torch.device, uses_scaler: bool, strategy: str
) -> bool:
    """Whether a non-finite step is skipped on the device (no host sync) rather than on the host.

    Only on CUDA, where a host sync drains the GPU's queue (on the CPU it is free, and the device
    path's extra small kernels are not; MPS keeps the host check until its fused kernel's
    ``found_inf`` is verified there), and only with the fused AdamW, which takes ``found_inf``.
    fp16 has the GradScaler's own skip, and FSDP's DTensor parameters keep the host check.
    """
    fused = bool(optimizer.defaults.get("fused"))
    return device.type == "cuda" and fused and not uses_scaler and strategy != "fsdp"


class Trainer:
    """Holds the live objects of a run; ``run()`` executes the loop."""

    def __init__(self, cfg: Config, options: RunOptions, info: DistInfo) -> None:
        self.cfg = cfg
        self.options = options
        self.info = info
        self.work_dir = Path(options.work_dir)
        self.device = info.device
        self.alphabet = Alphabet()
        self.precision = resolve_precision(cfg.training.precision, self.device)
        self.state = TrainState()
        self.stop_flag = _StopFlag()
        self.grad_accum = _grad_accum_steps(cfg, info.world_size)

        self.splits = self._prepare_data()
        self.stream = build_train_stream(
            cfg.data,
            self.splits.train,
            max_length=cfg.model.max_length,
            pad_id=self.alphabet.pad_id,
            seed=cfg.training.seed,
            rank=info.rank,
            world_size=info.world_size,
        )
        seed_everything(cfg.training.seed)
        self.graph, self.noise = build_diffusion(cfg, self.alphabet)
        self.time_sampling = build_time_sampling(cfg)
        self.model = build_model(cfg, self.alphabet).to(self.device)
        uses_scaler = needs_grad_scaler(self.precision, self.device)
        # FSDP replaces the parameters of self.model by shards: wrap before the EMA and optimizer.
        self.parallel = wrap_model(self.model, cfg, info, uses_grad_scaler=uses_scaler)
        self.ema = EMA(self.model, cfg.training.ema_decay) if cfg.training.ema_decay > 0 else None
        self.optimizer = build_optimizer(cfg.optim, self.model, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=uses_scaler)
        self.defers_finite_check = skips_nonfinite_on_device(
            self.optimizer, self.device, uses_scaler, self.parallel.strategy
        )
        # Counters live where the finite flag is read: the device, or the host after its one sync.
        self.nonfinite = NonfiniteTracker(self.device if self.defers_finite_check else torch.device("cpu"))
        self.noise_generator = torch.Generator(device=self.device)
        self._validation_counts: np.ndarray | None = None  # residue counts of the validation split
        self._replica: torch.nn.Module | None = None  # unsharded copy for validation/sampling under FSDP
        self.logger: MetricsLogger | None = None
        self.config_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)

    # ----- setup -------------------------------------------------------------------------
    def _prepare_data(self) -> DataSplits:
        cache_root = resolve_cache_root(self.cfg.data, self.work_dir)
        # Rank 0 builds the caches; the others wait, then open the finished ones.
        if self.info.is_main:
            splits = prepare_splits(self.cfg.data, self.alphabet, cache_root)
        barrier(self.info)
        if not self.info.is_main:
            splits = prepare_splits(self.cfg.data, self.alphabet, cache_root, progress=False)
        if splits.validation is None or len(splits.validation) == 0:
            logger.warning("no validation split: the likelihood bound will not be reported")
        return splits

    def release_parallel(self) -> None:
        """Drop the parallel wrapper (DDP reducer / FSDP state) and the evaluation replica."""
        self.parallel = None
        self._replica = None

    def load(self, checkpoint_dir: Path) -> None:
        """Restore everything a checkpoint holds (failures raise; nothing is half-loaded silently)."""
        _check_compatible(self.cfg, checkpoint_dir)
        model_state = ckpt.load_file(checkpoint_dir / "model.pt")
        train_state = ckpt.load_file(checkpoint_dir / "train_state.pt")
        meta = ckpt.read_meta(checkpoint_dir)
        try:
            # Counters and data position first: a checkpoint of another format fails here, clearly.
            self.state.load_state_dict(meta["train_state"])
            self.nonfinite.resume(self.state)
            self.stream.load_state_dict(meta["data"])
            # Full state dicts: the same files load under a single process, DDP or FSDP.
            load_full_model_state(self.model, model_state["model"])
            if self.ema is not None:
                if "ema" not in model_state:
                    raise CheckpointMismatch("the checkpoint has no EMA weights but training.ema_decay > 0")
                saved_ema = dict(model_state["ema"])
                saved_ema["shadow"] = shard_like(saved_ema["shadow"], self.ema.shadow)
                self.ema.load_state_dict(saved_ema)
            load_full_optimizer_state(self.model, self.optimizer, train_state["optimizer"])
            self.scaler.load_state_dict(train_state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise TrainingError(f"{checkpoint_dir}: cannot resume from this checkpoint: {err}") from err
        if self.stream.cursor != self.state.micro_batches:
            # Noise is seeded by the global micro-batch index: both counters must agree.
            raise TrainingError(
                f"{checkpoint_dir}: data position ({self.stream.cursor} global batches) does not match "
                f"the train state ({self.state.micro_batches} micro-batches)"
            )
        if self.info.world_size == meta.get("world_size", 1):
            set_rng_state(train_state["rng"])
        logger.info("resumed from %s at step %d", checkpoint_dir, self.state.step)

    # ----- checkpoints -------------------------------------------------------------------
    def save(self, metrics: dict[str, float] | None = None) -> Path | None:
        """Write a checkpoint of the current step (rank 0); every rank must call (FSDP gathers)."""
        self._settle_nonfinite()  # the saved counters must be current
        if self.info.is_main or self.parallel.sharded:
            # Full, unsharded state on rank 0's CPU; under FSDP every rank takes part in the
            # gathers (and gets empty dicts). Without sharding the other ranks have nothing to add.
            model_state = {"model": full_model_state(self.model)}
            if self.ema is not None:
                ema_state = self.ema.state_dict()
                ema_state["shadow"] = full_tensors(ema_state["shadow"], keep=self.info.is_main, to_cpu=True)
                model_state["ema"] = ema_state
            optimizer_state = full_optimizer_state(self.model, self.optimizer)
        if not self.info.is_main:
            barrier(self.info)
            return None
        meta = {
            "train_state": self.state.state_dict(),
            "data": self.stream.state_dict(),
            "alphabet": self.alphabet.to_dict(),
            "data_summary": self.splits.summary.to_dict(),
            "metrics": metrics or {},
            "world_size": self.info.world_size,
            "precision": self.precision,
            "protlig_dd_version": __version__,
            "torch_version": torch.__version__,
        }
        train_state = {
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }
        path = ckpt.save_checkpoint(
            self.work_dir, self.state.step, model_state, train_state, meta, self.config_yaml
        )
        ckpt.prune_checkpoints(self.work_dir, self.cfg.checkpoint.keep_last, self.cfg.checkpoint.keep_best)
        logger.info("checkpoint saved: %s", path)
        barrier(self.info)
        return path

    # ----- one optimizer step -------------------------------------------------------------
    def train_step(self, micro_batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """One optimizer update over ``micro_batches``; returns (loss sum, grad norm, real, total tokens).

        The loss sum and grad norm stay on the device. Whether the update is applied (finite loss
        and gradient norm) is decided on the device when ``defers_finite_check`` (fused AdamW on
        CUDA), and read on the host only at the logging cadence; otherwise it costs one host sync here.
        """
        lr = lr_at(self.state.step, self.cfg.optim, self.cfg.training.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        local_tokens = sum(b.num_real_tokens for b in micro_batches)
        global_tokens = local_tokens
        if self.info.enabled:
            global_tokens = int(host_sum([float(local_tokens)], self.info)[0])  # host-side: no device sync
        loss_sum = torch.zeros((), device=self.device)
        train_model = self.parallel.module
        for i, batch in enumerate(micro_batches):
            needs_mask = batch.has_padding_or_packing()  # host-side tensors: no device sync
            index = self.state.micro_batches + i * self.info.world_size + self.info.rank
            seed = mix_seed(self.cfg.training.seed, index)
            self.noise_generator.manual_seed(seed)
            torch.manual_seed(seed ^ 0x5DEECE66D)  # dropout
            batch = batch.to(self.device, non_blocking=True)
            # Gradients are reduced across ranks once per step, in the last micro-batch's backward.
            with self.parallel.gradient_sync(i == len(micro_batches) - 1):
                out = score_entropy_loss(
                    make_score_fn(
                        train_model,
                        batch.segment_ids if needs_mask else None,
                        batch.positions if needs_mask else None,
                        self.precision,
                        self.device,
                    ),
                    self.graph,
                    self.noise,
                    batch,
                    generator=self.noise_generator,
                    time_sampling=self.time_sampling,
                )
                batch_sum = out.total
                # DDP and FSDP average gradients over ranks: scale so the result is sum / global tokens.
                objective = batch_sum * (self.info.world_size / global_tokens)
                self.scaler.scale(objective).backward()
            loss_sum += batch_sum.detach()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        # Under FSDP the norm is a (replicated) DTensor over all shards: take it as a plain tensor.
        grad_norm = local_value(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True))
        if self.info.enabled:
            loss_sum = all_reduce_sum(loss_sum, self.info)
        finite = torch.isfinite(loss_sum) & torch.isfinite(grad_norm)  # 0-d bool on the device
        if self.defers_finite_check:
            self.nonfinite.record(finite)
            # The fused AdamW skips its update (and its step count) where found_inf is 1, and the
            # EMA keeps its average: a skipped step is decided without a host sync.
            self.optimizer.found_inf = (~finite).float()
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
            if self.ema is not None:
                self.ema.update(applied=finite)
        else:
            finite = finite.cpu()  # the host sync of this path
            self.nonfinite.record(finite)
            applied = bool(finite)
            if applied or self.scaler.is_enabled():
                # With fp16 the scaler itself skips steps whose gradients overflowed.
                self.scaler.step(self.optimizer)
            if applied and self.ema is not None:
                self.ema.update()
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.micro_batches += len(micro_batches) * self.info.world_size
        self.state.tokens_seen += global_tokens
        total_tokens = sum(b.tokens.numel() for b in micro_batches) * self.info.world_size
        if not self.defers_finite_check:
            self._settle_nonfinite()  # counters on the host: no further sync
        return loss_sum / max(global_tokens, 1), grad_norm, global_tokens, total_tokens

    def _settle_nonfinite(self) -> None:
        """Bring the non-finite counters to the host; stop the run after too many bad steps in a row."""
        longest = self.nonfinite.settle(self.state, self.state.step)
        limit = self.cfg.training.max_consecutive_nonfinite
        if longest >= limit:
            raise TrainingError(
                f"{longest} non-finite losses in a row by step {self.state.step} "
                f"(training.max_consecutive_nonfinite={limit}); "
                "lower optim.lr, check the data, or use training.precision=fp32"
            )

    # ----- periodic work -----------------------------------------------------------------
    def _periodic_view(self, on_every_rank: bool) -> Trainer | None:
        """The trainer as validation (``on_every_rank``) or rank-0 sampling should see it.

        Without FSDP that is the trainer itself (None on ranks other than 0 for sampling). Under
        FSDP a forward needs every rank, but validation gives ranks different numbers of batches
        and sampling runs on rank 0 alone, so both run on an unsharded replica that holds the
        weights they would use (EMA when eval.use_ema): a shallow copy of the trainer with
        ``model`` = replica and ``ema`` = None. Every rank must call this (it gathers the shards);
        the replica costs one unsharded model per rank that keeps it.
        """
        if not self.parallel.sharded:
            return self if on_every_rank or self.info.is_main else None
        keep = on_every_rank or self.info.is_main
        if self.ema is not None and self.cfg.eval.use_ema:
            weights = {
                **full_tensors(self.ema.shadow, keep=keep, to_cpu=False),
                **full_tensors(self.ema.buffers, keep=keep, to_cpu=False),
            }
        else:
            weights = full_tensors(self.model.state_dict(), keep=keep, to_cpu=False)
        if not keep:
            return None
        if self._replica is None:
            # Built on the meta device: no init work and no draw from the global RNG.
            with torch.device("meta"):
                replica = build_model(self.cfg, self.alphabet)
            self._replica = replica.to_empty(device=self.device)
        self._replica.load_state_dict(weights)
        view = copy.copy(self)
        view.model, view.ema = self._replica, None
        return view

    def _validate(self) -> dict[str, float]:
        if self.splits.validation is None or len(self.splits.validation) == 0:
            return {}
        view = self._periodic_view(on_every_rank=True)
        assert view is not None  # on_every_rank: every rank gets a view
        metrics = validate(view, self.splits.validation)
        if self._validation_counts is None:
            self._validation_counts = residue_counts(self.splits.validation, self.alphabet.num_residues)
        unigram = unigram_baseline_ppl(self.splits.summary.residue_frequencies, self._validation_counts)
        metrics["unigram_ppl"] = unigram
        if self.info.is_main:
            logger.info(
                "step %d validation: nll/residue %.4f, perplexity bound %.3f +- %.3f "
                "(baselines: uniform-20 = 20.00, training unigram on these residues = %.2f; bound omits O(eps) terms)",
                self.state.step,
                metrics["val_nll_per_residue"],
                metrics["val_ppl_bound"],
                metrics["val_ppl_bound_stderr"],
                unigram,
            )
        best = self.state.best_val_nll
        if best is None or metrics["val_nll_per_residue"] < best:
            self.state.best_val_nll = metrics["val_nll_per_residue"]
        return metrics

    def _log(self, row: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log(row)

    def _batches(self) -> Iterator[Batch]:
        return iter(self.stream)

    # ----- the loop ----------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        cfg = self.cfg
        if self.info.is_main:
            self.logger = MetricsLogger(
                self.work_dir, cfg.logging, cfg.to_dict(), self.options.wandb_mode or cfg.logging.wandb_mode
            )
            logger.info(
                "training %s parameters on %s (%s), %d process(es) (%s), "
                "%d micro-batch(es) per step per process",
                f"{self.model.num_parameters():,}",
                self.device,
                self.precision,
                self.info.world_size,
                self.parallel.strategy,
                self.grad_accum,
            )
        progress = None
        if self.info.is_main and cfg.logging.progress_bar:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=cfg.training.max_steps, initial=self.state.step, desc="train", dynamic_ncols=True
            )
        batches = self._batches()
        start_step = self.state.step
        window_start = time.perf_counter()
        window_real = window_total = 0
        window_loss = torch.zeros((), device=self.device)
        window_steps = 0
        last_metrics: dict[str, float] = {}
        self.stop_flag.install()
        try:
            while self.state.step < cfg.training.max_steps:
                self.parallel.module.train()
                micro = [next(batches) for _ in range(self.grad_accum)]
                loss, grad_norm, real, total = self.train_step(micro)
                window_loss += loss.detach()
                window_steps += 1
                window_real += real
                window_total += total
                step = self.state.step
                if step % cfg.training.log_every == 0 or step == cfg.training.max_steps:
                    self._settle_nonfinite()
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    row = {
                        "step": step,
                        "loss": float(window_loss.item()) / window_steps,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm.item()),
                        "tokens_per_s": window_total / elapsed,
                        "residues_per_s": window_real / elapsed,
                        "tokens_seen": self.state.tokens_seen,
                        "epoch": self.stream.epoch,
                        "nonfinite_total": self.state.total_nonfinite,
                    }
                    self._log(row)
                    if progress is not None:
                        progress.set_postfix(
                            loss=f"{row['loss']:.4f}",
                            lr=f"{row['lr']:.2e}",
                            tok_s=f"{row['tokens_per_s']:.0f}",
                        )
                    window_start, window_real, window_total, window_steps = time.perf_counter(), 0, 0, 0
                    window_loss.zero_()
                if progress is not None:
                    progress.update(1)
                final = step == cfg.training.max_steps
                if is_due(step, cfg.eval.every) or final:
                    last_metrics = self._validate()
                    if last_metrics:
                        self._log({"step": step, **last_metrics})
                if is_due(step, cfg.sampling.every) or final:
                    view = self._periodic_view(on_every_rank=False)  # None on ranks other than 0
                    if view is not None:
                        self._log({"step": step, **sample_during_training(view)})
                stop_requested = self._stop_requested()
                session_done = (
                    self.options.stop_after_steps is not None
                    and step - start_step >= self.options.stop_after_steps
                )
                if is_due(step, cfg.checkpoint.every) or final or stop_requested or session_done:
                    path = self.save(last_metrics if (is_due(step, cfg.eval.every) or final) else None)
                    if stop_requested:
                        raise TrainingInterrupted(self.stop_flag.signum or signal.SIGTERM, path)
                if session_done:
                    break
        finally:
            self.stop_flag.restore()
            if progress is not None:
                progress.close()
            if self.logger is not None:
                self.logger.close()
        return last_metrics

    def _stop_requested(self) -> bool:
        flag = 1.0 if self.stop_flag.signum is not None else 0.0
        if self.info.enabled:
            flag = host_sum([flag], self.info)[0]  # host-side: no device sync
        if flag > 0 and self.stop_flag.signum is None:
            self.stop_flag.signum = signal.SIGTERM
        return flag > 0


class CheckpointMismatch(TrainingError):
    """A checkpoint lacks a part the config needs."""


def train(cfg: Config, options: RunOptions) -> dict[str, float]:
    """Run (or resume) training as configured; returns the last validation metrics."""
    info = init_distributed(cfg.distributed, options.device)
    work_dir = Path(options.work_dir)
    lock = RunLock(work_dir) if info.is_main else None
    try:
        if lock is not None:
            lock.acquire()
            ckpt.remove_incomplete(work_dir)
        resume_from = _resolve_start(options, info)
        if info.is_main and resume_from is None and has_previous_run(work_dir):
            archived = archive_previous_run(work_dir)
            logger.info("moved the earlier run in %s aside to %s", work_dir, archived)
        barrier(info)
        trainer = Trainer(cfg, options, info)
        try:
            if info.is_main:
                (work_dir / "config.yaml").write_text(trainer.config_yaml)
            if resume_from is not None:
                trainer.load(resume_from)
            return trainer.run()
        finally:
            # Free the DDP/FSDP wrapper while the process group still exists: a gloo group destroyed
            # later, by the wrapper's reducer, joins its worker thread while holding the GIL that
            # thread needs, and the process hangs at exit.
            trainer.release_parallel()
            del trainer
            gc.collect()
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed()
