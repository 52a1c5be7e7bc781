"""The small mutable state of a run that is not a module or an optimizer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class TrainState:
    """Counters saved in every checkpoint's meta.json (plain data)."""

    step: int = 0  # optimizer steps done
    micro_batches: int = 0  # global micro-batches consumed (seeds noise and dropout per batch)
    tokens_seen: int = 0  # real residues trained on, over all ranks
    consecutive_nonfinite: int = 0  # NaN/inf losses in a row (reset by a finite step)
    total_nonfinite: int = 0  # NaN/inf losses skipped in the whole run
    best_val_nll: float | None = None  # lowest validation nll per residue seen

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(state) - names
        if unknown:
            raise ValueError(f"train state has unknown fields {sorted(unknown)}")
        for name in names:
            if name in state:
                setattr(self, name, state[name])


def is_due(step: int, every: int) -> bool:
    """Whether periodic work with period ``every`` (0 = never) runs after optimizer step ``step``."""
    return every > 0 and step > 0 and step % every == 0


def mix_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``seed`` and integers (splitmix64), stable across runs."""
    value = seed & 0xFFFFFFFFFFFFFFFF
    for part in parts:
        value = (value + 0x9E3779B97F4A7C15 + (part & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 30
        value = (value * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 27
        value = (value * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF
