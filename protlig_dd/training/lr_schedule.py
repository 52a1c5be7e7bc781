"""Learning-rate schedule: linear warmup then cosine decay (or constant), in optimizer steps."""

from __future__ import annotations

import math

from protlig_dd.config import OptimConfig


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based: the update that makes step+1).

    Warmup rises linearly to ``cfg.lr`` over ``cfg.warmup_steps`` optimizer steps (never
    micro-batches: SEED_LESSONS item 6); cosine then decays to ``lr * min_lr_ratio`` at ``max_steps``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    decay_steps = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + math.cos(math.pi * progress))
