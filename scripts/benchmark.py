"""Benchmark training, sampling and scoring throughput of a config on this machine.

    python scripts/benchmark.py --config small                      # configs/config_small_cpu.yaml
    python scripts/benchmark.py --config stable --micro-batch 4 --sample-steps 20
    python scripts/benchmark.py --config path/to/run.yaml --packing both --out bench.json

Everything runs in one process, so ratios (MFU, packing speed-up) compare like with like even on a
busy machine. Phases, in order:

1. matmul peaks: fp32 and bf16 ``A @ B`` at 2048^3, 4096^3 (``--peak-size``) and the model's MLP
   shape; the best of a few repeats of each, maximum over shapes. Measured again after training;
   the MFU uses the higher of the two (the conservative choice when other processes share the CPU).
2. training: the project's real optimizer step (``Trainer.train_step``: score_entropy_loss on
   the embedded 17-taxon UniRef50 sample through the project's TrainBatchStream, forward + backward,
   gradient clipping, fused AdamW, EMA), one micro-batch of ``--micro-batch`` rows per optimizer
   step unless ``--grad-accum`` says otherwise. Packing modes (``--packing``; ``both`` = on + off,
   ``all`` = the four):
     on      sequences packed into full rows of max_length (segment ids keep them apart);
     off     one sequence per row, every row padded to max_length: the "no packing" layout of the
             earlier implementation, the baseline of the packing speed-up;
     trim    one sequence per row, rows padded to the longest row of the batch;
     bucket  one sequence per row, rows grouped by length (the project's unpacked default).
   ``--warmup`` steps (compilation, allocator warm-up) are excluded. Reported: tokens/s (grid
   tokens, padding included), residues/s (real tokens only), model FLOP/s from
   ``flops_per_token`` of the row length, MFU against both peaks, CPU time and page faults.
3. sampling: ``generation.generate`` of ``--sample-count`` sequences of ``--sample-length``
   residues with ``--sample-steps`` analytic steps (plus the final denoising step), in chunks of
   ``--sample-batch`` rows; residues/s = generated residues / wall time. One short warm-up call.
4. scoring: ``likelihood_bound`` over ``eval_batches`` of the embedded validation sample (the first
   ``--score-sequences``), ``eval.samples_per_sequence`` draws each; residues/s = scored residues /
   wall time.

Peak RSS (ru_maxrss) is recorded after every phase. A table goes to stdout, JSON to ``--out``.
Exit codes: 0 done, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protlig_dd.config import Config, ConfigError, load_config  # noqa: E402
from protlig_dd.data.batch import Batch  # noqa: E402
from protlig_dd.data.loader import eval_batches  # noqa: E402
from protlig_dd.generation import generate  # noqa: E402
from protlig_dd.model.score_function import bound_batch  # noqa: E402
from protlig_dd.training.components import Components  # noqa: E402
from protlig_dd.training.distributed import DistInfo, resolve_device  # noqa: E402
from protlig_dd.training.loop import RunOptions, Trainer  # noqa: E402

logger = logging.getLogger("benchmark")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_ALIASES = {
    "small": "configs/config_small_cpu.yaml",
    "stable": "configs/config_uniref50_stable.yaml",
    "optimized": "configs/config_uniref50_optimized.yaml",
    "quickstart": "configs/config_quickstart_cpu.yaml",
}
PACKING_MODES = {
    "on": ("on",),
    "off": ("off",),
    "trim": ("trim",),
    "bucket": ("bucket",),
    "both": ("on", "off"),
    "all": ("on", "off", "trim", "bucket"),
}
# Data settings of each packing mode: (data.packing, data.bucket_by_length, pad rows to max_length).
_PACKING_SETTINGS = {
    "on": (True, True, False),
    "off": (False, False, True),
    "trim": (False, False, False),
    "bucket": (False, True, False),
}
# Below this fraction of the threads kept busy during training, other processes took the CPU.
CONTENDED_UTILISATION = 0.75
# The earlier implementation on this machine (issue 7): training tokens/s at a micro-batch of rows,
# and sampling residues/s (small config, 8 x 256 residues, 100 steps).
EARLIER = {
    "stable": {"tokens_per_s": 386.0, "micro_batch": 4},
    "small": {"tokens_per_s": 4900.0, "micro_batch": 8, "sampling_residues_per_s": 147.0},
}


def config_alias(path: Path) -> str | None:
    """The alias (small, stable, ...) naming the shipped config at ``path``, if any."""
    for name, relative in CONFIG_ALIASES.items():
        if (REPO_ROOT / relative).resolve() == path.resolve():
            return name
    return None


def compare_with_earlier(alias: str | None, result: dict[str, Any]) -> dict[str, Any]:
    """Our numbers over the earlier implementation's, for the small and stable configs."""
    earlier = EARLIER.get(alias or "")
    if earlier is None:
        return {}
    comparison: dict[str, Any] = {"earlier": earlier}
    training = result["training"]
    mode = "on" if "on" in training else next(iter(training))
    comparison["training_speedup"] = training[mode]["tokens_per_s"] / earlier["tokens_per_s"]
    comparison["training_mode"] = mode
    if "sampling_residues_per_s" in earlier and "sampling" in result:
        comparison["sampling_speedup"] = (
            result["sampling"]["residues_per_s"] / earlier["sampling_residues_per_s"]
        )
    return comparison


