"""The training loop: one importable ``train(cfg, options)`` in plain sections.

Steps count optimizer steps. Each optimizer step consumes ``grad_accum`` micro-batches per rank;
the loss of a step is the token-weighted mean score entropy over the whole global batch (every
micro-batch on every rank), so changing the number of processes or the accumulation with the same
global batch gives the same update. Noise and dropout are seeded per global micro-batch index
(``mix_seed(seed, index)``), which makes resume exact and makes a 2-process run draw the same noise
as a 1-process run with the same global batch. The data stream's order does not depend on the
number of processes either, so a checkpoint resumes under another world size (see docs/distributed.md).

Who does what: components.py builds the pieces of a run into one record; the ``Trainer`` here
steps them (``train_step`` = ``accumulate`` + ``apply_update``, the non-finite skip in
nonfinite.py) and runs the loop; checkpoint.py reads and writes checkpoints; periodic.py
validates and samples; stop.py decides when a run stops early (signal, wall-clock budget).

Under torchrun every rank runs this same code; rank 0 alone logs, samples and writes checkpoints.
With FSDP, checkpoints are gathered into full state dicts (every rank takes part), and validation
and sampling run on an unsharded replica of the weights (``components.evaluation_weights``).
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from protlig_dd.config import Config
from protlig_dd.data.batch import Batch
from protlig_dd.data.labels import LabelVocabulary
from protlig_dd.data.loader import TrainBatchStream
from protlig_dd.data.pipeline import residue_counts
from protlig_dd.data.unigram import unigram_perplexity
from protlig_dd.diffusion.loss import score_entropy_loss
from protlig_dd.model.score_function import bind_batch
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training import init_from
from protlig_dd.training.components import build_components, evaluation_weights
from protlig_dd.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    host_sum,
    init_distributed,
    shutdown_distributed,
)
from protlig_dd.training.label_dropout import LabelDropout
from protlig_dd.training.lr_schedule import lr_at
from protlig_dd.training.metrics_log import MetricsLogger
from protlig_dd.training.nonfinite import NonfiniteTracker, apply_if_finite, skips_nonfinite_on_device
from protlig_dd.training.parallel import gather_training_state, load_training_state, local_value
from protlig_dd.training.periodic import sample_during_training, validate
from protlig_dd.training.rng import rng_state, set_rng_state
from protlig_dd.training.run_dir import RunLock, archive_previous_run, has_previous_run
from protlig_dd.training.stop import StopFlag, deadline_after, poll_stop
from protlig_dd.training.train_state import TrainState, is_due, mix_seed

logger = logging.getLogger(__name__)


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


class _LogWindow:
    """Loss and throughput since the last metric row; the loss sum stays on the device until read."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.steps = self.real = self.total = 0
        self.loss.zero_()

    def add(self, loss: torch.Tensor, real: int, total: int) -> None:
        self.loss += loss.detach()
        self.steps += 1
        self.real += real
        self.total += total


