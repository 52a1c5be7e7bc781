"""Cached vs uncached sampling of a time-agnostic model: network passes per row, time, identical output.

The issue's target: at 1,024 steps for 256 residues the cached sampler makes at most 256 network
passes per row and is at least 3x faster than the uncached one, with the same tokens.

    python scripts/benchmark_sampling_cache.py --checkpoint runs/quickstart --json cache.json
    python scripts/benchmark_sampling_cache.py --config configs/config_quickstart_cpu.yaml  # untrained model

Without ``--checkpoint`` a freshly initialised model of ``--config`` is used (its weights are
randomised so its predictions are not uniform); timings name the CPU. Run it alone: two cores
shared with anything else distort the times.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from protlig_dd.config import load_config
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.generation import generate
from protlig_dd.inference import load_model
from protlig_dd.training.builders import build_diffusion, build_model


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run directory or checkpoint folder of a time-agnostic model")
    source.add_argument("--config", help="config of a fresh model (model.time_conditioning is forced false)")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--num", type=int, default=8, help="sequences (one batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)

    if args.checkpoint:
        loaded = load_model(args.checkpoint, device="cpu")
        model, graph, noise, alphabet = loaded.network, loaded.graph, loaded.noise, loaded.alphabet
    else:
        cfg = load_config(args.config, ["model.time_conditioning=false", f"model.max_length={args.length}"])
        alphabet = Alphabet()
        torch.manual_seed(args.seed)
        model = build_model(cfg, alphabet).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, 0.05)
        graph, noise = build_diffusion(cfg, alphabet)
    if getattr(model, "time_conditioning", True):
        raise SystemExit("benchmark_sampling_cache: the model is time-conditioned; caching needs a time-agnostic one")

    result: dict[str, object] = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "length": args.length,
        "steps": args.steps,
        "num": args.num,
    }
    outputs = {}
    for cache in (True, False):
        start = time.perf_counter()
        out = generate(
            model, graph, noise, alphabet, lengths=[args.length] * args.num, steps=args.steps,
            generator=torch.Generator().manual_seed(args.seed), batch_size=args.num, cache=cache,
        )
        seconds = time.perf_counter() - start
        outputs[cache] = out.tokens
        key = "cached" if cache else "uncached"
        result[key] = {
            "seconds": round(seconds, 3),
            "residues_per_s": round(args.length * args.num / seconds, 1),
            "passes_per_row_mean": out.mean_passes(),
            "passes_per_row_max": int(out.network_passes.max()),
        }
    result["identical_output"] = bool(torch.equal(outputs[True], outputs[False]))
    result["speedup"] = round(result["uncached"]["seconds"] / result["cached"]["seconds"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