def resolve_config_path(name_or_path: str) -> Path:
    """A config alias (small, stable, optimized, quickstart) or a YAML path -> an existing absolute path.

    Aliases name files of this repository; other relative paths are taken from the working directory.
    """
    if name_or_path in CONFIG_ALIASES:
        candidate = REPO_ROOT / CONFIG_ALIASES[name_or_path]
    else:
        candidate = Path(name_or_path)
    if not candidate.is_file():
        raise ConfigError(
            f"--config {name_or_path!r}: no such file; use a YAML path or one of {sorted(CONFIG_ALIASES)}"
        )
    return candidate.resolve()


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so wall-clock timings are complete (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# ----- matmul peaks ---------------------------------------------------------------------------
def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Best-of-``repeats`` GFLOP/s of an (m, k) @ (k, n) product in ``dtype`` (one untimed warm-up)."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    torch.mm(a, b)
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n / best / 1e9


def measure_peaks(cfg: Config, device: torch.device, rows: int, size: int, repeats: int) -> dict[str, Any]:
    """fp32 and bf16 matmul GFLOP/s at squares of size/2 and size and at the model's MLP shape.

    The peak of a dtype is its maximum over the shapes.
    """
    tokens = rows * cfg.model.max_length
    shapes = {
        f"{size // 2}^3": (size // 2, size // 2, size // 2),
        f"{size}^3": (size, size, size),
        "mlp": (tokens, cfg.model.hidden_size, cfg.model.mlp_ratio * cfg.model.hidden_size),
    }
    result: dict[str, Any] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        by_shape = {label: matmul_gflops(*shape, dtype, device, repeats) for label, shape in shapes.items()}
        result[name] = {"peak_gflops": max(by_shape.values()), "by_shape": by_shape}
    return result


# ----- training -------------------------------------------------------------------------------
def training_config(cfg: Config, mode: str, rows: int, grad_accum: int, cache_dir: Path) -> Config:
    """``cfg`` with the data layout of packing ``mode`` and ``rows`` rows per micro-batch."""
    packing, bucket, _ = _PACKING_SETTINGS[mode]
    data = replace(
        cfg.data,
        source="",
        embedded_train="uniref50_17taxa",  # the sample earlier benchmark numbers were measured on
        validation_source="",
        test_source="",
        cache_dir=str(cache_dir),
        packing=packing,
        bucket_by_length=bucket,
        tokens_per_batch=rows * cfg.model.max_length,
        num_workers=0,
    )
    training = replace(cfg.training, global_batch_tokens=0, grad_accum_steps=grad_accum)
    return replace(cfg, data=data, training=training)


def pad_to_length(batch: Batch, length: int, pad_id: int) -> Batch:
    """``batch`` with every row padded to ``length`` tokens (PAD, segment 0, position 0)."""
    extra = length - batch.length
    if extra <= 0:
        return batch
    return Batch(
        tokens=F.pad(batch.tokens, (0, extra), value=pad_id),
        segment_ids=F.pad(batch.segment_ids, (0, extra), value=0),
        positions=F.pad(batch.positions, (0, extra), value=0),
        num_real_tokens=batch.num_real_tokens,
    )


def measure_training(
    cfg: Config, device: torch.device, work_dir: Path, warmup: int, steps: int, pad_rows: bool
) -> tuple[dict[str, Any], Components]:
    """Time ``steps`` real optimizer steps after ``warmup`` untimed ones; returns stats and the run's
    built components (model, diffusion, data) for the sampling and scoring phases.

    ``pad_rows`` pads every batch of the stream to max_length (the "off" packing mode).
    """
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    trainer = Trainer(cfg, RunOptions(work_dir=work_dir, device=device.type), info)
    parts = trainer.components
    parts.model.train()
    stream = iter(parts.stream)
    if pad_rows:
        pad_id, length = parts.alphabet.pad_id, cfg.model.max_length
        batches: Iterator[Batch] = (pad_to_length(batch, length, pad_id) for batch in stream)
    else:
        batches = stream
    model = parts.model
    step_seconds: list[float] = []
    cpu_seconds = data_seconds = 0.0
    page_faults = 0
    grid_tokens = real_tokens = 0
    row_counts: list[int] = []
    flops = 0.0
    losses: list[float] = []
    for index in range(warmup + steps):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu_start = time.process_time()
        start = time.perf_counter()
        micro = [next(batches) for _ in range(trainer.grad_accum)]
        fetched = time.perf_counter()
        loss, _, real, total = trainer.train_step(micro)
        synchronize(device)
        elapsed = time.perf_counter() - start
        if index < warmup:
            continue
        losses.append(float(loss))  # after the timing: the loop itself only syncs at log cadence
        step_seconds.append(elapsed)
        cpu_seconds += time.process_time() - cpu_start
        page_faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        data_seconds += fetched - start
        grid_tokens += total
        real_tokens += real
        flops += sum(b.tokens.numel() * model.flops_per_token(b.length) for b in micro)
        row_counts.extend(b.batch_size for b in micro)
    seconds = sum(step_seconds)
    return {
        "precision": parts.precision,
        "compile": cfg.training.compile,
        "rows_per_micro_batch": cfg.data.tokens_per_batch // cfg.model.max_length,
        "mean_row_length": grid_tokens / sum(row_counts),
        "grad_accum": trainer.grad_accum,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "step_seconds_median": statistics.median(step_seconds),
        "step_seconds": step_seconds,
        "data_seconds_fraction": data_seconds / seconds,
        "tokens_per_s": grid_tokens / seconds,
        "residues_per_s": real_tokens / seconds,
        # CPU time of all threads of this process. Utilisation well below the thread count means
        # other jobs took the cores; tokens per CPU-second times the thread count then bounds what
        # the step would reach with the cores to itself (from above: serial parts do not scale).
        "cpu_seconds": cpu_seconds,
        "cpu_utilisation": cpu_seconds / seconds,
        "tokens_per_cpu_s": grid_tokens / cpu_seconds,
        "minor_page_faults_per_step": page_faults / steps,
        "padding_fraction": 1.0 - real_tokens / grid_tokens,
        "model_gflops": flops / seconds / 1e9,
        "final_loss": losses[-1],
    }, parts


# ----- sampling and scoring -------------------------------------------------------------------
def measure_sampling(
    parts: Components, steps: int, length: int, batch: int, count: int, seed: int, compiled: bool
) -> dict[str, Any]:
    """generate() ``count`` sequences of ``length`` residues; residues/s over the whole call.

    ``compiled``: the model goes through torch.compile; the compilation happens in the untimed
    warm-up call and its time is reported separately.
    """
    model = parts.model.eval()
    if compiled:
        model = torch.compile(model)
    generator = torch.Generator(device=parts.device)

    def run(num: int, num_steps: int) -> float:
        generator.manual_seed(seed)
        start = time.perf_counter()
        generate(
            model,
            parts.graph,
            parts.noise,
            parts.alphabet,
            lengths=[length] * num,
            steps=num_steps,
            predictor="analytic",
            denoise=True,
            generator=generator,
            precision=parts.precision,
            batch_size=batch,
        )
        synchronize(parts.device)
        return time.perf_counter() - start

    warmup_seconds = run(min(batch, count), 2)  # warm-up: allocator, kernels, compilation
    seconds = run(count, steps)
    return {
        "compiled": compiled,
        "warmup_seconds": warmup_seconds,
        "steps": steps,
        "length": length,
        "batch": batch,
        "sequences": count,
        "seconds": seconds,
        "residues_per_s": count * length / seconds,
        "model_calls_per_s": (steps + 1) * math.ceil(count / batch) / seconds,
    }


def measure_scoring(parts: Components, num_sequences: int, seed: int) -> dict[str, Any]:
    """likelihood_bound over the first ``num_sequences`` validation sequences; residues/s."""
    cfg = parts.cfg
    validation = parts.splits.validation
    if validation is None or len(validation) == 0:
        return {"skipped": "no validation split"}
    model = parts.model.eval()
    generator = torch.Generator(device=parts.device)
    generator.manual_seed(seed)
    samples = cfg.eval.samples_per_sequence
    residues = 0
    start = time.perf_counter()
    for batch, _ in eval_batches(
        validation,
        max_length=cfg.model.max_length,
        batch_size=cfg.eval.batch_size,
        pad_id=parts.alphabet.pad_id,
        limit=num_sequences,
    ):
        bound_batch(
            model, parts.graph, parts.noise, batch, samples, parts.precision, parts.device, generator
        )
        residues += batch.num_real_tokens
    synchronize(parts.device)
    seconds = time.perf_counter() - start
    return {
        "sequences": min(num_sequences, len(validation)),
        "samples_per_sequence": samples,
        "batch_size": cfg.eval.batch_size,
        "seconds": seconds,
        "residues_per_s": residues / seconds,
    }


# ----- report ---------------------------------------------------------------------------------
def _row(label: str, value: str) -> str:
    return f"  {label:<44} {value}"


def format_report(result: dict[str, Any]) -> str:
    """A plain-text table of the result dict."""
    lines = [f"benchmark of {result['config']} on {result['device']} ({result['threads']} threads)"]
    peaks = result["peaks"]
    lines.append(_row("matmul peak fp32 / bf16 (GFLOP/s)", f"{peaks['fp32']:.0f} / {peaks['bf16']:.0f}"))
    for mode, stats in result["training"].items():
        lines.append(
            f"training, packing {mode} ({stats['rows_per_micro_batch']} rows x "
            f"{stats['mean_row_length']:.0f} mean length, "
            f"{stats['precision']}, compile {stats['compile']}):"
        )
        lines.append(_row("tokens/s (padding included)", f"{stats['tokens_per_s']:,.0f}"))
        lines.append(_row("residues/s (real tokens)", f"{stats['residues_per_s']:,.0f}"))
        lines.append(_row("padding fraction", f"{stats['padding_fraction']:.3f}"))
        lines.append(_row("model GFLOP/s", f"{stats['model_gflops']:.1f}"))
        lines.append(_row("MFU vs bf16 / fp32 peak", f"{stats['mfu_bf16']:.1%} / {stats['mfu_fp32']:.1%}"))
        lines.append(_row("median step (s)", f"{stats['step_seconds_median']:.3f}"))
        lines.append(_row("CPU utilisation (cores busy)", f"{stats['cpu_utilisation']:.2f}"))
        lines.append(_row("minor page faults per step", f"{stats['minor_page_faults_per_step']:,.0f}"))
        if stats["cpu_utilisation"] < CONTENDED_UTILISATION * result["threads"]:
            lines.append(
                "  WARNING: the threads were busy only part of the time: other processes shared the CPU, "
                "these numbers are not this machine's (see docs/performance.md, OMP_WAIT_POLICY)"
            )
    if "packing_speedup" in result:
        lines.append(_row("packing speed-up (residues/s on / off)", f"{result['packing_speedup']:.2f}x"))
    if "sampling" in result:
        s = result["sampling"]
        lines.append(
            f"sampling ({s['sequences']} x {s['length']} residues, {s['steps']} steps, batch {s['batch']}, "
            f"compiled {s['compiled']}):"
        )
        lines.append(_row("residues/s", f"{s['residues_per_s']:,.1f}"))
        lines.append(_row("warm-up call incl. compilation (s)", f"{s['warmup_seconds']:.1f}"))
    if "scoring" in result and "residues_per_s" in result["scoring"]:
        s = result["scoring"]
        lines.append(f"scoring ({s['sequences']} sequences x {s['samples_per_sequence']} draws):")
        lines.append(_row("residues/s", f"{s['residues_per_s']:,.0f}"))
    lines.append(_row("peak RSS (MB)", f"{result['peak_rss_mb']:,.0f}"))
    lines.append(
        _row("load average before / after", f"{result['load_before']:.2f} / {result['load_after']:.2f}")
    )
    versus = result.get("vs_earlier") or {}
    if versus:
        earlier = versus["earlier"]
        label = f"vs earlier implementation (tokens/s, {earlier['micro_batch']} rows)"
        value = f"{versus['training_speedup']:.2f}x of {earlier['tokens_per_s']:,.0f}"
        lines.append(_row(label, f"{value} (packing {versus['training_mode']})"))
        if "sampling_speedup" in versus:
            value = f"{versus['sampling_speedup']:.2f}x of {earlier['sampling_residues_per_s']:,.0f}"
            lines.append(_row("vs earlier implementation (sampling)", f"{value} residues/s"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark training, sampling and scoring throughput")
    parser.add_argument("--config", required=True, help=f"YAML path or one of {sorted(CONFIG_ALIASES)}")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--micro-batch", type=int, help="rows per micro-batch (default: tokens_per_batch / max_length)"
    )
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per packing mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps before timing")
    parser.add_argument("--packing", default="both", choices=sorted(PACKING_MODES))
    parser.add_argument("--sample-steps", type=int, default=100, help="reverse steps; 0 skips sampling")
    parser.add_argument("--sample-length", type=int, default=256)
    parser.add_argument("--sample-batch", type=int, default=8, help="rows generated at once")
    parser.add_argument("--sample-count", type=int, help="sequences generated (default: --sample-batch)")
    parser.add_argument(
        "--sample-compile", action="store_true", help="sample through torch.compile(model) (compiled in the warm-up)"
    )
    parser.add_argument(
        "--score-sequences", type=int, default=64, help="validation sequences scored; 0 skips"
    )
    parser.add_argument(
        "--peak-size", type=int, default=4096, help="largest square matmul of the peak measurement"
    )
    parser.add_argument("--peak-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser


def _check_args(args: argparse.Namespace, cfg: Config) -> None:
    positive = {
        "--steps": args.steps,
        "--grad-accum": args.grad_accum,
        "--sample-batch": args.sample_batch,
        "--peak-repeats": args.peak_repeats,
        "--peak-size": args.peak_size,
    }
    for flag, value in positive.items():
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    for flag, value in {
        "--warmup": args.warmup,
        "--sample-steps": args.sample_steps,
        "--score-sequences": args.score_sequences,
    }.items():
        if value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    for flag, optional in {"--micro-batch": args.micro_batch, "--sample-count": args.sample_count}.items():
        if optional is not None and optional < 1:
            raise ConfigError(f"{flag} must be >= 1, got {optional}")
    if not 1 <= args.sample_length <= cfg.model.max_length:
        raise ConfigError(
            f"--sample-length must be in 1..{cfg.model.max_length} (model.max_length), "
            f"got {args.sample_length}"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every phase and return the result dict (also what goes into the JSON)."""
    config_path = resolve_config_path(args.config)
    cfg = load_config(config_path, args.set)
    _check_args(args, cfg)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = args.micro_batch or max(1, cfg.data.tokens_per_batch // cfg.model.max_length)
    result: dict[str, Any] = {
        "config": str(config_path),
        "overrides": args.set,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "MALLOC_", "KMP_"))},
        "load_before": os.getloadavg()[0],
    }
    peaks_before = measure_peaks(cfg, device, rows, args.peak_size, args.peak_repeats)
    result["rss_after_peaks_mb"] = peak_rss_mb()
    training: dict[str, Any] = {}
    parts: Components | None = None
    with tempfile.TemporaryDirectory(prefix="protlig_bench_") as tmp:
        for mode in PACKING_MODES[args.packing]:
            logger.info("training with packing %s", mode)
            parts = None  # free the previous model, optimizer and EMA before building the next
            mode_cfg = training_config(cfg, mode, rows, args.grad_accum, Path(tmp) / "data_cache")
            pad_rows = _PACKING_SETTINGS[mode][2]
            stats, parts = measure_training(
                mode_cfg, device, Path(tmp) / mode, args.warmup, args.steps, pad_rows
            )
            stats["peak_rss_mb"] = peak_rss_mb()
            training[mode] = stats
        peaks_after = measure_peaks(cfg, device, rows, args.peak_size, args.peak_repeats)
        peaks = {
            name: max(peaks_before[name]["peak_gflops"], peaks_after[name]["peak_gflops"])
            for name in ("fp32", "bf16")
        }
        for stats in training.values():
            stats["mfu_bf16"] = stats["model_gflops"] / peaks["bf16"]
            stats["mfu_fp32"] = stats["model_gflops"] / peaks["fp32"]
        result.update(peaks=peaks, peaks_before=peaks_before, peaks_after=peaks_after, training=training)
        if "on" in training and "off" in training:
            result["packing_speedup"] = training["on"]["residues_per_s"] / training["off"]["residues_per_s"]
        assert parts is not None  # internal: PACKING_MODES entries are never empty
        if args.sample_steps > 0:
            logger.info("sampling")
            count = args.sample_count or args.sample_batch
            result["sampling"] = measure_sampling(
                parts,
                args.sample_steps,
                args.sample_length,
                args.sample_batch,
                count,
                args.seed,
                args.sample_compile,
            )
            result["sampling"]["peak_rss_mb"] = peak_rss_mb()
        if args.score_sequences > 0:
            logger.info("scoring")
            result["scoring"] = measure_scoring(parts, args.score_sequences, args.seed)
    result["peak_rss_mb"] = peak_rss_mb()
    result["load_after"] = os.getloadavg()[0]
    result["vs_earlier"] = compare_with_earlier(config_alias(config_path), result)
    return result


def main(argv: list[str] | None = None, emit: Callable[[str], None] = print) -> int:
    """CLI entry point: run, print the table, write JSON; exit code 0, or 2 on a bad config/argument."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except ValueError as err:  # bad config, arguments or device (ConfigError is a ValueError)
        sys.stderr.write(f"benchmark: {err}\n")
        return 2
    emit(format_report(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
        emit(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