class Trainer:
    """The training state and the step of a run, around its built components (``components``)."""

    def __init__(
        self, cfg: Config, options: RunOptions, info: DistInfo, label_vocabulary: LabelVocabulary | None = None
    ) -> None:
        self.options = options
        self.info = info
        self.components = c = build_components(cfg, Path(options.work_dir), info, label_vocabulary)
        self.label_dropout = LabelDropout(cfg.labels.p_uncond, cfg.labels.random_subsets)
        self.state = TrainState()
        self.defers_finite_check = skips_nonfinite_on_device(
            c.optimizer, info.device, c.scaler.is_enabled(), c.parallel.strategy
        )
        # Counters live where the finite flag is read: the device, or the host after its one sync.
        self.nonfinite = NonfiniteTracker(info.device if self.defers_finite_check else torch.device("cpu"))
        self.noise_generator = torch.Generator(device=info.device)
        self.stop_flag = StopFlag()
        self.logger: MetricsLogger | None = None
        self._unigram_ppl: float | None = None  # baseline on the validation residues (fixed per run)
        # What every checkpoint's meta.json holds besides the counters, the data position and metrics.
        self._run_meta = {
            "alphabet": c.alphabet.to_dict(),
            "data_summary": c.splits.summary.to_dict(),
            "world_size": info.world_size,
            "precision": c.precision,
        }

    @property
    def stream(self) -> TrainBatchStream:
        return self.components.stream

    @property
    def grad_accum(self) -> int:
        return self.components.grad_accum

    # ----- checkpoints -------------------------------------------------------------------
    def load(self, saved: ckpt.TrainingCheckpoint) -> None:
        """Restore everything a checkpoint holds (failures raise; nothing is half-loaded silently)."""
        c = self.components
        try:
            # Counters and data position first: a checkpoint of another format fails here, clearly.
            self.state.load_state_dict(saved.meta["train_state"])
            self.nonfinite.resume(self.state)
            c.stream.load_state_dict(saved.meta["data"])
            # Full state dicts: the same files load under a single process, DDP or FSDP.
            load_training_state(c.model, c.optimizer, c.ema, saved.model_state, saved.train_state["optimizer"])
            c.scaler.load_state_dict(saved.train_state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise TrainingError(f"{saved.path}: cannot resume from this checkpoint: {err}") from err
        if c.stream.cursor != self.state.micro_batches:
            # Noise is seeded by the global micro-batch index: both counters must agree.
            raise TrainingError(
                f"{saved.path}: data position ({c.stream.cursor} global batches) does not match "
                f"the train state ({self.state.micro_batches} micro-batches)"
            )
        if self.info.world_size == saved.meta.get("world_size", 1):
            set_rng_state(saved.train_state["rng"])
        logger.info("resumed from %s at step %d", saved.path, self.state.step)

    def save(self, metrics: dict[str, float] | None = None) -> Path | None:
        """Write a checkpoint of the current step (rank 0); every rank must call (FSDP gathers)."""
        self._settle_nonfinite()  # the saved counters must be current
        c, info = self.components, self.info
        if info.is_main or c.parallel.sharded:
            # Full, unsharded state on rank 0's CPU; under FSDP every rank takes part in the
            # gathers (and gets empty dicts). Without sharding the other ranks have nothing to add.
            model_state, optimizer_state = gather_training_state(c.model, c.optimizer, c.ema, keep=info.is_main)
        if not info.is_main:
            barrier(info)
            return None
        path = ckpt.write_training_checkpoint(
            c.work_dir,
            state=self.state,
            model_state=model_state,
            optimizer_state=optimizer_state,
            scaler_state=c.scaler.state_dict(),
            rng=rng_state(),
            data_position=c.stream.state_dict(),
            run_meta=self._run_meta,
            metrics=metrics or {},
            config_yaml=c.config_yaml,
            keep_last=c.cfg.checkpoint.keep_last,
            keep_best=c.cfg.checkpoint.keep_best,
        )
        barrier(info)
        return path

    # ----- one optimizer step -------------------------------------------------------------
    def train_step(self, micro_batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """One optimizer update over ``micro_batches``; returns (mean loss, grad norm, real, total tokens).

        The loss and grad norm stay on the device. Whether the update is applied (finite loss and
        gradient norm) is decided on the device when ``defers_finite_check`` (fused AdamW on CUDA),
        and read on the host only at the logging cadence; otherwise it costs one host sync here.
        """
        c, info = self.components, self.info
        lr = lr_at(self.state.step, c.cfg.optim, c.cfg.training.max_steps)
        for group in c.optimizer.param_groups:
            group["lr"] = lr
        global_tokens = sum(b.num_real_tokens for b in micro_batches)
        if info.enabled:
            global_tokens = int(host_sum([float(global_tokens)], info)[0])  # host-side: no device sync
        loss_sum = self.accumulate(micro_batches, global_tokens)
        c.scaler.unscale_(c.optimizer)
        clip = c.cfg.optim.grad_clip if c.cfg.optim.grad_clip > 0 else float("inf")
        # Under FSDP the norm is a (replicated) DTensor over all shards: take it as a plain tensor.
        grad_norm = local_value(torch.nn.utils.clip_grad_norm_(c.model.parameters(), clip, foreach=True))
        loss_sum = all_reduce_sum(loss_sum, info)
        self.apply_update(torch.isfinite(loss_sum) & torch.isfinite(grad_norm))
        self.state.step += 1
        self.state.micro_batches += len(micro_batches) * info.world_size
        self.state.tokens_seen += global_tokens
        total_tokens = sum(b.tokens.numel() for b in micro_batches) * info.world_size
        if not self.defers_finite_check:
            self._settle_nonfinite()  # counters on the host: no further sync
        return loss_sum / max(global_tokens, 1), grad_norm, global_tokens, total_tokens

    def accumulate(self, micro_batches: list[Batch], global_tokens: int) -> torch.Tensor:
        """Forward and backward of every micro-batch: the gradients become those of (sum of the
        losses over the global batch) / ``global_tokens``. Returns this rank's loss sum (device)."""
        c, info = self.components, self.info
        loss_sum = torch.zeros((), device=info.device)
        for i, batch in enumerate(micro_batches):
            seed = mix_seed(c.cfg.training.seed, self.state.micro_batches + i * info.world_size + info.rank)
            self.noise_generator.manual_seed(seed)
            torch.manual_seed(seed ^ 0x5DEECE66D)  # dropout
            batch = self.label_dropout(batch, seed)
            batch, score = bind_batch(c.parallel.module, batch, c.precision, info.device, non_blocking=True)
            # Gradients are reduced across ranks once per step, in the last micro-batch's backward.
            with c.parallel.gradient_sync(i == len(micro_batches) - 1):
                out = score_entropy_loss(
                    score, c.graph, c.noise, batch, generator=self.noise_generator, time_sampling=c.time_sampling
                )
                # DDP and FSDP average gradients over ranks: scale so the result is sum / global tokens.
                c.scaler.scale(out.total * (info.world_size / global_tokens)).backward()
            loss_sum += out.total.detach()
        return loss_sum

    def apply_update(self, finite: torch.Tensor) -> None:
        """The optimizer step and EMA update where ``finite`` (0-d bool on the device), then clear the
        gradients; skipped steps are counted (nonfinite.apply_if_finite)."""
        c = self.components
        apply_if_finite(finite, c.optimizer, c.scaler, c.ema, self.nonfinite, on_device=self.defers_finite_check)
        c.scaler.update()
        c.optimizer.zero_grad(set_to_none=True)

    def _settle_nonfinite(self) -> None:
        """Bring the non-finite counters to the host; stop the run after too many bad steps in a row."""
        longest = self.nonfinite.settle(self.state, self.state.step)
        limit = self.components.cfg.training.max_consecutive_nonfinite
        if longest >= limit:
            raise TrainingError(
                f"{longest} non-finite losses in a row by step {self.state.step} "
                f"(training.max_consecutive_nonfinite={limit}); "
                "lower optim.lr, check the data, or use training.precision=fp32"
            )

    # ----- periodic work -----------------------------------------------------------------
    def _validate(self) -> dict[str, float]:
        c = self.components
        sequences = c.splits.validation
        if sequences is None or len(sequences) == 0:
            return {}
        with evaluation_weights(c, on_every_rank=True) as model:
            metrics = validate(
                model,
                c.graph,
                c.noise,
                sequences,
                settings=c.cfg.eval,
                max_length=c.cfg.model.max_length,
                pad_id=c.alphabet.pad_id,
                seed=c.cfg.training.seed,
                precision=c.precision,
                info=self.info,
            )
        if self._unigram_ppl is None:
            summary = c.splits.summary
            counts = residue_counts(sequences, c.alphabet.num_residues)
            self._unigram_ppl = unigram_perplexity(summary.residue_frequencies, summary.train_residues, counts)
        metrics["unigram_ppl"] = self._unigram_ppl
        if self.info.is_main:
            logger.info(
                "step %d validation: nll/residue %.4f, perplexity bound %.3f +- %.3f "
                "(baselines: uniform-20 = 20.00, training unigram on these residues = %.2f; bound omits O(eps) terms)",
                self.state.step,
                metrics["val_nll_per_residue"],
                metrics["val_ppl_bound"],
                metrics["val_ppl_bound_stderr"],
                self._unigram_ppl,
            )
        best = self.state.best_val_nll
        if best is None or metrics["val_nll_per_residue"] < best:
            self.state.best_val_nll = metrics["val_nll_per_residue"]
        return metrics

    def _sample(self) -> dict[str, float] | None:
        """Sample with the evaluation weights on rank 0 (None elsewhere); every rank must call."""
        c = self.components
        summary = c.splits.summary
        with evaluation_weights(c, on_every_rank=False) as model:
            if model is None:
                return None
            return sample_during_training(
                model,
                c.graph,
                c.noise,
                c.alphabet,
                settings=c.cfg.sampling,
                step=self.state.step,
                seed=c.cfg.training.seed,
                max_length=c.cfg.model.max_length,
                length_histogram=summary.length_histogram,
                residue_frequencies=summary.residue_frequencies,
                precision=c.precision,
                device=self.info.device,
                out_dir=c.work_dir / "samples",
            )

    def _log(self, window: _LogWindow, grad_norm: torch.Tensor, progress: Any) -> None:
        """One metric row for the steps since the last one (reads the device: logging cadence only)."""
        self._settle_nonfinite()
        elapsed = max(time.perf_counter() - window.start, 1e-9)
        row = {
            "step": self.state.step,
            "loss": float(window.loss.item()) / window.steps,
            "lr": self.components.optimizer.param_groups[0]["lr"],
            "grad_norm": float(grad_norm.item()),
            "tokens_per_s": window.total / elapsed,
            "residues_per_s": window.real / elapsed,
            "tokens_seen": self.state.tokens_seen,
            "epoch": self.components.stream.epoch,
            "nonfinite_total": self.state.total_nonfinite,
        }
        if self.logger is not None:
            self.logger.log(row)
        if progress is not None:
            progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:.0f}")
        window.reset()

    # ----- the loop ----------------------------------------------------------------------
    def _start_logging(self) -> Any:
        """Rank 0: the metrics sink, a startup line and the progress bar (returned; None elsewhere)."""
        if not self.info.is_main:
            return None
        c, cfg = self.components, self.components.cfg
        wandb_mode = self.options.wandb_mode or cfg.logging.wandb_mode
        self.logger = MetricsLogger(c.work_dir, cfg.logging, cfg.to_dict(), wandb_mode)
        logger.info(
            "training %s parameters on %s (%s), %d process(es) (%s), %d micro-batch(es) per step per process",
            f"{c.model.num_parameters():,}",
            self.info.device,
            c.precision,
            self.info.world_size,
            c.parallel.strategy,
            c.grad_accum,
        )
        if not cfg.logging.progress_bar:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=cfg.training.max_steps, initial=self.state.step, desc="train", dynamic_ncols=True)

    def run(self) -> dict[str, float]:
        """Train until max_steps (or the wall-clock budget); returns the last validation metrics."""
        c, cfg = self.components, self.components.cfg
        progress = self._start_logging()
        batches = iter(c.stream)
        # The budget counts from here: data preparation and checkpoint loading are done.
        budget = cfg.training.max_minutes
        deadline = deadline_after(budget)
        session = self.options.stop_after_steps
        session_end = None if session is None else self.state.step + session
        window = _LogWindow(self.info.device)
        last_metrics: dict[str, float] = {}
        self.stop_flag.install()
        try:
            while self.state.step < cfg.training.max_steps:
                c.parallel.module.train()
                loss, grad_norm, real, total = self.train_step([next(batches) for _ in range(c.grad_accum)])
                window.add(loss, real, total)
                step = self.state.step
                stop = poll_stop(self.stop_flag, deadline, self.info)
                if stop.out_of_time and self.info.is_main:
                    logger.info("training.max_minutes=%g used up at step %d: ending the run", budget, step)
                final = step == cfg.training.max_steps or stop.out_of_time
                if step % cfg.training.log_every == 0 or final:
                    self._log(window, grad_norm, progress)
                if progress is not None:
                    progress.update(1)
                validated = is_due(step, cfg.eval.every) or final
                if validated:
                    last_metrics = self._validate()
                    if last_metrics and self.logger is not None:
                        self.logger.log({"step": step, **last_metrics})
                if is_due(step, cfg.sampling.every) or final:
                    sampled = self._sample()  # None on ranks other than 0
                    if sampled is not None and self.logger is not None:
                        self.logger.log({"step": step, **sampled})
                session_done = session_end is not None and step >= session_end
                if is_due(step, cfg.checkpoint.every) or final or stop.signum is not None or session_done:
                    path = self.save(last_metrics if validated else None)
                    if stop.signum is not None:
                        raise TrainingInterrupted(stop.signum, path)
                if session_done or stop.out_of_time:
                    break
        finally:
            self.stop_flag.restore()
            if progress is not None:
                progress.close()
            if self.logger is not None:
                self.logger.close()
        return last_metrics


def _resume_from(cfg: Config, options: RunOptions, info: DistInfo) -> ckpt.TrainingCheckpoint | None:
    """The checkpoint to resume (read), or None for a fresh start; every rank gets the same one.

    Rank 0 chooses: in a run directory whose latest checkpoint cannot be read it falls back to the
    newest one that can (``checkpoint.load_for_resume``); the other ranks read the folder it chose.
    """
    saved = None
    if info.is_main:
        if options.mode == "resume":
            saved = ckpt.load_for_resume(options.resume_path or options.work_dir, cfg)
        elif options.mode == "auto" and ckpt.latest_checkpoint(options.work_dir) is not None:
            saved = ckpt.load_for_resume(options.work_dir, cfg)
    chosen = broadcast_object(str(saved.path) if saved is not None else None, info)
    if saved is None and chosen is not None:
        saved = ckpt.read_training_checkpoint(Path(chosen), cfg)
    return saved


def train(cfg: Config, options: RunOptions) -> dict[str, float]:
    """Run (or resume) training as configured; returns the last validation metrics."""
    info = init_distributed(cfg.distributed, options.device)
    work_dir = Path(options.work_dir)
    lock = RunLock(work_dir) if info.is_main else None
    try:
        if lock is not None:
            lock.acquire()
            ckpt.remove_incomplete(work_dir)
        saved = _resume_from(cfg, options, info)
        # Before the earlier run is moved aside and the data prepared: a model that does not fit fails now.
        initial = init_from.load_initial_model(cfg, info, resuming=saved is not None)
        if info.is_main and saved is None and has_previous_run(work_dir):
            archived = archive_previous_run(work_dir)
            logger.info("moved the earlier run in %s aside to %s", work_dir, archived)
        barrier(info)
        trainer = Trainer(cfg, options, info, init_from.kept_label_vocabulary(saved, initial))
        try:
            if info.is_main:
                (work_dir / "config.yaml").write_text(trainer.components.config_yaml)
            origin = saved.meta.get("initialized_from") if saved is not None else None
            if saved is not None:
                trainer.load(saved)
                del saved  # the loaded copies are in the model and optimizer now
            elif initial is not None:
                origin = init_from.initialize(trainer.components, initial)
                del initial
            if origin is not None:  # every checkpoint of a fine-tuned run says where it started
                trainer._run_meta["initialized_from"] = origin
            return trainer.run()
        finally:
            # Free the DDP/FSDP wrapper while the process group still exists: a gloo group destroyed
            # later, by the wrapper's reducer, joins its worker thread while holding the GIL that
            # thread needs, and the process hangs at exit.
            trainer.components.release_parallel()
            del trainer
            gc.collect()
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed()
